#!/usr/bin/env bash
# CPU end-to-end benchmark, ours against diffusers in the same run, same machine, same weights
# (sd_mpi make-model --preset sd15: the real SD 1.5 shapes with random weights).
#   GOLDEN_PY=<venv python with diffusers> bench/cpu/run_e2e.sh [SIZE=256] [STEPS=10] [REPS=3]
# Prints a table and writes bench/results/cpu/<date>-e2e.md (+ .json).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${GOLDEN_PY:?set GOLDEN_PY to a python with the pinned diffusers (tools/golden/requirements.txt)}
BUILD=${BUILD:-build}
SIZE=${1:-256} STEPS=${2:-10} REPS=${3:-3}
THREADS=${THREADS:-$(nproc)}
MODEL=${MODEL_DIR:-/tmp/sd_mpi_bench_sd15}
[ -f "$MODEL/model_index.json" ] || "$BUILD/sd_mpi" make-model --preset sd15 --seed 1 "$MODEL"
cmake --build "$BUILD" --target e2e_cpu_bench >/dev/null
ours=$("$BUILD/bench/e2e_cpu_bench" "$MODEL" "$SIZE" "$STEPS" "$REPS" "$THREADS")
theirs=$(OMP_NUM_THREADS=$THREADS "$PY" bench/cpu/e2e_diffusers.py "$MODEL" "$SIZE" "$STEPS" "$REPS" "$THREADS" 2>/dev/null | tail -n 1)
mkdir -p bench/results/cpu
stamp=$(date -u +%Y-%m-%d)
out=bench/results/cpu/$stamp-e2e
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
commit=$(git rev-parse --short=12 HEAD)
python3 - "$ours" "$theirs" "$out" "$cpu" "$commit" <<'PY'
import json, sys
ours, theirs, out, cpu, commit = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = [("text encoder (2×77 tokens)", "text_encoder_s"), ("UNet step (CFG batch 2)", "unet_step_s"),
        ("VAE decode (1 image)", "vae_decode_s"), (f"whole image ({ours['steps']} PNDM steps)", "generation_s"),
        ("model load", "load_s")]
lines = [f"# CPU end-to-end: sd_mpi vs diffusers, SD 1.5 shapes (random weights), {ours['size']}×{ours['size']}",
         "", f"- machine: {cpu}, {ours['threads']} threads; commit {commit}",
         f"- ours: {ours['backend']}; theirs: diffusers on torch {theirs['torch']} (float32, SDPA)",
         f"- median of {ours['reps']} after a warm-up; same model folder for both", "",
         "| stage | sd_mpi (s) | diffusers (s) | speed-up |", "|---|---|---|---|"]
for name, key in rows:
    a, b = ours[key], theirs[key]
    lines.append(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f}× |")
text = "\n".join(lines) + "\n"
open(out + ".md", "w").write(text)
json.dump({"ours": ours, "diffusers": theirs, "cpu": cpu, "commit": commit}, open(out + ".json", "w"), indent=1)
print(text)
PY
