#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run) and as the README's second command:
#   1. installs what the build and tests need (tools/setup.sh --slurm; nothing if present)
#   2. builds the main tree (build/: CPU + CUDA compile-only + MPI + HDF5 + PNG), our C++ warning-free
#      (-Wall -Wextra -Werror with GCC here and clang in the sanitizer tree)
#   3. builds the sanitizer tree (build-asan/: clang, ASan+UBSan, libFuzzer targets, the CPU path
#      without MPI, whose plugins LeakSanitizer cannot attribute; MPI is tested in build/). It builds
#      what its tests run: the libraries, unit tests and fuzzers, not sd_mpi itself (no test of that
#      tree runs it), with line tables only for the reports' file:line (full -g cost ~10% of its
#      compile time and nothing in a sanitizer report uses it)
#   4. runs ctest on build/, which also runs the sanitizer tree's unit tests and every fuzz
#      target for a bounded time (tests/sanitize.cmake). ctest's summary is the last output.
# Options: JOBS (default: nproc), FUZZ_SECONDS (default 12 per target), SKIP_ASAN=1,
# OMP_WAIT_POLICY (default passive, see below).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
export FUZZ_SECONDS=${FUZZ_SECONDS:-12}

started=$SECONDS
phase() { echo "run_tests: $1 after $((SECONDS - started)) s"; }

tools/setup.sh --slurm
phase "packages ready"

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSDMPI_WERROR=ON -DSDMPI_ASAN_BUILD_DIR="$PWD/build-asan" >/dev/null
cmake --build build -j"$JOBS"
phase "build/ built"

if [ "${SKIP_ASAN:-0}" != 1 ]; then
  CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSDMPI_WITH_CUDA=OFF -DSDMPI_WITH_MPI=OFF -DSDMPI_SANITIZE=ON -DSDMPI_FUZZ=ON -DSDMPI_BUILD_BENCH=OFF \
    -DSDMPI_BUILD_APP=OFF -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -gline-tables-only -DNDEBUG" \
    -DSDMPI_WERROR=ON >/dev/null
  cmake --build build-asan -j"$JOBS"
  phase "build-asan/ built"
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# ctest runs JOBS tests at once, each with nproc OpenMP threads (and the sanitizer tree's tests
# nested inside one of them): the cores are oversubscribed, and libgomp's default spin-waiting at
# every barrier then burns the time slices the other tests need (a golden test took 2x as long
# beside two busy processes). Threads that sleep at barriers change no bit: the work split depends
# on the shape only.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir build --output-on-failure -j"$JOBS" --timeout 1200
