#!/usr/bin/env bash
# Cluster-layer benchmark on this machine with the built-in tiny model (CPU backend):
#  1. throughput of `mpirun -np 2` against `-np 1` on the same job (the images are identical);
#  2. the per-image cost of the gather-and-write path on rank 0 (bench/cluster/gather_bench.cpp).
#   bench/cluster/run_cluster_bench.sh [BUILD=build]   → bench/results/cluster/<date>.md
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%s\n' "a photo of a cat" "an owl at night" "a red bicycle" "a bowl of ramen" >"$tmp/p.txt"
job=(generate --model tiny --prompts "$tmp/p.txt" -n 12 --steps 20 --width 128 --height 128 --progress none -q)
cores=$(nproc)
run() {  # label, mpirun args..., → seconds
  local t0 t1; t0=$(date +%s.%N)
  mpirun --bind-to none "$@" "$BUILD/sd_mpi" "${job[@]}" --archive "$tmp/a.h5" --overwrite >/dev/null 2>&1
  t1=$(date +%s.%N); awk "BEGIN{print $t1 - $t0}"
}
n=$((4 * 12))
s1=$(run -np 1 -x OMP_NUM_THREADS=$cores)
s2=$(run -np 2 -x OMP_NUM_THREADS=$((cores / 2 > 0 ? cores / 2 : 1)))
s2t=$(run -np 2 -x OMP_NUM_THREADS=$((cores / 2 > 0 ? cores / 2 : 1)) --mca btl self,vader)
gather=$(mpirun -np 2 "$BUILD/bench/gather_bench" 200 512 "$tmp/g.h5")
mkdir -p bench/results/cluster
out=bench/results/cluster/$(date -u +%Y-%m-%d).md
{
  echo "# Cluster layer on $(lscpu | sed -n 's/^Model name: *//p' | head -1), $cores cores, commit $(git rev-parse --short=12 HEAD)"
  echo
  echo "Job: the built-in tiny model, $n images of 128×128, 20 PNDM steps, CFG 7.5, archive on rank 0."
  echo
  echo "| run | seconds | images/s | vs -np 1 |"
  echo "|---|---|---|---|"
  printf '| -np 1, %d threads | %.2f | %.2f | 1.00× |\n' "$cores" "$s1" "$(awk "BEGIN{print $n / $s1}")"
  printf '| -np 2, %d thread(s) each | %.2f | %.2f | %.2f× |\n' "$((cores / 2))" "$s2" "$(awk "BEGIN{print $n / $s2}")" "$(awk "BEGIN{print $s1 / $s2}")"
  printf '| -np 2, shared-memory transport only | %.2f | %.2f | %.2f× |\n' "$s2t" "$(awk "BEGIN{print $n / $s2t}")" "$(awk "BEGIN{print $s1 / $s2t}")"
  echo
  echo "Gather and write on rank 0 (bench/cluster/gather_bench, 200 images of 512×512, 2 ranks, no generation cost):"
  echo
  echo '```'
  echo "$gather"
  echo '```'
} | tee "$out"
