#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with the Python wheels the GPU check machine lacks for
# bench/gpu/e2e_diffusers.py, so the end-to-end benchmark runs diffusers there without network.
#
# The machine (see the device notes, KINDS.md) has Python 3.12, PyTorch with CUDA, numpy, Pillow,
# safetensors 0.8.0, huggingface-hub 1.33, tokenizers 0.23.2, regex, pyyaml, tqdm, typer, zipp, but
# not diffusers. We carry the reference versions of tools/golden/requirements.txt where the machine
# has none or another one, and only what is missing besides (each wheel is installed with --no-deps):
#   diffusers 0.42.1, transformers 5.24.0, tokenizers 0.23.3  the reference environment's versions
#   regex 2026.11.19            transformers 5.24 needs regex >= 2025.10.22; the machine's is unknown
#   importlib-metadata 8.7.0    diffusers imports it; 8.x needs only zipp (10.x also lazy-importer)
# huggingface-hub stays the machine's 1.33 (diffusers needs >= 1.32, transformers >= 1.31; 2.x would
# drag httpx2, hf-xet and more along), safetensors the machine's 0.8.0 (the reference's).
#
# The diffusers, transformers and tokenizers versions are read from tools/golden/requirements.txt,
# so the GPU comparison runs the reference environment's versions (the golden data's).
#
# Usage: tools/prepare_gpu_wheels.sh [--list]   (then carry .whl with the device run; about 24 MB)
#   --list   print the wheels it would fetch, one NAME==VERSION a line, and download nothing
# bench/gpu/e2e_check.sh installs them there: pip install --no-index --no-deps --target DIR .whl/*.whl
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/.whl
python=${PYTHON:-python3}
requirements=$root/tools/golden/requirements.txt
pin() {  # name: NAME==VERSION as requirements.txt pins it
  local line
  line=$(grep -iE "^$1==" "$requirements" | head -n1)
  [[ -n $line ]] || { echo "prepare_gpu_wheels: $requirements pins no version of $1" >&2; exit 1; }
  echo "$line"
}
wheels=("$(pin diffusers)" "$(pin transformers)" "$(pin tokenizers)" regex==2026.11.19 importlib-metadata==8.7.0)
if [[ ${1:-} == --list ]]; then
  printf '%s\n' "${wheels[@]}"
  exit 0
fi
"$python" -m pip --version >/dev/null 2>&1 || { echo "prepare_gpu_wheels: $python has no pip (set PYTHON=...)" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"
# The machine's manylinux level is unknown: offer pip every tag up to 2_39 (pip matches exactly).
platforms=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in 17 24 27 28 31 34 35 39; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
for w in "${wheels[@]}"; do
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$out" "$w"
done
# One version of each: two would stop the whole install there.
dupes=$(ls "$out" | sed -E 's/-[0-9].*//' | tr 'A-Z_' 'a-z-' | sort | uniq -d)
[[ -z $dupes ]] || { echo "prepare_gpu_wheels: two versions of: $dupes" >&2; exit 1; }
ls -1 "$out"
echo "prepare_gpu_wheels: $(du -sh "$out" | cut -f1) in $out"
