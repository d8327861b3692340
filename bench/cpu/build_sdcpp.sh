#!/usr/bin/env bash
# Builds stable-diffusion.cpp's command-line tool (sd-cli) for THIS CPU, as the third engine of
# bench/cpu/run_e2e.sh. The source is the one PyPI ships inside stable-diffusion-cpp-python's
# source distribution (vendor/stable-diffusion.cpp), pinned by version and sha256, so a rerun a
# year from now builds the same sd.cpp. We build the CLI rather than the Python wheel: the CLI
# needs only cmake and a C++ compiler (no scikit-build / pip build isolation, which wants network
# access), and its log times each component (text encoder, sampling, VAE decode) by itself.
#   bench/cpu/build_sdcpp.sh            -> prints the path of sd-cli (built once, then reused)
# Everything lands in .bench-deps/ (git-ignored); set BENCH_DEPS to put it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=0.4.7
SHA256=998d1957260dd5ae4e18a8acc0c14b0a8757aaa9f96515197b6d5bbf46df9282
DEPS=${BENCH_DEPS:-$PWD/.bench-deps}
SDIST=$DEPS/stable_diffusion_cpp_python-$VERSION.tar.gz
SRC=$DEPS/stable_diffusion_cpp_python-$VERSION/vendor/stable-diffusion.cpp
BUILD_DIR=$DEPS/sdcpp-$VERSION-build
CLI=$BUILD_DIR/bin/sd-cli
mkdir -p "$DEPS"
if [ ! -x "$CLI" ]; then
  if [ ! -f "$SDIST" ]; then
    PIP=${PIP:-pip}
    (cd "$DEPS" && $PIP download --no-binary :all: --no-deps "stable-diffusion-cpp-python==$VERSION" >&2)
  fi
  echo "$SHA256  $SDIST" | sha256sum --check --quiet - ||
    { echo "build_sdcpp.sh: $SDIST: sha256 differs from the pinned $SHA256" >&2; exit 1; }
  [ -d "$SRC" ] || tar -xzf "$SDIST" -C "$DEPS"
  # GGML_NATIVE: -march=native, so ggml's CPU kernels use what this machine has (AVX2/AVX-512...).
  # WebP/WebM off: image formats the benchmark does not need, fewer sources to build.
  cmake -S "$SRC" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DSD_WEBP=OFF -DSD_WEBM=OFF -DSD_BUILD_SHARED_LIBS=OFF >&2
  nice -n 10 cmake --build "$BUILD_DIR" -j"$(nproc)" --target sd-cli >&2
fi
[ -x "$CLI" ] || { echo "build_sdcpp.sh: $CLI was not built" >&2; exit 1; }
echo "$CLI"
