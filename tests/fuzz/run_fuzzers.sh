#!/bin/bash
# Runs every built libFuzzer target of a build directory for a bounded time on its seed corpus.
#
#   tests/fuzz/run_fuzzers.sh BUILD_DIR [SECONDS_EACH]      (default $FUZZ_SECONDS, else 60 s)
#
# A target tests/fuzz/<name>_fuzz.cpp builds to <name>_fuzz somewhere under BUILD_DIR; its seeds
# are tests/data/malformed/<name>/ (every file there, manifest included). New inputs the fuzzer
# finds go to a scratch corpus, never into the committed seeds; crash inputs are kept under
# BUILD_DIR/fuzz-artifacts/<name>/. Builds nothing. Exit status: 0 if every target ran clean,
# 1 if any crashed, leaked or timed out, 2 on usage errors or when no target is built, 77 when
# BUILD_DIR does not exist (ctest's sanitize.fuzz_targets then shows as skipped, like
# sanitize.unit_tests, in a tree configured for a sanitizer build that was not made).
# Long campaigns (persistent corpus, millions of executions): tests/fuzz/campaign.sh.
set -u
if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [SECONDS_EACH]" >&2
  exit 2
fi
if [ ! -d "$1" ]; then
  echo "run_fuzzers: no build tree at $1 (tools/run_tests.sh builds the sanitizer tree)" >&2
  exit 77
fi
build=$(cd "$1" && pwd)
seconds=${2:-${FUZZ_SECONDS:-60}}
repo=$(cd "$(dirname "$0")/../.." && pwd)
mapfile -t targets < <(find "$build" -type f -name '*_fuzz' -perm -u+x | sort)
if [ ${#targets[@]} -eq 0 ]; then
  echo "run_fuzzers: no *_fuzz binaries under $build (configure with -DSDMPI_FUZZ=ON and clang)" >&2
  exit 2
fi
status=0
summary=()
for bin in "${targets[@]}"; do
  name=$(basename "$bin" _fuzz)
  seeds="$repo/tests/data/malformed/$name"
  scratch=$(mktemp -d)
  artifacts="$build/fuzz-artifacts/$name"
  mkdir -p "$artifacts"
  dirs=("$scratch")
  if [ -d "$seeds" ]; then dirs+=("$seeds"); else echo "run_fuzzers: $name: no seed corpus at $seeds" >&2; fi
  echo "== $name: ${seconds}s, seeds ${seeds}"
  # archive_fuzz's corrupt files can crash libhdf5 itself (not ours, not instrumented): it runs in
  # fork mode past such crashes, and triage_hdf5.sh fails the run only for faults in our code.
  extra=()
  [ "$name" = archive ] && extra=(-fork=1 -ignore_crashes=1)
  "$bin" "${extra[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix="$artifacts/" "${dirs[@]}" > "$artifacts/log.txt" 2>&1
  rc=$?
  tail -n 15 "$artifacts/log.txt"
  if [ ${#extra[@]} -gt 0 ]; then
    "$repo/tests/fuzz/triage_hdf5.sh" "$bin" "$artifacts" | tee "$artifacts/triage.txt"
    rc=${PIPESTATUS[0]}
  fi
  if [ $rc -eq 0 ]; then
    summary+=("ok      $name")
  else
    summary+=("FAILED  $name (exit $rc; log and inputs in $artifacts)")
    status=1
  fi
  rm -rf "$scratch"
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $status
