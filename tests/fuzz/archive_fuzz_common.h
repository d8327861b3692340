// What the two archive fuzz targets share: small valid archives written with ArchiveWriter (the
// states a job leaves them in), and reading one file as sd_mpi does (inspect, --resume, merge).
//
// archive_fuzz mutates an archive's bytes (so most inputs break libhdf5's own metadata parsing);
// archive_struct_fuzz mutates its contents through the HDF5 API (so the metadata stays valid and
// only our reader's validation is under test). Both call read_like_sd_mpi on the result.
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "sdmpi/archive.h"
#include "sdmpi/error.h"

namespace sdmpi_fuzz {

// libhdf5 takes its per-file metadata cache (over half a MiB) and other buffers from its own free
// lists, which by default hand blocks above a small limit back to malloc at once. Under ASan each
// such block is then a fresh mmap, page faults, a memset and an munmap, every time a file is
// opened or created: perf showed that as most of these targets' time. Without limits libhdf5
// reuses its blocks; only its memory reuse changes, not what our reader is asked to do.
inline void reuse_hdf5_free_lists() {
  if (H5set_free_list_limits(-1, -1, -1, -1, -1, -1) < 0) {
    std::fprintf(stderr, "H5set_free_list_limits failed\n");
    std::abort();
  }
}

// n rows of shard `shard_index` of `shard_count` (global index = shard_index + shard_count * i).
inline std::vector<sdmpi::WorkItem> seed_rows(int n, int shard_index, int shard_count, int width, int height) {
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

// One valid archive as a job leaves it: `rows` rows, `done` finished then `failed` failed ones.
struct ArchiveCase {
  const char* name;
  int rows, gzip, done, failed, shard_index, shard_count;
};
// valid_all_done is a whole job (shard 0/1), which merge accepts; the others are shard 1 of 2.
inline const std::vector<ArchiveCase>& archive_cases() {
  static const std::vector<ArchiveCase> cases = {ArchiveCase{"valid_mixed.h5", 3, 4, 1, 1, 1, 2},
                                                 ArchiveCase{"valid_all_done.h5", 2, 0, 2, 0, 0, 1},
                                                 ArchiveCase{"valid_pending.h5", 1, 1, 0, 0, 1, 2}};
  return cases;
}

inline void write_archive(const std::filesystem::path& path, const ArchiveCase& c) {
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

// Reads `path` as each command would: ArchiveReader (the whole layout check, every row, the image
// of every finished row), describe_archive (inspect), merge_archives of the one shard into
// `merged`, and ArchiveWriter::open_existing with the archive's own fingerprint (resume: may
// repair the file in place; callers pass a scratch copy). Asserted: a usable archive or an
// sdmpi::Error; find_row and the image sizes agree with the rows.
inline void read_like_sd_mpi(const std::string& path, const std::string& merged) {
  std::string fingerprint;
  try {
    sdmpi::ArchiveReader reader(path);
    fingerprint = reader.info().fingerprint;
    for (size_t r = 0; r < reader.rows().size(); ++r) {
      const auto& row = reader.rows()[r];
      if (reader.find_row(row.item.index) != r) __builtin_trap();
      if (row.status != sdmpi::RowStatus::Done) continue;
      const auto rgb = reader.read_image(r);
      if (rgb.size() != static_cast<size_t>(row.item.params.width) * row.item.params.height * 3) __builtin_trap();
    }
  } catch (const sdmpi::Error&) {
    return;  // the reader refused it: so must everything else, but that is their business
  }
  try {
    (void)sdmpi::describe_archive(path);
  } catch (const sdmpi::Error&) {
  }
  try {
    sdmpi::MergeOptions options;
    options.allow_incomplete = true;
    options.overwrite = true;
    (void)sdmpi::merge_archives(merged, {path}, options);
  } catch (const sdmpi::Error&) {
  }
  try {
    auto writer = sdmpi::ArchiveWriter::open_existing(path, fingerprint);
    (void)writer.done_indices();
    writer.close();
  } catch (const sdmpi::Error&) {
  }
}

}  // namespace sdmpi_fuzz
