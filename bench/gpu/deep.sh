#!/usr/bin/env bash
# bench/gpu/deep.sh: the second GPU window, for after window.sh has run once (docs/design.md §10).
#
# Where window.sh asks "does it work, how fast", this asks "is it clean, where does the time go":
#   device, configure, build   as window.sh (bench/gpu/window_lib.sh): the smoke tests' binaries
#                              and e2e_bench
#   model      the SD 1.5-sized random model for the profile (e2e_check.sh --prepare)
#   memcheck   compute-sanitizer --tool memcheck on each smoke test (bench/gpu/smoke_tests.txt:
#              one test per op family, the graph test and the tiny pipeline), bounded per test
#   racecheck  compute-sanitizer --tool racecheck on the same tests but the probe
#   ncu        Nsight Compute on one denoising step of e2e_bench (512², batch 1, fp16, CFG; the
#              profiler is on for step 2 alone, --profile-step), one pass of a few metrics per
#              kernel, summarised by bench/gpu/ncu_summary.py: the ten hottest kernels
# Like window.sh, each stage runs under its own timeout and rewrites $OUT/deep.json/.md after it
# finishes; $OUT also gets deep.log, memcheck.log, racecheck.log and ncu.csv. A sanitizer verdict
# per test is "clean", "errors" (the first report line in the detail), "failed" (the test itself
# failed under the tool), "timeout" or "skipped". Exit status 0 when every verdict is clean and the
# profile ran.
#
# Usage: bench/gpu/deep.sh [--dry-run] [--budget S] [--build-dir DIR] [--out DIR] [--work DIR] [--skip-build]
#   --dry-run   for CI: every step except the kernels. The build folder is reused; each smoke test's
#               gtest filter is checked against its binary (--gtest_list_tests: exactly one test);
#               the sanitizer and ncu commands are listed, not run; ncu_summary.py runs on an empty
#               profile
#   --budget S  seconds for the whole window (default 540); the script runs itself under timeout S+30
# Environment: SDMPI_COMMIT, SDMPI_CUDA_ARCH as for window.sh; DEEP_NCU_SECONDS (default 150) kept
# for the profile, the rest after the build split evenly between memcheck and racecheck.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kind=deep
mode=deep
dry_run=0
skip_build=0
budget=540
build=$(cd "$here/../.." && pwd)/build-gpu-check
work=
out=
args=("$@")
while (($#)); do
  case $1 in
    --dry-run) dry_run=1 ;;
    --budget) budget=$2; shift ;;
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --work) work=$(realpath -m "$2"); shift ;;
    --skip-build) skip_build=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "deep.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $budget =~ ^[0-9]+$ ]] || { echo "deep.sh: --budget needs a number of seconds, got '$budget'" >&2; exit 2; }
((dry_run)) && mode+="-dry-run"

. "$here/window_lib.sh"
wl_self_timeout "$0" "${args[@]}"
wl_setup

tool_path() {  # name: on PATH or in the toolkit
  command -v "$1" 2>/dev/null || { [[ -x /usr/local/cuda/bin/$1 ]] && echo "/usr/local/cuda/bin/$1"; }
}
sanitizer=$(tool_path compute-sanitizer)
ncu=$(tool_path ncu)

mapfile -t smoke < <(wl_smoke_tests)
binaries=()
for line in "${smoke[@]}"; do
  read -r _ bin _ <<<"$line"
  [[ " ${binaries[*]} " == *" $bin "* ]] || binaries+=("$bin")
done

wl_device_query
wl_configure
build_keep=$((budget / 2))
wl_build "${binaries[@]}" e2e_bench

# ---- the model for the profile --------------------------------------------------------------------------
model=${E2E_MODEL_DIR:-/tmp/sdmpi-e2e-sd15}
if ((dry_run)); then
  wl_record model skipped 0 "dry run: would run e2e_check.sh --prepare (make-model --preset sd15 into $model)"
elif [[ ! -x $build/bench/e2e_bench ]]; then
  wl_record model skipped 0 "e2e_bench was not built"
else
  wl_stage model 300 -- env E2E_MODEL_DIR="$model" bash "$here/e2e_check.sh" --prepare "$build" "$work/e2e"
  rc=$?
  wl_record model "$(wl_status_of $rc)" "$stage_seconds" "$(tail -n 1 "$work/e2e/prepare.log" 2>/dev/null)"
fi

# ---- compute-sanitizer ---------------------------------------------------------------------------------------
ncu_keep=${DEEP_NCU_SECONDS:-150}
sanitize() {  # tool seconds
  local tool=$1 seconds=$2 end line family bin name rc start detail verdict n=0 clean=0 tool_start
  end=$(($(wl_elapsed) + seconds))
  tool_start=$(date +%s)
  : >"$work/$tool.all"
  for line in "${smoke[@]}"; do
    read -r family bin name <<<"$line"
    [[ $tool == racecheck && $family == probe ]] && continue  # no kernel of ours runs there
    n=$((n + 1))
    local exe=$build/tests/$bin
    local cmd=("${sanitizer:-compute-sanitizer}" --tool "$tool" --error-exitcode 99 --print-limit 20 "$exe" --gtest_filter="$name")
    if ((dry_run)); then
      # What can be checked without a GPU: the filter names exactly one test of the binary.
      if [[ ! -x $exe ]]; then
        verdict=skipped detail="dry run; $bin is not built here"
      else
        local listed
        listed=$("$exe" --gtest_list_tests --gtest_filter="$name" 2>/dev/null | grep -c '^  ')
        if [[ $listed == 1 ]]; then verdict=skipped detail="dry run: would run ${cmd[*]}"
        else verdict=failed detail="dry run: --gtest_filter=$name matches $listed tests of $bin, not 1"; fi
      fi
      printf '%s\t%s\t%s\t0\t%s\n' "$tool" "$name" "$verdict" "$detail" >>"$work/sanitizer.tsv"
      continue
    fi
    local cap=$((end - $(wl_elapsed)))
    ((cap > 150)) && cap=150
    if [[ -z $sanitizer || ! -x $exe ]]; then
      verdict=skipped detail=$([[ -z $sanitizer ]] && echo "no compute-sanitizer here" || echo "$bin not built")
      printf '%s\t%s\t%s\t0\t%s\n' "$tool" "$name" "$verdict" "$detail" >>"$work/sanitizer.tsv"
      continue
    fi
    if ((cap < 15)); then
      printf '%s\t%s\tskipped\t0\tno time left\n' "$tool" "$name" >>"$work/sanitizer.tsv"
      continue
    fi
    start=$(date +%s)
    timeout --kill-after=10 "$cap" "${cmd[@]}" >"$work/$tool.one" 2>&1
    rc=$?
    { echo "==== $tool $name (status $rc)"; cat "$work/$tool.one"; } >>"$work/$tool.all"
    case $rc in
      0) verdict=clean detail=$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$work/$tool.one") ;;
      99) verdict=errors detail=$(grep -m1 -E '^========= (Invalid|Error|Race|Warning|.*hazard)' "$work/$tool.one") ;;
      124|137) verdict=timeout detail="after ${cap}s" ;;
      *) verdict=failed detail=$(grep -m1 -E 'Failure|FAILED|error' "$work/$tool.one") ;;
    esac
    [[ $verdict == clean ]] && clean=$((clean + 1))
    printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "$verdict" "$(($(date +%s) - start))" "${detail:0:300}" >>"$work/sanitizer.tsv"
    wl_results >/dev/null 2>>"$log"
  done
  tail -c 2000000 "$work/$tool.all" >"$out/$tool.log"
  if ((dry_run)); then
    wl_record "$tool" "$(grep -q "^$tool"$'\t'"[^"$'\t'"]*"$'\t'"failed" "$work/sanitizer.tsv" && echo failed || echo skipped)" 0 \
      "dry run: $n tests listed$([[ -z $sanitizer ]] && echo "; no compute-sanitizer here")"
  else
    wl_record "$tool" "$( ((clean == n)) && echo ok || echo failed)" "$(($(date +%s) - tool_start))" "$clean of $n tests clean"
  fi
}
share=$(( ($(wl_left) - ncu_keep) / 2 ))
((share < 30)) && share=30
sanitize memcheck "$share"
share=$(( $(wl_left) - ncu_keep ))
((share < 30)) && share=30
sanitize racecheck "$share"

# ---- Nsight Compute: one denoising step ---------------------------------------------------------------------
metrics=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread
ncu_cmd=("${ncu:-ncu}" --clock-control none --profile-from-start off --csv --page raw --print-kernel-base function
         --metrics "$metrics" --log-file "$work/ncu.csv"
         "$build/bench/e2e_bench" --model "$model" --batch 1 --steps 3 --warmup-steps 1 --size 512
         --precision fp16 --profile-step 2)
if ((dry_run)) || [[ -z $ncu || ! -x $build/bench/e2e_bench || ! -f $model/model_index.json ]]; then
  : >"$work/ncu.csv"
  why=$( ((dry_run)) && echo "dry run" || { [[ -z $ncu ]] && echo "no ncu here" || echo "no e2e_bench or model"; })
  python3 "$here/ncu_summary.py" "$work/ncu.csv" "$work/ncu_summary.json" >"$work/ncu_summary.log" 2>&1
  rc=$?
  wl_record ncu "$( ((rc)) && echo failed || echo skipped)" 0 "$why: would run ${ncu_cmd[*]}"
else
  cap=$(( $(wl_left) - 10 ))
  ((cap < 30)) && cap=30
  wl_stage ncu "$cap" -- "${ncu_cmd[@]}"
  rc=$?
  python3 "$here/ncu_summary.py" "$work/ncu.csv" "$work/ncu_summary.json" >"$work/ncu_summary.log" 2>&1
  wl_append_log ncu_summary "$work/ncu_summary.log"
  wl_record ncu "$(wl_status_of $rc)" "$stage_seconds" "$(head -n1 "$work/ncu_summary.log")"
fi
tail -c 8000000 "$work/ncu.csv" >"$out/ncu.csv" 2>/dev/null

# ---- the short table, last ----------------------------------------------------------------------------------
wl_results --final 2>>"$log" | tee -a "$log"
failed=1 bad_stages=1
[[ -f $work/results.env ]] && . "$work/results.env"
((bad_stages == 0)) || exit 1
exit 0
