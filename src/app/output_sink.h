// Rank 0's outputs: PNG files named by global index (with AUTOMATIC1111-style parameters) and/or
// the HDF5 archive. Each image is persisted and flushed before the next message is read, so a
// crash loses only images still in flight. Resume: the archive's finished rows (or, without an
// archive, the PNG files present) are skipped.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sdmpi/archive.h"
#include "sdmpi/cluster.h"
#include "sdmpi/png.h"

namespace sdmpi::app {

// How finished images are encoded. Every rank holds the same one (rank 0 decides it from the
// archive and shares it), so generating ranks encode PNG files and archive rows themselves and
// rank 0 only writes bytes: rank 0 then keeps up with hundreds of images per second.
struct OutputFormat {
  bool png = false, archive = false;
  int canvas_width = 0, canvas_height = 0, gzip_level = 4;  // the archive's /images rows
  std::string model_name, model_hash, version, model_family;  // for the PNG parameters text
  std::string refiner;  // --refiner as A1111 writes it, "name [hash]" ("" = none)
  nlohmann::json to_json() const;
  static OutputFormat from_json(const nlohmann::json& j);
  // Encodes r's outputs (r.png, r.archive_chunk) from r.rgb, then drops r.rgb.
  void encode(const WorkItem& item, ImageResult& r) const;
};

class OutputSink : public ResultSink {
 public:
  struct Setup {
    std::string archive_path, out_dir;
    bool resume = false, overwrite = false;
    std::string model_spec, model_name, model_family, weights_hash, config_json, fingerprint;
    std::string refiner;  // "name [hash]" of --refiner, for the PNG parameters ("" = none)
    int world_size = 1, shard_index = 0, shard_count = 1;
    int64_t total_items = 0;
  };
  // Creates or reopens the outputs for `items` (this shard's items, in index order). Throws
  // InputError when the archive exists without --resume/--overwrite, belongs to another job, or
  // PNG files would be overwritten.
  OutputSink(const Setup& setup, const std::vector<WorkItem>& items);
  ~OutputSink() override;

  // Global indices still to make, in order.
  const std::vector<int64_t>& todo() const { return todo_; }
  // The encoding the generating ranks must use (the archive's canvas and gzip level).
  const OutputFormat& format() const { return format_; }
  void write(const WorkItem& item, const ImageResult& result) override;
  void close();

 private:
  Setup setup_;
  std::optional<ArchiveWriter> archive_;
  std::vector<int64_t> todo_;
  OutputFormat format_;
};

std::string png_file_name(const std::string& out_dir, int64_t index);

}  // namespace sdmpi::app
