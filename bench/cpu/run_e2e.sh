#!/usr/bin/env bash
# CPU end-to-end benchmark: sd_mpi, diffusers (PyPI torch) and stable-diffusion.cpp in one run,
# same machine, same weights (sd_mpi make-model --preset sd15: the real SD 1.5 shapes with random
# weights; sd.cpp reads them as one LDM single file, bench/cpu/diffusers_to_ldm.py), same size,
# steps and sampler. Euler by default: sd.cpp has no PNDM (SAMPLER=pndm runs the first two only).
# The engines run one after the other, never at once.
#   GOLDEN_PY=<venv python with diffusers> bench/cpu/run_e2e.sh [SIZE=256] [STEPS=10] [REPS=3]
#   env: BUILD (build dir, default build), THREADS (default nproc), SAMPLER (euler),
#        SDCPP=0 (leave out stable-diffusion.cpp; bench/cpu/build_sdcpp.sh builds it on first use),
#        PRESET=sdxl (the SDXL row, see run_e2e_sdxl.sh: ours and diffusers only),
#        MODEL_DIR (default /tmp/sd_mpi_bench_<preset>; an SDXL folder made here is deleted after,
#        unless KEEP_MODEL=1), MACHINE_NOTE (what else ran on the machine, for the report; default:
#        that others were building and training), ROUNDS (default 1: sd_mpi then diffusers, each
#        round; more: paired ratios per round, medians over rounds; sd.cpp runs once, after them)
# Prints a table and writes bench/results/cpu/<date>-e2e[-sdxl].md (+ .json): times, speed-ups,
# each engine's GFLOP/s per component (bench/cpu/count_flops.py) against the measured sgemm rate,
# peak RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${GOLDEN_PY:?set GOLDEN_PY to a python with the pinned diffusers (tools/golden/requirements.txt)}
BUILD=${BUILD:-build}
PRESET=${PRESET:-sd15}
SIZE=${1:-256} STEPS=${2:-10} REPS=${3:-3}
ROUNDS=${ROUNDS:-1}
THREADS=${THREADS:-$(nproc)}
SAMPLER=${SAMPLER:-euler}
MODEL=${MODEL_DIR:-/tmp/sd_mpi_bench_$PRESET}
SDCPP=${SDCPP:-1}
case $PRESET in
  sd15) suffix="" title="sd_mpi vs diffusers vs stable-diffusion.cpp, SD 1.5 shapes" ;;
  sdxl) suffix="-sdxl" title="sd_mpi vs diffusers, SDXL base shapes" SDCPP=0 ;;
  *) echo "run_e2e.sh: PRESET=$PRESET: expected sd15 or sdxl" >&2; exit 2 ;;
esac
notes="\"sampler: $SAMPLER for all engines (stable-diffusion.cpp has no PNDM), guidance 7.5, seed 0\""
[ "$PRESET" = sdxl ] && notes+=', "the empty negative prompt is zeroed (force_zeros_for_empty_prompt) in both engines",
  "SDXL UNet step and VAE decode: phase timings of the one generation (not standalone), in both engines",
  "float32 compute in both; weights F16 on disk, converted at load"'
[ "$SAMPLER" = pndm ] && SDCPP=0
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=$THREADS
load_before=$(uptime | sed 's/.*load average: //')
cmake --build "$BUILD" --target sd_mpi e2e_cpu_bench cpu_ops_bench >/dev/null
if [ ! -f "$MODEL/model_index.json" ]; then
  "$BUILD/sd_mpi" make-model --preset "$PRESET" --seed 1 "$MODEL"
  [ "$PRESET" = sdxl ] && [ "${KEEP_MODEL:-0}" != 1 ] && trap 'rm -rf "$MODEL"' EXIT
fi
if [ "$SDCPP" = 1 ]; then
  sdcli=$(PIP="$(dirname "$PY")/pip" bench/cpu/build_sdcpp.sh)
  ckpt=$MODEL.ldm.safetensors
  [ -f "$ckpt" ] || "$PY" bench/cpu/diffusers_to_ldm.py "$MODEL" "$ckpt" >&2
fi
# The machine's sgemm rate now (our GEMM path, 2048³ on every thread, ~2 s): also the speed probe
# taken before each engine's run in every round, which shows how much the machine drifted.
sgemm_now() {
  "$BUILD/bench/cpu_ops_bench" --threads "$THREADS" --reps 3 --filter '(none)' |
    sed -n 's/^sgemm rate: .*, \([0-9.]*\) GFLOP\/s on .*/\1/p'
}
sgemm=$(sgemm_now)
flops=$("$PY" bench/cpu/count_flops.py "$MODEL" "$SIZE" 2>/dev/null | tail -n 1)
# ROUNDS > 1: ours and diffusers back to back, ROUNDS times (a VM whose speed drifts by tens of
# percent over minutes then still gives paired ratios), ours first in odd rounds and diffusers
# first in even ones, so a drift within a round favours neither; each engine's run is preceded by
# a speed probe (sgemm_now, as machine_sgemm_gflops in its JSON). The report takes each time's
# median over the rounds and lists every round's ratios and probes.
run_ours() {
  local probe
  probe=$(sgemm_now)
  ours=$("$BUILD/bench/e2e_cpu_bench" "$MODEL" "$SIZE" "$STEPS" "$REPS" "$THREADS" "$SAMPLER")
  [ -n "$probe" ] && ours="${ours%\}},\"machine_sgemm_gflops\":$probe}"
}
run_theirs() {
  local probe
  probe=$(sgemm_now)
  theirs=$("$PY" bench/cpu/e2e_diffusers.py "$MODEL" "$SIZE" "$STEPS" "$REPS" "$THREADS" "$SAMPLER" 2>/dev/null | tail -n 1)
  [ -n "$probe" ] && theirs="${theirs%\}},\"machine_sgemm_gflops\":$probe}"
}
rounds=""
for ((round = 1; round <= ROUNDS; round++)); do
  [ "$ROUNDS" -gt 1 ] && echo "run_e2e: round $round of $ROUNDS" >&2
  if ((round % 2 == 1)); then
    run_ours
    run_theirs
  else
    run_theirs
    run_ours
  fi
  rounds+="${rounds:+,}[$ours,$theirs]"
done
engines="$ours,$theirs"  # the last round's; the report replaces the times by the rounds' medians
if [ "$SDCPP" = 1 ]; then
  engines+=,$(python3 bench/cpu/e2e_sdcpp.py "$sdcli" "$ckpt" "$SIZE" "$STEPS" "$REPS" "$THREADS" "$SAMPLER")
fi
load_after=$(uptime | sed 's/.*load average: //')
commit=$(git rev-parse --short=12 HEAD)  # the build is of the working tree: say when it differs
git diff --quiet HEAD -- src include kernels CMakeLists.txt || commit+=" + uncommitted changes in src/include"
mkdir -p bench/results/cpu
machine_note=""
[ -n "${MACHINE_NOTE:-}" ] && machine_note=", \"machine_note\": \"$MACHINE_NOTE\""
echo "[$engines]" > "${TMPDIR:-/tmp}/run_e2e_engines.json"  # the raw measurements, should the report fail
python3 bench/cpu/e2e_report.py <<JSON
{"out": "bench/results/cpu/$(date -u +%Y-%m-%d)-e2e$suffix",
 "title": "CPU end-to-end: $title (random weights), ${SIZE}×${SIZE}",
 "engines": [$engines], "rounds": [$rounds], "flops": $flops, "sgemm_gflops": $sgemm,
 "cpu": "$(lscpu | sed -n 's/^Model name: *//p' | head -1)", "commit": "$commit",
 "load_before": "$load_before", "load_after": "$load_after", "notes": [$notes]$machine_note}
JSON
