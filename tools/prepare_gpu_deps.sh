#!/usr/bin/env bash
# Fills .gpu-deps/ (git-ignored) with the build dependencies that a GPU check machine may lack, so
# bench/gpu/check.sh can build there without network: the machine has CUDA, cmake, ninja, a C++
# compiler and Python, but not necessarily nlohmann-json, CLI11, GoogleTest, PCRE2, utf8proc or zlib
# development files, nor pkg-config. They are copied from this Debian 12 machine's packages
# (tools/setup.sh installs them), keeping Debian's layout under .gpu-deps/ (include/,
# lib/x86_64-linux-gnu/, share/cmake/) so their CMake config files, which locate everything
# relative to themselves, work unchanged there; pkg-config files are rewritten to be relative to
# their own folder (${pcfiledir}). Debian 12's libraries need glibc 2.36, which newer systems have.
#
# Usage: tools/prepare_gpu_deps.sh        (then carry .gpu-deps with the device run)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/.gpu-deps
arch=x86_64-linux-gnu
sys=/usr/lib/$arch

need() { [[ -e $1 ]] || { echo "prepare_gpu_deps: $1 is missing (run tools/setup.sh)" >&2; exit 1; }; }
for f in /usr/include/nlohmann/json.hpp /usr/include/CLI/CLI.hpp /usr/include/gtest/gtest.h /usr/include/pcre2.h \
         /usr/include/utf8proc.h /usr/include/zlib.h "$sys/libgtest.a" "$sys/libgmock.a" /usr/include/gmock \
         "$sys/cmake/GTest/GTestConfig.cmake" \
         /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$sys/libpcre2-8.so" "$sys/libutf8proc.so" \
         "$sys/libz.so" /usr/bin/pkgconf "$sys/libpkgconf.so.3"; do
  need "$f"
done

rm -rf "$out"
mkdir -p "$out/include" "$out/lib/$arch/pkgconfig" "$out/lib/$arch/cmake" "$out/share/cmake" "$out/bin"

# Headers.
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/gtest /usr/include/gmock "$out/include/"
cp /usr/include/pcre2.h /usr/include/utf8proc.h /usr/include/zlib.h /usr/include/zconf.h "$out/include/"

# CMake packages.
cp -r "$sys/cmake/GTest" "$out/lib/$arch/cmake/"
# GTestConfig also loads GMockTargets, which checks that the gmock archives exist.
cp "$sys/libgtest.a" "$sys/libgtest_main.a" "$sys/libgmock.a" "$sys/libgmock_main.a" "$out/lib/$arch/"
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$out/share/cmake/"

# Shared libraries: the real file under its soname, plus the unversioned link name for the linker.
for lib in libpcre2-8 libutf8proc libz; do
  real=$(readlink -f "$sys/$lib.so")
  soname=$(objdump -p "$real" | awk '/SONAME/ {print $2}')
  cp "$real" "$out/lib/$arch/$soname"
  ln -sf "$soname" "$out/lib/$arch/$lib.so"
done

# pkg-config files, relocatable.
for pc in libpcre2-8 libutf8proc zlib; do
  sed -e 's|^prefix=.*|prefix=${pcfiledir}/../../..|' "$sys/pkgconfig/$pc.pc" > "$out/lib/$arch/pkgconfig/$pc.pc"
done

# pkg-config itself (pkgconf and its library), behind a wrapper that finds the library.
cp /usr/bin/pkgconf "$out/bin/pkgconf.real"
cp "$(readlink -f "$sys/libpkgconf.so.3")" "$out/lib/$arch/libpkgconf.so.3"
cat > "$out/bin/pkg-config" <<'EOF'
#!/bin/sh
here=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$here/../lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/pkgconf.real" "$@"
EOF
chmod +x "$out/bin/pkg-config"

# Self-check: the copied pkg-config resolves the copied .pc files.
PKG_CONFIG_PATH="$out/lib/$arch/pkgconfig" PKG_CONFIG_LIBDIR="$out/lib/$arch/pkgconfig" \
  "$out/bin/pkg-config" --cflags --libs libpcre2-8 libutf8proc zlib >/dev/null

echo "prepare_gpu_deps: $(du -sh "$out" | cut -f1) in $out"
