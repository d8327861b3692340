#!/usr/bin/env bash
# Installs the Debian 12 packages sd_mpi's build and tests need. Idempotent: with everything
# present it installs nothing. Run as root (or through sudo).
#   tools/setup.sh            build + test dependencies (MPI, HDF5, libpng, BLAS, JSON, CLI, ...)
#   tools/setup.sh --slurm    also the one-node SLURM cluster used by the SLURM test (slurm-wlm, munge)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  openmpi-bin libopenmpi-dev
  libhdf5-dev hdf5-tools
  libpng-dev zlib1g-dev libjpeg62-turbo-dev
  libopenblas-dev
  nlohmann-json3-dev libcli11-dev
  libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  libssl-dev
  python3-h5py python3-numpy python3-pil
)
[[ " $* " == *" --slurm "* ]] && packages+=(slurm-wlm munge)

# cuobjdump for the CUDA build check (tools/check_cuda_build.py): the toolkit here lacks it, PyPI has
# it. Only where nvcc is (the CUDA build needs it), into .cuda-tools/ (ignored by git).
root=$(cd "$(dirname "$0")/.." && pwd)
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  if ! compgen -G "$root/.cuda-tools/nvidia/cu*/bin/cuobjdump" >/dev/null; then
    echo "setup: installing cuobjdump (PyPI nvidia-cuda-cuobjdump) into .cuda-tools/"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$root/.cuda-tools" \
      nvidia-cuda-cuobjdump==13.5.37 || echo "setup: warning: could not install cuobjdump (cuda.build_report will say so)"
  fi
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
