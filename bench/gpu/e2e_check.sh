#!/usr/bin/env bash
# End-to-end part of bench/gpu/window.sh: our txt2img pipeline (bench/gpu/e2e_bench) against
# diffusers (bench/gpu/e2e_diffusers.py) on the same GPU, the same SD 1.5-sized random weights
# (make-model --preset sd15), 512x512, CFG 7.5, batch 1 and batch 8, fp16; prints ours vs theirs.
#
#   bench/gpu/e2e_check.sh BUILD_DIR OUT_DIR             everything (prepares first if needed)
#   bench/gpu/e2e_check.sh --prepare BUILD_DIR OUT_DIR   the CPU-only part: install the carried
#       wheels (.whl/, tools/prepare_gpu_wheels.sh) and write the model folder. window.sh starts
#       this in the background right after its build, so it overlaps the GPU tests, and keeps
#       120 s of its budget for the run itself.
#
# BUILD_DIR must hold bench/e2e_bench (a CUDA build). Environment (defaults):
#   E2E_BUDGET      seconds for the whole run (window.sh passes SUBCHECK_BUDGET; else 120): each side
#                   gets about half; a side whose warm-up says --steps would not fit measures fewer
#                   steps (at least 5) and projects to 50 by its time per UNet call (said in its line)
#   E2E_STEPS (50), E2E_BATCHES ("1 8"), E2E_SIZE (512), E2E_PRECISION (fp16), E2E_GUIDANCE (7.5)
#   E2E_MODEL_DIR (/tmp/sdmpi-e2e-sd15), E2E_PRESET (sd15; tiny for a smoke test), E2E_DEVICE (cuda;
#   cpu runs diffusers' side on the CPU, a smoke test), E2E_SITE (/tmp/sdmpi-e2e-site), PYTHON (python3)
# Writes to OUT_DIR: prepare.log, pip.log, python_versions.txt, make_model.json/.log,
#   e2e_ours.jsonl/.log, e2e_diffusers.jsonl/.log, images (*.rgb), e2e_results.json (always, updated
#   after each stage; window.sh puts it into its results file) and e2e_compare.txt. Prints the
#   comparison table last. Exit status 0 when both sides produced every batch size.
set -u

prepare_only=0
if [[ ${1:-} == --prepare ]]; then
  prepare_only=1
  shift
fi
if (($# != 2)); then
  echo "usage: $0 [--prepare] BUILD_DIR OUT_DIR" >&2
  exit 2
fi
build=$(realpath -m "$1")
out=$(realpath -m "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
budget=${E2E_BUDGET:-${SUBCHECK_BUDGET:-120}}
steps=${E2E_STEPS:-50}
read -r -a batches <<<"${E2E_BATCHES:-1 8}"
size=${E2E_SIZE:-512}
precision=${E2E_PRECISION:-fp16}
guidance=${E2E_GUIDANCE:-7.5}
preset=${E2E_PRESET:-sd15}
device=${E2E_DEVICE:-cuda}
model=${E2E_MODEL_DIR:-/tmp/sdmpi-e2e-$preset}
site=${E2E_SITE:-/tmp/sdmpi-e2e-site}
bench=$build/bench/e2e_bench
mkdir -p "$out" || exit 1
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
say() { echo "e2e [$(elapsed)s]: $*" >&2; }

# ---- prepare: wheels and the model (CPU and disk only) --------------------------------------------------
prepare() {
  echo $$ >"$out/prepare.pid"
  rm -f "$out/prepare.status"
  local status=ok
  if compgen -G "$root/.whl/*.whl" >/dev/null; then
    rm -rf "$site"
    if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$root"/.whl/*.whl >"$out/pip.log" 2>&1; then
      echo "wheels: installed $(ls "$root"/.whl | tr '\n' ' ')into $site"
    else
      echo "wheels: pip install failed (see pip.log); diffusers comes from the machine if it has one"
      rm -rf "$site"
    fi
  else
    echo "wheels: no .whl/ (tools/prepare_gpu_wheels.sh); diffusers comes from the machine if it has one"
  fi
  PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} "$python" -c \
    "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" \
    >"$out/python_versions.txt" 2>&1 || echo "python: diffusers does not import (see python_versions.txt)"
  cat "$out/python_versions.txt" | tail -n 1
  # Markers beside the folder: $model.preset once written, $model.making while being written. A
  # folder without them is not ours: used as it is if complete, never deleted.
  if [[ -f $model/model_index.json && $(cat "$model.preset" 2>/dev/null) == "$preset" ]]; then
    echo "model: reusing $model ($preset)"
  elif [[ -f $model/model_index.json && ! -e $model.preset && ! -e $model.making ]]; then
    echo "model: using $model as it is (not written by this script)"
  elif [[ -e $model && ! -e $model.preset && ! -e $model.making && -n $(ls -A "$model" 2>/dev/null) ]]; then
    echo "model: $model exists, is incomplete and was not written by this script: set E2E_MODEL_DIR"
    status=failed
  elif [[ ! -x $bench ]]; then
    echo "model: $bench is missing (build the e2e_bench target)"
    status=failed
  else
    rm -rf "$model"
    rm -f "$model.preset"
    touch "$model.making"
    # Half the cores: the GPU tests' CPU references run meanwhile.
    if OMP_NUM_THREADS=$(( $(nproc) > 1 ? $(nproc) / 2 : 1 )) timeout 400 "$bench" --make-model "$model" \
        --preset "$preset" >"$out/make_model.json" 2>"$out/make_model.log"; then
      echo "$preset" >"$model.preset"
      rm -f "$model.making"
      echo "model: $(cat "$out/make_model.json")"
    else
      echo "model: make-model failed (see make_model.log)"
      tail -n 3 "$out/make_model.log"
      rm -f "$out/make_model.json"
      status=failed
    fi
  fi
  echo "status=$status" >"$out/prepare.status"
  [[ $status == ok ]]
}

if ((prepare_only)); then
  prepare >"$out/prepare.log" 2>&1
  exit $?
fi

# ---- the run ---------------------------------------------------------------------------------------------
# Each stage runs under its own timeout, in the background so a TERM from window.sh's timeout ends it
# (timeout leads its own process group) instead of leaving it on the GPU.
stage_pid=
trap '[[ -n $stage_pid ]] && kill -TERM -- -"$stage_pid" 2>/dev/null; exit 124' TERM INT
run_stage() {  # seconds, stdout file, stderr file, command...
  local seconds=$1 o=$2 e=$3
  shift 3
  timeout "$seconds" "$@" >"$o" 2>"$e" &
  stage_pid=$!
  wait "$stage_pid"
  local rc=$?
  stage_pid=
  return $rc
}
left() { echo $((budget - $(elapsed))); }
results() {  # the comparison so far, into e2e_results.json and e2e_compare.txt
  PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH} "$python" "$here/e2e_diffusers.py" --compare "$out/e2e_ours.jsonl" \
    "$out/e2e_diffusers.jsonl" --images "$out" --json "$out/e2e_results.json" >"$out/e2e_compare.txt" 2>&1 ||
    echo '{"format": "sd_mpi-e2e", "error": "the comparison failed: see e2e_compare.txt"}' >"$out/e2e_results.json"
}
rm -f "$out"/e2e_ours.jsonl "$out"/e2e_diffusers.jsonl "$out"/*.rgb "$out"/e2e_results.json "$out"/e2e_compare.txt
: >"$out/e2e_ours.jsonl"
: >"$out/e2e_diffusers.jsonl"
results

# A prepare started by window.sh may still run: wait for it (it writes prepare.status at its end).
if [[ ! -f $out/prepare.status ]]; then
  pid=$(cat "$out/prepare.pid" 2>/dev/null)
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    say "waiting for the background prepare (pid $pid)"
    while [[ ! -f $out/prepare.status ]] && kill -0 "$pid" 2>/dev/null && (($(left) > 30)); do sleep 1; done
  fi
fi
if [[ ! -f $out/prepare.status ]]; then
  say "prepare"
  prepare >"$out/prepare.log" 2>&1
fi
sed 's/^/  /' "$out/prepare.log" >&2
[[ -f $model/model_index.json ]] || { say "no model folder: nothing to measure"; results; cat "$out/e2e_compare.txt"; exit 1; }

batch_args=()
for b in "${batches[@]}"; do batch_args+=(--batch "$b"); done
common=("${batch_args[@]}" --steps "$steps" --report-steps 50 --size "$size" --guidance "$guidance"
        --precision "$precision" --images "$out")
status=0

# Ours first, then diffusers: each about half of what is left (diffusers' imports take longer).
ours_budget=$(( ($(left) - 10) * 9 / 20 ))
if [[ ! -x $bench ]]; then
  say "sd_mpi: $bench is missing"
  status=1
elif ((ours_budget < 20)); then
  say "sd_mpi: no time left (${ours_budget}s)"
  status=1
else
  say "sd_mpi: e2e_bench (up to ${ours_budget}s)"
  run_stage "$ours_budget" "$out/e2e_ours.jsonl" "$out/e2e_ours.log" \
    "$bench" --model "$model" "${common[@]}" --budget-seconds $((ours_budget - 5)) || {
    say "sd_mpi: e2e_bench ended with status $?"
    tail -n 5 "$out/e2e_ours.log" >&2
    status=1
  }
fi
results

theirs_budget=$(( $(left) - 8 ))
if ((theirs_budget < 30)); then
  say "diffusers: no time left (${theirs_budget}s)"
  status=1
else
  say "diffusers: e2e_diffusers.py (up to ${theirs_budget}s)"
  run_stage "$theirs_budget" "$out/e2e_diffusers.jsonl" "$out/e2e_diffusers.log" \
    env PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "$python" "$here/e2e_diffusers.py" \
    --model "$model" "${common[@]}" --device "$device" --budget-seconds $((theirs_budget - 5)) || {
    say "diffusers: e2e_diffusers.py ended with status $?"
    tail -n 5 "$out/e2e_diffusers.log" >&2
    status=1
  }
fi
results
for f in e2e_ours e2e_diffusers; do
  n=$(grep -c '"batch"' "$out/$f.jsonl" 2>/dev/null)
  bad=$(grep -c '"error"' "$out/$f.jsonl" 2>/dev/null)
  ((${n:-0} == ${#batches[@]} && ${bad:-0} == 0)) || status=1
done
cat "$out/e2e_compare.txt"
exit $status
