#!/usr/bin/env bash
# Prepares, on this machine, everything a GPU window (bench/gpu/window.sh, deep.sh) needs and cannot
# download there, checks that it fits what the device call carries, and prints the exact call.
#
# The device has CUDA, cmake, ninja and PyTorch, no network, and no MPI/HDF5/libpng development
# packages; it gets the working tree (tracked and untracked-not-ignored files) plus at most 8
# git-ignored carried paths, 64 MiB in all. We carry:
#   .gpu-deps/  the small build dependencies (nlohmann-json, CLI11, GoogleTest, PCRE2, utf8proc,
#               zlib, pkg-config), tools/prepare_gpu_deps.sh, about 5 MB
#   .whl/       diffusers, transformers, tokenizers at tools/golden/requirements.txt's versions and
#               what they need besides the machine's packages, tools/prepare_gpu_wheels.sh, ~24 MB
# The build itself happens there (a build made here would link this machine's libraries).
#
# Usage: tools/prepare_window.sh [--check-only] [--extra-mib N] [--deep|--smoke] [--budget S]
#   (none)          fill .gpu-deps/ and .whl/ (downloads the wheels), check the size, print the call
#   --check-only    prepare nothing: measure what would travel now (CI runs this)
#   --extra-mib N   count N MiB more than there is (tests the limit check without big files)
#   --deep          print the call for bench/gpu/deep.sh (the second window) instead
#   --smoke         print the call for window.sh --smoke
#   --budget S      the script's budget in the printed call (default: window 470, deep 540, smoke 300)
# Exit status 1, with one line saying by how much, when the carried set exceeds 64 MiB.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
limit=$((64 * 1024 * 1024))
check_only=0
extra_mib=0
script=window
budget=
while (($#)); do
  case $1 in
    --check-only) check_only=1 ;;
    --extra-mib) extra_mib=$2; shift ;;
    --deep) script=deep ;;
    --smoke) script=smoke ;;
    --budget) budget=$2; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "prepare_window: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $extra_mib =~ ^[0-9]+$ ]] || { echo "prepare_window: --extra-mib needs a whole number, got '$extra_mib'" >&2; exit 2; }
carry=(.gpu-deps .whl)

if ((!check_only)); then
  "$root/tools/prepare_gpu_deps.sh"
  "$root/tools/prepare_gpu_wheels.sh"
fi

# The carried paths must be ignored by git (else they travel twice: as the tree and as carry).
cd "$root"
for c in "${carry[@]}"; do
  if [[ -e $c ]] && ! git check-ignore -q "$c"; then
    echo "prepare_window: $c is not ignored by git; add it to .gitignore" >&2
    exit 1
  fi
done

# What travels: tracked and untracked-not-ignored files (bytes as stored), plus the carried paths.
tree_bytes=$(git ls-files -z -c -o --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried_bytes=0
present=()
for c in "${carry[@]}"; do
  if [[ -e $c ]]; then
    present+=("$c")
    carried_bytes=$((carried_bytes + $(du -sb "$c" | cut -f1)))
  fi
done
total=$((tree_bytes + carried_bytes + extra_mib * 1024 * 1024))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "prepare_window: travels $(mib "$total") of 64 MiB: tree $(mib "$tree_bytes"), carried $(mib "$carried_bytes")" \
     "(${present[*]:-nothing})$( ((extra_mib)) && echo ", plus $extra_mib MiB counted by --extra-mib")"
if ((total > limit)); then
  echo "prepare_window: $(mib $((total - limit))) over the 64 MiB a device call carries: ignore or carry less" >&2
  exit 1
fi
for c in "${carry[@]}"; do
  [[ -e $c ]] || echo "prepare_window: warning: $c is missing (run without --check-only to make it)" >&2
done

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- src include kernels tests bench CMakeLists.txt 2>/dev/null || commit+="-dirty"
case $script in
  window) command="bench/gpu/window.sh --budget ${budget:-470}"; timeout=$(( ${budget:-470} + 70 )) ;;
  smoke) command="bench/gpu/window.sh --smoke --budget ${budget:-300}"; timeout=$(( ${budget:-300} + 70 )) ;;
  deep) command="bench/gpu/deep.sh --budget ${budget:-540}"; timeout=$(( ${budget:-540} + 50 )) ;;
esac
((timeout > 600)) && timeout=600
carry_json=
((${#present[@]})) && carry_json=$(printf '"%s", ' "${present[@]}")
echo "The device call (results come back under \$OUT; commit them as bench/results/gpu/<date>-<device>.*):"
echo "  run(command=\"SDMPI_COMMIT=$commit bash $command\","
echo "      carry=[${carry_json%, }], timeout_s=$timeout)"
