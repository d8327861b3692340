#!/usr/bin/env bash
# The README's first command: on a fresh Debian 12 machine, install what sd_mpi needs, build it,
# and run the main job on 2 MPI ranks with the built-in demo model (a small SD 1.x pipeline trained
# on captioned shapes, tools/demo_model/), whose pictures show whether they match their prompts.
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
prompts=tools/demo_model/prompts.txt
# The demo model's own steps, sampler and guidance apply (40 Euler a steps at 2.5; src/pipeline/demo_model.h).
mpirun -np 2 build/sd_mpi generate --model demo --prompts "$prompts" --images-per-prompt 2 \
  --seed 42 --width 64 --height 64 --out-dir out/quickstart --archive out/quickstart/images.h5
build/sd_mpi inspect out/quickstart/images.h5
echo
echo "quickstart: $(ls out/quickstart/*.png | wc -l) images (64x64) of the prompts in $prompts, 2 per prompt in order:"
echo "  $(pwd)/out/quickstart/000000.png ... $(ls out/quickstart/*.png | tail -1 | xargs basename)"
echo "  and the same images with their prompts and seeds in $(pwd)/out/quickstart/images.h5"
