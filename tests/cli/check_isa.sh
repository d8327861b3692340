#!/usr/bin/env bash
# The CPU backend's instruction set never changes an image: the same job run with SDMPI_CPU_ISA
# capped to avx512, avx2 and portable (each one this CPU has) gives PNGs with the same pixels, on
# our own kernels alone (SDMPI_CPU_GEMM=builtin: GEMM micro-kernels 12x32/24x16, 6x16, 4x8; the
# N <= 4 dot products; the vector loops of cpu_simd.h), with the default convolution rule and with
# Winograd F(4,3) forced on every 3x3 layer. Each run's device line must name the kernel it took.
# The tiny model at 128x128 goes through every path (8x8..32x32 maps, attention, the VAE).
#   check_isa.sh path/to/sd_mpi
set -euo pipefail
SD=${1:?usage: check_isa.sh SD_MPI}
command -v python3 >/dev/null || { echo "no python3 to read PNG pixels: skipped"; exit 77; }
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
isas=(portable)
[[ " $flags " == *" avx2 "* && " $flags " == *" fma "* ]] && isas+=(avx2)
[[ " $flags " == *" avx512f "* ]] && isas+=(avx512)
if [ ${#isas[@]} -lt 2 ]; then echo "this CPU has neither AVX2 nor AVX-512: one instruction set, nothing to compare: skipped"; exit 77; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# shellcheck source=png_pixels.sh
. "$(dirname "$0")/png_pixels.sh"
declare -A kernel=([avx512]="AVX-512 12x32" [avx2]="AVX2 6x16" [portable]="portable 4x8")
for conv in auto winograd; do
  first=""
  for isa in "${isas[@]}"; do
    out=$tmp/$conv-$isa
    SDMPI_CPU_ISA=$isa SDMPI_CPU_GEMM=builtin SDMPI_CPU_CONV=$conv OMP_NUM_THREADS=2 \
      "$SD" generate --model tiny --prompt "a red fox" --width 128 --height 128 --steps 3 --seed 11 \
      --batch-size 2 --images-per-prompt 2 --out-dir "$out" 2>"$out.log" || { cat "$out.log" >&2; fail "$isa ($conv) run"; }
    grep -q "built-in GEMM (${kernel[$isa]}" "$out.log" || { head -3 "$out.log" >&2; fail "$isa: device line without ${kernel[$isa]}"; }
    h="$(png_pixels "$out/000000.png") $(png_pixels "$out/000001.png")"
    if [ -z "$first" ]; then first=$h; ref=$isa
    elif [ "$h" != "$first" ]; then fail "SDMPI_CPU_ISA=$isa gives other pixels than $ref (SDMPI_CPU_CONV=$conv)"; fi
    echo "ok: $conv, $isa: ${h:0:16}..."
  done
done
echo "pixels equal across ${isas[*]}"
