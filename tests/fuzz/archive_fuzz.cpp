// libFuzzer target for the HDF5 archive reader behind `sd_mpi inspect`, --resume and merge.
//
// Each input is written to a scratch file and read as each of those would read it: ArchiveReader
// (the whole version-1 layout check, every row, the image of every finished row), describe_archive
// (inspect), ArchiveWriter::open_existing with the archive's own fingerprint (resume: may repair
// the file in place, it is a scratch copy) and merge_archives of the one shard into a second file.
// Asserted: a usable archive or an sdmpi::Error (InputError names the dataset or attribute), never
// a crash, leak, hang or sanitizer report. libhdf5 itself is not instrumented: coverage counts
// our code only, and a crash inside libhdf5 on a corrupt file is documented in
// tests/data/malformed/README.md rather than fixed here.
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

#include "fuzz_files.h"
#include "sdmpi/archive.h"
#include "sdmpi/error.h"

namespace fs = std::filesystem;

namespace {

// n rows of shard `shard_index` of `shard_count` (global index = shard_index + shard_count * i).
std::vector<sdmpi::WorkItem> seed_rows(int n, int shard_index, int shard_count, int width, int height) {
  std::vector<sdmpi::WorkItem> rows;
  for (int i = 0; i < n; ++i) {
    sdmpi::WorkItem w;
    w.index = shard_index + static_cast<int64_t>(shard_count) * i;
    w.prompt_index = i;
    w.params.prompt = i % 2 ? "a red cube, \xc3\xa9t\xc3\xa9" : "";
    w.params.negative_prompt = "blurry";
    w.params.seed = i ? (1ull << 63) + i : 42;  // a seed that reads back negative
    w.params.steps = 2 + i;
    w.params.width = width - 8 * (i % 2);
    w.params.height = height;
    w.params.sampler = i % 2 ? "euler_a" : "ddim";
    rows.push_back(w);
  }
  return rows;
}

// Small archives in the states a job leaves them in: done, failed and pending rows, gzip or stored.
void write_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  struct Case {
    const char* name;
    int rows, gzip, done, failed, shard_index, shard_count;
  };
  // valid_all_done is a whole job (shard 0/1), which merge accepts; the others are shard 1 of 2.
  for (const Case& c : {Case{"valid_mixed.h5", 3, 4, 1, 1, 1, 2}, Case{"valid_all_done.h5", 2, 0, 2, 0, 0, 1},
                        Case{"valid_pending.h5", 1, 1, 0, 0, 1, 2}}) {
    const fs::path path = dir / c.name;
    sdmpi::ArchiveInfo info;
    info.model_path = "./tiny";
    info.weights_hash = "0123abcd";
    info.config_json = "{\"steps\": 2}";
    info.fingerprint = "fuzz-seed";
    info.world_size = c.shard_count;
    info.shard_index = c.shard_index;
    info.shard_count = c.shard_count;
    info.total_items = static_cast<int64_t>(c.shard_count) * c.rows;
    sdmpi::ArchiveOptions options;
    options.overwrite = true;
    options.gzip_level = c.gzip;
    const auto rows = seed_rows(c.rows, c.shard_index, c.shard_count, 16, 8);
    auto writer = sdmpi::ArchiveWriter::create(path.string(), rows, info, options);
    for (int i = 0; i < c.done; ++i) {
      const auto& p = rows[i].params;
      std::vector<uint8_t> rgb(static_cast<size_t>(p.width) * p.height * 3);
      for (size_t k = 0; k < rgb.size(); ++k) rgb[k] = static_cast<uint8_t>(k * 7 + i);
      writer.write_image(rows[i].index, rgb.data(), p.width, p.height);
    }
    for (int i = c.done; i < c.done + c.failed; ++i) writer.mark_failed(rows[i].index, "NaN in the latents");
    writer.close();
  }
  // Not HDF5 at all, and an HDF5 signature with nothing behind it.
  sdmpi_fuzz::write_bytes(dir / "not_hdf5.h5", "GIF89a not an archive\n");
  sdmpi_fuzz::write_bytes(dir / "signature_only.h5", std::string("\x89HDF\r\n\x1a\n", 8));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
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
  std::string fingerprint;
  try {
    sdmpi::ArchiveReader reader(path.string());
    fingerprint = reader.info().fingerprint;
    for (size_t r = 0; r < reader.rows().size(); ++r) {
      const auto& row = reader.rows()[r];
      if (reader.find_row(row.item.index) != r) __builtin_trap();
      if (row.status != sdmpi::RowStatus::Done) continue;
      const auto rgb = reader.read_image(r);
      if (rgb.size() != static_cast<size_t>(row.item.params.width) * row.item.params.height * 3) __builtin_trap();
    }
  } catch (const sdmpi::Error&) {
    return 0;  // the reader refused it: so must everything else, but that is their business
  }
  try {
    (void)sdmpi::describe_archive(path.string());
  } catch (const sdmpi::Error&) {
  }
  try {
    sdmpi::MergeOptions options;
    options.allow_incomplete = true;
    options.overwrite = true;
    (void)sdmpi::merge_archives(merged.string(), {path.string()}, options);
  } catch (const sdmpi::Error&) {
  }
  try {
    auto writer = sdmpi::ArchiveWriter::open_existing(path.string(), fingerprint);
    (void)writer.done_indices();
    writer.close();
  } catch (const sdmpi::Error&) {
  }
  return 0;
}
