#include "app/output_sink.h"

#include <filesystem>
#include <set>

#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "sdmpi/version.h"

namespace sdmpi::app {
namespace fs = std::filesystem;

std::string png_file_name(const std::string& out_dir, int64_t index) {
  char name[40];
  std::snprintf(name, sizeof name, "%06lld.png", static_cast<long long>(index));
  return (fs::path(out_dir) / name).string();
}

OutputSink::OutputSink(const Setup& setup, const std::vector<WorkItem>& items) : setup_(setup) {
  std::set<int64_t> finished;
  if (!setup.archive_path.empty()) {
    bool exists = fs::exists(setup.archive_path);
    if (exists && setup.resume) {
      archive_.emplace(ArchiveWriter::open_existing(setup.archive_path, setup.fingerprint));
      for (int64_t i : archive_->done_indices()) finished.insert(i);
    } else {
      if (exists && !setup.overwrite)
        throw InputError("archive " + setup.archive_path + " exists: pass --resume to continue it or --overwrite to replace it");
      ArchiveInfo info;
      info.model_path = setup.model_spec;
      info.weights_hash = setup.weights_hash;
      info.config_json = setup.config_json;
      info.fingerprint = setup.fingerprint;
      info.world_size = setup.world_size;
      info.shard_index = setup.shard_index;
      info.shard_count = setup.shard_count;
      info.total_items = setup.total_items;
      ArchiveOptions opt;
      opt.overwrite = setup.overwrite;
      archive_.emplace(ArchiveWriter::create(setup.archive_path, items, info, opt));
    }
  }
  if (!setup.out_dir.empty() && !archive_) {
    // Without an archive, the PNG files are the record: finished ones are skipped on resume and
    // never overwritten silently.
    for (const WorkItem& it : items) {
      if (!fs::exists(png_file_name(setup.out_dir, it.index))) continue;
      if (setup.resume) finished.insert(it.index);
      else if (!setup.overwrite)
        throw InputError(png_file_name(setup.out_dir, it.index) +
                         " exists: pass --resume to skip finished images or --overwrite to replace them");
    }
  }
  for (const WorkItem& it : items)
    if (!finished.count(it.index)) todo_.push_back(it.index);
}

OutputSink::~OutputSink() = default;

void OutputSink::write(const WorkItem& item, const ImageResult& r) {
  if (r.ok) {
    if (!setup_.out_dir.empty()) {
      // A1111's "Model hash" is the first 10 hex digits of the weights' SHA-256 (none for built-ins).
      bool hex = !setup_.weights_hash.empty() && setup_.weights_hash.find(':') == std::string::npos;
      std::string params = a1111_parameters(item.params, setup_.model_name, hex ? setup_.weights_hash.substr(0, 10) : "",
                                            std::string("sd_mpi ") + SDMPI_VERSION);
      write_png(png_file_name(setup_.out_dir, item.index), r.rgb.data(), r.width, r.height, params);
    }
    if (archive_) archive_->write_image(item.index, r.rgb.data(), r.width, r.height);
  } else if (archive_) {
    archive_->mark_failed(item.index, r.error);
  }
}

void OutputSink::close() {
  if (archive_) {
    archive_->close();
    archive_.reset();
  }
}

}  // namespace sdmpi::app
