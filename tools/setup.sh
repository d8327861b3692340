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
  libpng-dev zlib1g-dev
  libopenblas-dev
  nlohmann-json3-dev libcli11-dev
  libpcre2-dev libutf8proc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev
  libssl-dev
  python3-h5py python3-numpy python3-pil
)
[[ " $* " == *" --slurm "* ]] && packages+=(slurm-wlm munge)

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
