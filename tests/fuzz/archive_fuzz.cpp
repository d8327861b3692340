// libFuzzer target for the HDF5 archive reader behind `sd_mpi inspect`, --resume and merge.
//
// Each input is written to a scratch file and read as each of those would read it: ArchiveReader
// (the whole version-1 layout check, every row, the image of every finished row), describe_archive
// (inspect), ArchiveWriter::open_existing with the archive's own fingerprint (resume: may repair
// the file in place, it is a scratch copy) and merge_archives of the one shard into a second file.
// Asserted: a usable archive or an sdmpi::Error (InputError names the dataset or attribute), never
// a crash, leak, hang or sanitizer report. libhdf5 itself is not instrumented: coverage counts
// our code only, and a crash inside libhdf5 on a corrupt file is documented in
// tests/data/malformed/README.md rather than fixed here. Byte-level mutation mostly tests
// libhdf5's metadata parsing; archive_struct_fuzz is the structure-aware sibling that keeps the
// HDF5 metadata valid and changes only the archive's contents (our reader's validation).
//
// Seeds: tests/data/malformed/archive/ (valid small archives whose bytes the fuzzer mutates, and a
// few broken ones), written by this binary itself: `SDMPI_ARCHIVE_SEEDS=DIR archive_fuzz` writes
// them with ArchiveWriter and exits (tests/data/malformed/archive/make_seeds.sh runs it).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "archive_fuzz_common.h"
#include "fuzz_files.h"
#include "sdmpi/archive.h"
#include "sdmpi/error.h"

namespace fs = std::filesystem;

namespace {

// Small archives in the states a job leaves them in (archive_fuzz_common.h), and two broken ones.
void write_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  for (const auto& c : sdmpi_fuzz::archive_cases()) sdmpi_fuzz::write_archive(dir / c.name, c);
  // Not HDF5 at all, and an HDF5 signature with nothing behind it.
  sdmpi_fuzz::write_bytes(dir / "not_hdf5.h5", "GIF89a not an archive\n");
  sdmpi_fuzz::write_bytes(dir / "signature_only.h5", std::string("\x89HDF\r\n\x1a\n", 8));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sdmpi_fuzz::reuse_hdf5_free_lists();
  if (const char* dir = std::getenv("SDMPI_ARCHIVE_SEEDS")) {
    write_seeds(dir);
    std::printf("archive seeds written to %s\n", dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path scratch = sdmpi_fuzz::scratch_dir("archive");
  const fs::path path = scratch / "in.h5", merged = scratch / "merged.h5";
  sdmpi_fuzz::write_bytes(path, std::string(reinterpret_cast<const char*>(data), size));
  sdmpi_fuzz::read_like_sd_mpi(path.string(), merged.string());
  return 0;
}
