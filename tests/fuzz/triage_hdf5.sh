#!/bin/bash
# Sorts the crash, leak and timeout inputs a fuzz target left behind into those whose fault lies in
# libhdf5 and those whose fault lies in our code.
#
#   tests/fuzz/triage_hdf5.sh FUZZ_BINARY ARTIFACT_DIR
#
# Why: archive_fuzz feeds corrupt HDF5 files, and libhdf5 1.10 (not instrumented, not ours) has
# crashes, hangs, huge allocations and leaks on such files (global heap reads, the metadata cache);
# docs in tests/data/malformed/README.md. Each input is run again alone; the first frame of its
# report that is neither the sanitizer/libFuzzer runtime nor libc/libstdc++ names the culprit:
# libhdf5_serial.so → "libhdf5", anything else (our sources) → "ours". An input that runs clean now
# is "clean". Prints one line per input; exit 1 if any is "ours", else 0.
set -u
if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -d "$2" ]; then
  echo "usage: $0 FUZZ_BINARY ARTIFACT_DIR" >&2
  exit 2
fi
bin=$1
status=0
shopt -s nullglob
for input in "$2"/crash-* "$2"/leak-* "$2"/timeout-* "$2"/oom-*; do
  report=$(ASAN_OPTIONS=fast_unwind_on_malloc=0 timeout 120 "$bin" -timeout=10 -rss_limit_mb=2048 "$input" 2>&1)
  rc=$?
  if [ $rc -eq 0 ]; then
    echo "clean    $(basename "$input")"
    continue
  fi
  frame=$(grep -E '^ +#[0-9]+ ' <<< "$report" |
          grep -vE '__interceptor_|__asan|__sanitizer|__lsan|fuzzer::|in (malloc|calloc|realloc|free|operator new|operator delete)|libc\.so|sysdeps/|libstdc\+\+|__pthread|raise |abort |_start|__libc|archive_fuzz\+0x|_fuzz\+0x' |
          head -n 1 | sed 's/^ *//' | cut -c1-160)
  if [[ "$frame" == *libhdf5* ]]; then
    echo "libhdf5  $(basename "$input")  $frame"
  else
    echo "ours     $(basename "$input")  ${frame:-(no frame; exit $rc)}"
    status=1
  fi
done
exit $status
