#!/usr/bin/env bash
# Runs the unit tests of the sanitizer build tree (CPU path under ASan + UBSan). Exit 77 = skipped.
set -uo pipefail
dir=$1
[ -f "$dir/CTestTestfile.cmake" ] || { echo "no sanitizer tree at $dir (tools/run_tests.sh builds it)"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$here/lsan.supp:print_suppressions=0
# DemoModel.DrawsHeldOutCaptions judges what the demo model draws (over a minute under ASan): the
# code it runs is DemoModel.WithinOneLevelOfDiffusers's, which does run here, so it is left to build/.
ctest --test-dir "$dir" -L unit -E '^DemoModel\.DrawsHeldOutCaptions$' --output-on-failure -j"$(nproc)"
