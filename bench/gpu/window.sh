#!/usr/bin/env bash
# bench/gpu/window.sh: the GPU window, in one command (docs/design.md §10).
#
# A GPU is lent for a few minutes, and only what a command writes under $OUT comes back. This
# script does, on a machine with an NVIDIA GPU, CUDA, cmake and PyTorch but no MPI/HDF5/libpng
# development packages and no network, in this order, each step a stage under its own timeout:
#   device     what the machine is (bench/gpu/device_query.sh): GPU, driver, CUDA, torch, tools
#   configure  a CUDA build (MPI, HDF5, PNG off; arch native), build dependencies from .gpu-deps/
#   build      the GPU tests (tests/gpu) and benchmarks (bench/gpu/*_bench.*)
#   smoke      one test per op family against the CPU reference, and one tiny generation against
#              the CPU backend (bench/gpu/smoke_tests.txt names them)
#   tests      every other GPU test: ctest -j -L gpu
#   benchmarks shortest first: ops_bench, ops_torch (PyTorch on the same cases), attention
#              (bench/gpu/attention_check.sh), e2e (our pipeline against diffusers, e2e_check.sh;
#              its CPU-only preparation runs in the background from the build on)
# After every stage $OUT/window.log is appended and $OUT/results.json/.md rewritten
# (bench/gpu/results_table.py), so a timeout still returns everything done so far; the short
# table is printed last. Commit the results as bench/results/gpu/<date>-<device>.json/.md (the last
# lines say the name). Exit status 0 when everything built, no stage failed and no test failed (or
# skipped, on a machine with a GPU).
#
# Usage: bench/gpu/window.sh [--smoke] [--dry-run] [--budget S] [--build-dir DIR] [--out DIR]
#                            [--work DIR] [--skip-build] [--dtype fp16|bf16|fp32]... [--no-torch] [--full]
#   --smoke        device, smoke tests, and stop: at most 60 s after the build (--skip-build on a
#                  warm machine: the whole command)
#   --dry-run      for a machine without a GPU (CI): every step except the kernels. The build folder
#                  (--build-dir, CI's own) is reused, never reconfigured; the tests run and skip
#                  visibly; the benchmarks are not run and their rows say "skipped (dry run)";
#                  results go to a temporary folder unless --out or $OUT says where
#   --budget S     seconds for the whole window (default 470; --smoke: 300); the script runs itself
#                  under `timeout` S+30
#   --skip-build   reuse the build folder as it is (a second run on a warm machine)
#   --full         benchmark repeats 7 instead of 3
#   SDMPI_COMMIT=<hash>   the commit to record when the tree has no .git (the device's copy)
#   SDMPI_CUDA_ARCH=<sm>  CMAKE_CUDA_ARCHITECTURES (default: native, else 90)
#   WINDOW_CTEST_JOBS     ctest -j for the test stages (default 4)
# tools/prepare_window.sh prepares what it needs here and prints the exact device call.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kind=window
mode=full
dry_run=0
skip_build=0
budget=
build=$(cd "$here/../.." && pwd)/build-gpu-check
work=
out=
use_torch=1
quick=--quick
dtypes=()
args=("$@")
while (($#)); do
  case $1 in
    --smoke) mode=smoke ;;
    --dry-run) dry_run=1 ;;
    --budget) budget=$2; shift ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --work) work=$(realpath -m "$2"); shift ;;
    --skip-build) skip_build=1 ;;
    --dtype) dtypes+=("$2"); shift ;;
    --no-torch) use_torch=0 ;;
    --full) quick= ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "window.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $budget ]] || { [[ $mode == smoke ]] && budget=300 || budget=470; }
[[ $budget =~ ^[0-9]+$ ]] || { echo "window.sh: --budget needs a number of seconds, got '$budget'" >&2; exit 2; }
((dry_run)) && mode+="-dry-run"
((${#dtypes[@]})) || dtypes=(fp16)

. "$here/window_lib.sh"
wl_self_timeout "$0" "${args[@]}"
wl_setup

gpu_tests=()
for f in "$wl_root"/tests/gpu/*_test.cpp; do [[ -e $f ]] && gpu_tests+=("$(basename "$f" .cpp)"); done
benches=()
for f in "$wl_root"/bench/gpu/*_bench.cpp "$wl_root"/bench/gpu/*_bench.cu; do
  [[ -e $f ]] && benches+=("$(basename "${f%.*}")")
done

# ---- device, configure, build ----------------------------------------------------------------------
wl_device_query
wl_configure
build_keep=200
[[ $mode == smoke* ]] && build_keep=70
wl_build "${gpu_tests[@]}" "${benches[@]}"

# The end-to-end comparison's CPU-only preparation (wheels, the 2 GB model) overlaps the tests.
e2e_prepare() {
  [[ $mode == full && -x $build/bench/e2e_bench ]] || return
  mkdir -p "$work/e2e"
  wl_say "e2e: e2e_check.sh --prepare, in the background"
  timeout "$(( $(wl_left) > 60 ? $(wl_left) : 60 ))" bash "$here/e2e_check.sh" --prepare "$build" "$work/e2e" \
    >"$work/e2e.prepare" 2>&1 &
  wl_background_pids+=($!)
}
e2e_prepare

# ---- tests ---------------------------------------------------------------------------------------------
jobs=${WINDOW_CTEST_JOBS:-4}
registered=$(wl_gpu_tests)
smoke_names=()
missing=()
while read -r _family _binary name; do
  smoke_names+=("$name")
  grep -qxF "$name" <<<"$registered" || missing+=("$name")
done < <(wl_smoke_tests)
smoke_regex=$(wl_exact_regex "${smoke_names[@]}")

# Whether a ctest stage's tests skipped for want of a GPU, said once in its detail.
test_detail() {  # stage
  local f=$work/$1.log
  local line
  line=$(grep -E '^[0-9]+% tests passed|tests? failed out of' "$f" 2>/dev/null | tail -n1)
  local skipped
  skipped=$(grep -c '(Skipped)$' "$f" 2>/dev/null)
  echo "${line:-no summary}${skipped:+; $skipped skipped}"
}

run_tests() {  # stage cap ctest-selection...
  local stage=$1 cap=$2 rc
  shift 2
  wl_stage "$stage" "$cap" -- ctest --test-dir "$build" "$@" -j "$jobs" --timeout "$(( cap < 240 ? cap : 240 ))" \
    --output-on-failure --output-junit "$work/$stage.xml"
  rc=$?
  wl_record "$stage" "$(wl_status_of $rc)" "$stage_seconds" "$(test_detail "$stage")"
  cat "$work"/smoke.log "$work"/tests.log 2>/dev/null | tail -c 200000 >"$out/ctest.log"
}

if [[ -z $registered ]]; then
  wl_record smoke skipped 0 "no GPU tests in $build (SDMPI_WITH_CUDA=OFF, or not configured)"
elif ((${#missing[@]})); then
  wl_record smoke failed 0 "bench/gpu/smoke_tests.txt names tests this build does not have: ${missing[*]}"
else
  cap=60
  (($(wl_left) < cap)) && cap=$(wl_left)
  ((cap < 10)) && cap=10
  run_tests smoke "$cap" -R "$smoke_regex"
fi

if [[ $mode == smoke* ]]; then
  :
elif [[ -z $registered ]]; then
  wl_record tests skipped 0 "no GPU tests in $build"
else
  # Leave about three minutes for the benchmarks, two more for e2e; at least 90 s for the tests.
  cap=$(( $(wl_left) - 190 - 120 ))
  ((cap < 90)) && cap=90
  run_tests tests "$cap" -L gpu -E "$smoke_regex"
fi

# ---- benchmarks, shortest first ---------------------------------------------------------------------------
# Each entry: name and the seconds it keeps for itself from the ones before it (its floor). Each
# runs under a cap of what is left minus the floors of those after it.
torch_ok=0
grep -q '^torch_cuda=yes' "$work/device.env" 2>/dev/null && ((use_torch)) && torch_ok=1
dtype_args=()
for t in "${dtypes[@]}"; do dtype_args+=(--dtype "$t"); done
plan=("ops_bench 10" "ops_torch 10" "attention 40" "e2e 120")
bench_command() {  # name: sets cmd (and stdout) or why_not
  cmd=() stdout= why_not=
  case $1 in
    ops_bench)
      [[ -x $build/bench/ops_bench ]] || why_not="not built"
      cmd=("$build/bench/ops_bench" "${dtype_args[@]}" $quick) stdout=$work/ops_bench.jsonl ;;
    ops_torch)
      ((torch_ok)) || why_not="no PyTorch with CUDA here$( ((use_torch)) || echo " (--no-torch)")"
      cmd=(python3 "$here/ops_torch.py" "${dtype_args[@]}" $quick) stdout=$work/ops_torch.jsonl ;;
    attention)
      [[ -x $build/bench/attention_bench && -x $build/tests/attention_test ]] || why_not="not built"
      cmd=(env ATTENTION_SKIP_TESTS=1 bash "$here/attention_check.sh" "$build" "$work/attention") ;;
    e2e)
      [[ -x $build/bench/e2e_bench ]] || why_not="not built"
      cmd=(bash "$here/e2e_check.sh" "$build" "$work/e2e") ;;
  esac
}
floor_after() {  # index: the floors of the plan's entries after it
  local i s=0
  for ((i = $1 + 1; i < ${#plan[@]}; i++)); do s=$((s + ${plan[i]#* })); done
  echo $s
}
if [[ $mode != smoke* ]]; then
  for i in "${!plan[@]}"; do
    name=${plan[i]% *}
    floor=${plan[i]#* }
    bench_command "$name"
    if ((dry_run)); then
      wl_record "bench.$name" skipped 0 "skipped (dry run): would run ${cmd[*]}${why_not:+; here: $why_not}"
      continue
    fi
    if [[ -n $why_not ]]; then
      wl_record "bench.$name" skipped 0 "$why_not"
      continue
    fi
    cap=$(( $(wl_left) - 10 - $(floor_after "$i") ))
    if ((cap < floor)); then
      wl_record "bench.$name" skipped 0 "no time left (${cap}s, needs ${floor}s)"
      continue
    fi
    mkdir -p "$work/$name"
    [[ $name == e2e ]] && export SUBCHECK_BUDGET=$((cap - 5))
    if [[ -n $stdout ]]; then
      wl_stage "bench.$name" "$cap" --stdout "$stdout" -- "${cmd[@]}"
      rc=$?
      wl_append_log "bench.$name (stdout)" "$stdout"
    else
      # A sub-check: its whole output is what results_table.py shows for it.
      wl_stage "bench.$name" "$cap" -- "${cmd[@]}"
      rc=$?
      cp "$stage_log" "$work/$name.subcheck"
    fi
    wl_record "bench.$name" "$(wl_status_of $rc)" "$stage_seconds" "$(tail -n 1 "$stage_log" 2>/dev/null | cut -c1-200)"
  done
fi
wl_background_stop
[[ -f $work/e2e.prepare ]] && wl_append_log e2e.prepare "$work/e2e.prepare"

# ---- the short table, last --------------------------------------------------------------------------------
wl_results --final 2>>"$log" | tee -a "$log"
failed=1 skipped=0 bad_stages=1
[[ -f $work/results.env ]] && . "$work/results.env"
status=0
if ((has_gpu && skipped > 0)); then
  echo "window.sh: $skipped tests skipped on a machine with a GPU: see the results file" | tee -a "$log" >&2
  status=1
fi
((failed == 0 && bad_stages == 0)) || status=1
exit $status
