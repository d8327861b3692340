#!/usr/bin/env bash
# CUDA compiler launcher for kernels/ (CMakeLists.txt): runs the compile command (through the
# launcher given after the log folder, e.g. ccache, if any), keeps ptxas's -v resource report of
# each object in LOG_DIR/<object>.ptxas for tools/check_cuda_build.py, and passes every other line
# of the compiler's output through, so the build log shows warnings and errors, not the report.
#   cuda_launcher.sh LOG_DIR [LAUNCHER...] -- COMPILER ARGS...
set -uo pipefail
log_dir=$1
shift
launcher=()
while (($#)) && [[ $1 != -- ]]; do
  [[ -n $1 ]] && launcher+=("$1")  # CMake passes an empty word when no launcher is set
  shift
done
shift  # --
object=unknown
args=("$@")
for ((i = 0; i < ${#args[@]}; ++i)); do
  [[ ${args[i]} == -o ]] && object=${args[i + 1]}
done
mkdir -p "$log_dir"
report="$log_dir/$(basename "$object").ptxas"
err=$(mktemp)
"${launcher[@]}" "$@" 2>"$err"
rc=$?
grep -E '^ptxas info|^    [0-9]+ bytes stack frame' "$err" >"$report.tmp"
mv "$report.tmp" "$report"
grep -vE '^ptxas info|^    [0-9]+ bytes stack frame' "$err" >&2
rm -f "$err"
exit $rc
