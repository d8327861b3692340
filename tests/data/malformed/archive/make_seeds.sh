#!/bin/bash
# Writes the seeds of tests/fuzz/archive_fuzz.cpp into this folder: small archives written by our own
# ArchiveWriter (done, failed and pending rows; gzip and stored images; a whole job and a shard),
# plus a non-HDF5 file and a bare HDF5 signature. The fuzz binary writes them itself (it links the
# writer; no h5py needed):
#
#   tests/data/malformed/archive/make_seeds.sh BUILD_DIR      (a build with -DSDMPI_FUZZ=ON)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=$(find "$1" -type f -name archive_fuzz -perm -u+x | head -n 1)
[ -n "$bin" ] || { echo "make_seeds.sh: no archive_fuzz under $1" >&2; exit 2; }
rm -f "$here"/*.h5
SDMPI_ARCHIVE_SEEDS="$here" "$bin"
ls -l "$here"/*.h5
