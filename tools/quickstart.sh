#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, install what sd_mpi needs, build it,
# and run the main job (the example prompts on 2 MPI ranks) with the built-in tiny model.
# Output: out/quickstart/*.png and out/quickstart/images.h5.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
if [ "$(id -u)" -eq 0 ]; then  # Open MPI refuses root unless told
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
rm -rf out/quickstart
mpirun -np 2 build/sd_mpi generate --model tiny --prompts jobs/examples/prompts.txt --images-per-prompt 2 \
  --steps 20 --seed 42 --out-dir out/quickstart --archive out/quickstart/images.h5
build/sd_mpi inspect out/quickstart/images.h5
echo "quickstart: images in out/quickstart/ (PNG files and the HDF5 archive)"
