#!/usr/bin/env bash
# The device query of a GPU window (bench/gpu/window.sh, deep.sh): what the machine is and which
# tools it has, as key=value lines in FILE (results_table.py puts them into the results file), and
# readable on stdout. Runs the same on a machine without a GPU (every GPU value says so), which is
# how the dry run tests it. Never changes the card's settings: it only reads (nvidia-smi --query).
#
#   bench/gpu/device_query.sh FILE
set -u
file=${1:?usage: device_query.sh FILE}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: >"$file"
put() { echo "$1=$2" >>"$file"; echo "$1: $2"; }
trim() { sed 's/^ *//;s/ *$//'; }

gpu=unknown driver=unknown memory=unknown cc=unknown
if command -v nvidia-smi >/dev/null 2>&1; then
  line=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -n1)
  if [[ -n $line ]]; then
    IFS=',' read -r gpu driver memory cc <<<"$line"
    gpu=$(trim <<<"$gpu") driver=$(trim <<<"$driver") memory=$(trim <<<"$memory") cc=$(trim <<<"$cc")
  else
    gpu="unknown (nvidia-smi found no GPU)"
  fi
else
  gpu="unknown (no nvidia-smi: no GPU here)"
fi
# results_table.py names the results file after the GPU; "unknown ..." becomes "unknown".
[[ $gpu == unknown* ]] && put gpu_note "$gpu" && gpu=unknown
put gpu "$gpu"
put driver "$driver"
put gpu_memory "$memory"
put compute_capability "$cc"

nvcc=${CUDACXX:-$(command -v nvcc || true)}
[[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
put cuda "$([[ -n $nvcc ]] && "$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1 || echo none)"
put cmake "$(cmake --version 2>/dev/null | head -n1 | awk '{print $3}')"
put ninja "$(ninja --version 2>/dev/null || echo none)"
put cores "$(nproc)"
put kernel "$(uname -r)"
for tool in compute-sanitizer ncu; do
  path=$(command -v "$tool" || true)
  [[ -z $path && -x /usr/local/cuda/bin/$tool ]] && path=/usr/local/cuda/bin/$tool
  key=${tool//-/_}
  if [[ -n $path ]]; then
    put "$key" "$("$path" --version 2>/dev/null | grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)*' | tail -n1) ($path)"
  else
    put "$key" none
  fi
done
put gpu_deps "$([[ -d $root/.gpu-deps ]] && echo "carried ($(du -sh "$root/.gpu-deps" | cut -f1))" || echo none)"
put wheels "$(ls "$root"/.whl/*.whl 2>/dev/null | xargs -r -n1 basename | sed 's/-py.*//;s/-cp.*//' | tr '\n' ' ' || true)"

# PyTorch: version and whether it sees the GPU (the e2e and op comparisons need it).
py=$(python3 - <<'PY' 2>/dev/null
import sys
print(f"python={sys.version.split()[0]}")
try:
    import torch
    ok = torch.cuda.is_available()
    print(f"torch={torch.__version__}")
    print(f"torch_cuda={'yes' if ok else 'no'}")
    if ok:
        p = torch.cuda.get_device_properties(0)
        print(f"multiprocessors={p.multi_processor_count}")
        print(f"l2_bytes={getattr(p, 'L2_cache_size', 'unknown')}")
except Exception as e:  # noqa: BLE001 - any import failure means "no torch" here
    print("torch=none")
    print(f"torch_cuda=no ({type(e).__name__})")
PY
)
while IFS='=' read -r k v; do [[ -n $k ]] && put "$k" "$v"; done <<<"$py"
grep -q '^torch=' "$file" || { put torch none; put torch_cuda no; }
exit 0
