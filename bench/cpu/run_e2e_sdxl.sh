#!/usr/bin/env bash
# SDXL row of the CPU end-to-end benchmark (issue 12): sd_mpi against diffusers'
# StableDiffusionXLPipeline in the same run, same weights (sd_mpi make-model --preset sdxl: SDXL
# base 1.0's shapes with random weights, F16 files, 6.5 GB), 512² and a few Euler steps: each text
# encoder standalone, UNet step and VAE decode from one generation, model load, peak RSS of each
# process. The engines run one after the other, never at once: float32 SDXL is ~14 GB of weights
# per process. stable-diffusion.cpp is left out here (run_e2e.sh has it for SD 1.5).
#   GOLDEN_PY=<venv python with diffusers> bench/cpu/run_e2e_sdxl.sh [SIZE=512] [STEPS=4] [REPS=2]
#   env: BUILD (default build), THREADS (default nproc), MODEL_DIR (default /tmp/sd_mpi_bench_sdxl,
#        made if missing and then deleted, unless KEEP_MODEL=1)
# Writes bench/results/cpu/<date>-e2e-sdxl.md (+ .json).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${GOLDEN_PY:?set GOLDEN_PY to a python with the pinned diffusers (tools/golden/requirements.txt)}
BUILD=${BUILD:-build}
SIZE=${1:-512} STEPS=${2:-4} REPS=${3:-2}
THREADS=${THREADS:-$(nproc)}
MODEL=${MODEL_DIR:-/tmp/sd_mpi_bench_sdxl}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$THREADS
load_before=$(uptime | sed 's/.*load average: //')
cmake --build "$BUILD" --target sd_mpi e2e_cpu_bench cpu_ops_bench >/dev/null
if [ ! -f "$MODEL/model_index.json" ]; then
  "$BUILD/sd_mpi" make-model --preset sdxl --seed 1 "$MODEL"
  [ "${KEEP_MODEL:-0}" = 1 ] || trap 'rm -rf "$MODEL"' EXIT
fi
sgemm=$("$BUILD/bench/cpu_ops_bench" --threads "$THREADS" --reps 3 --filter '(none)' |
  sed -n 's/^sgemm rate: .*, \([0-9.]*\) GFLOP\/s on .*/\1/p')
flops=$("$PY" bench/cpu/count_flops.py "$MODEL" "$SIZE" 2>/dev/null | tail -n 1)
engines=$("$BUILD/bench/e2e_cpu_bench" "$MODEL" "$SIZE" "$STEPS" "$REPS" "$THREADS" euler)
engines+=,$("$PY" bench/cpu/e2e_diffusers.py "$MODEL" "$SIZE" "$STEPS" "$REPS" "$THREADS" euler 2>/dev/null | tail -n 1)
load_after=$(uptime | sed 's/.*load average: //')
mkdir -p bench/results/cpu
python3 bench/cpu/e2e_report.py <<JSON
{"out": "bench/results/cpu/$(date -u +%Y-%m-%d)-e2e-sdxl",
 "title": "CPU end-to-end: sd_mpi vs diffusers, SDXL base shapes (random weights), ${SIZE}×${SIZE}",
 "engines": [$engines], "flops": $flops, "sgemm_gflops": $sgemm,
 "cpu": "$(lscpu | sed -n 's/^Model name: *//p' | head -1)", "commit": "$(git rev-parse --short=12 HEAD)",
 "load_before": "$load_before", "load_after": "$load_after",
 "notes": ["sampler: euler, guidance 7.5, seed 0; the empty negative prompt is zeroed (force_zeros_for_empty_prompt) in both",
           "SDXL UNet step and VAE decode: phase timings of the one generation (not standalone), in both engines",
           "float32 compute in both; weights F16 on disk, converted at load"]}
JSON
