#!/bin/bash
# A long fuzzing campaign for one target: runs it again and again (each run bounded in time) until
# it has executed EXECUTIONS inputs in all, or until a run fails. Unlike run_fuzzers.sh (CI's bounded
# smoke run), the corpus persists between runs, so each run starts from what the last one reached.
#
#   tests/fuzz/campaign.sh BUILD_DIR NAME EXECUTIONS [SECONDS_PER_RUN [MAX_SECONDS]]
#
# SECONDS_PER_RUN defaults to 600; MAX_SECONDS (default: none) ends the campaign early, for slow
# targets whose EXECUTIONS do not fit the time at hand (the totals then say how far it got).
#
# Work folder: BUILD_DIR/fuzz-campaign/NAME/ with corpus/ (seeded from tests/data/malformed/NAME/,
# never written back there), artifacts/ (crash inputs), run-<k>.log (libFuzzer's output) and
# runs.tsv: one line per run with run, executions, seconds, exec/s, cov, ft, corpus entries, rc.
# The final line "campaign NAME: ..." gives the totals for bench/results/fuzz/<date>.md.
# Runs under `nice -n 10` (the machine is shared). CAMPAIGN_FLAGS adds libFuzzer flags, e.g.
# "-fork=1 -ignore_crashes=1" for archive_fuzz, whose corrupt inputs can crash inside libhdf5 itself:
# the campaign then goes on past them and their inputs collect in artifacts/ to be triaged. Exit status: 0 when the total was reached with
# every run clean, 1 when a run crashed, leaked or timed out, 2 on usage errors, 3 when MAX_SECONDS
# ran out first (every run clean).
set -u
if [ $# -lt 3 ] || [ ! -d "$1" ]; then
  echo "usage: $0 BUILD_DIR NAME EXECUTIONS [SECONDS_PER_RUN]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
name=$2
target_execs=$3
per_run=${4:-600}
max_seconds=${5:-0}
campaign_start=$(date +%s)
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(find "$build" -type f -name "${name}_fuzz" -perm -u+x | head -n 1)
if [ -z "$bin" ]; then
  echo "campaign: no ${name}_fuzz under $build" >&2
  exit 2
fi
work="$build/fuzz-campaign/$name"
mkdir -p "$work/corpus" "$work/artifacts"
seeds="$repo/tests/data/malformed/$name"
[ -f "$work/runs.tsv" ] || printf 'run\texecutions\tseconds\texec_per_s\tcov\tft\tcorpus\trc\n' > "$work/runs.tsv"

# A timeout whose input runs again alone inside the timeout: the process was stopped, not hung.
# Moves the input (and the rerun's log) to false-timeouts/ and succeeds; else leaves it and fails.
stopped_not_hung() {
  local input
  input=$(sed -n 's/.*Test unit written to \(.*timeout-[0-9a-f]*\).*/\1/p' "$1" | tail -n 1)
  [ -n "$input" ] && [ -f "$input" ] || return 1
  nice -n 10 "$bin" -timeout=10 -rss_limit_mb=2048 "$input" > "$input.rerun.log" 2>&1 || return 1
  mkdir -p "$work/false-timeouts"
  mv "$input" "$input.rerun.log" "$work/false-timeouts/"
}

total=$(awk -F'\t' 'NR > 1 { s += $2 } END { print s + 0 }' "$work/runs.tsv")
run=$(awk 'END { print NR - 1 }' "$work/runs.tsv")
status=0
while [ "$total" -lt "$target_execs" ]; do
  run=$((run + 1))
  log="$work/run-$run.log"
  left=$((target_execs - total))
  this_run=$per_run
  if [ "$max_seconds" -gt 0 ]; then
    remaining=$((max_seconds - ($(date +%s) - campaign_start)))
    if [ "$remaining" -le 5 ]; then
      echo "campaign $name: MAX_SECONDS ($max_seconds) reached before $target_execs executions"
      status=3
      break
    fi
    [ "$remaining" -lt "$this_run" ] && this_run=$remaining
  fi
  start=$(date +%s)
  # The seeds folder comes second: libFuzzer writes new inputs only to the first folder.
  # shellcheck disable=SC2086
  nice -n 10 "$bin" ${CAMPAIGN_FLAGS:-} -runs="$left" -max_total_time="$this_run" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" > "$log" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  # Fork mode prints no final stats: its status lines start with the executions so far ("#N: cov: ...").
  [ -z "$execs" ] && execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<< "$last")
  execs=${execs:-0}
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<< "$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<< "$last")
  corp=$(find "$work/corpus" -type f | wc -l)
  rate=$(( execs / (seconds > 0 ? seconds : 1) ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$execs" "$seconds" "$rate" "${cov:-?}" "${ft:-?}" "$corp" "$rc" >> "$work/runs.tsv"
  total=$((total + execs))
  echo "campaign $name: run $run: $execs executions in ${seconds}s (cov ${cov:-?}, ft ${ft:-?}, corpus $corp, exit $rc); total $total"
  if [ "$rc" -ne 0 ] && [[ "${CAMPAIGN_FLAGS:-}" == *ignore_crashes=1* ]]; then
    # Fork mode went on past the crashes; tests/fuzz/triage_hdf5.sh sorts their inputs afterwards.
    echo "campaign $name: run $run left crash inputs (exit $rc); triage $work/artifacts/" >&2
  elif [ "$rc" -ne 0 ] && grep -q 'ERROR: libFuzzer: timeout' "$log" && stopped_not_hung "$log"; then
    # libFuzzer times a unit by the wall clock, so a run stopped from outside (SIGSTOP: the shared
    # machine's benchmarks pause other work) reports a timeout when it resumes. Such a unit ran
    # again alone, well inside the limit: its input goes to false-timeouts/, the campaign goes on.
    echo "campaign $name: run $run: timeout while the process was stopped; the unit reruns in time (false-timeouts/)" >&2
  elif [ "$rc" -ne 0 ]; then
    echo "campaign $name: run $run FAILED (exit $rc); see $log and $work/artifacts/" >&2
    status=1
    break
  fi
  if [ "$execs" -eq 0 ]; then
    echo "campaign $name: run $run executed nothing; see $log" >&2
    status=1
    break
  fi
done
runs=$(awk 'END { print NR - 1 }' "$work/runs.tsv")
secs=$(awk -F'\t' 'NR > 1 { s += $3 } END { print s + 0 }' "$work/runs.tsv")
echo "campaign $name: total $total executions in $runs runs, ${secs}s; last: $(tail -n 1 "$work/runs.tsv")"
exit $status
