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

nlohmann::json OutputFormat::to_json() const {
  return {{"png", png}, {"archive", archive}, {"canvas_width", canvas_width}, {"canvas_height", canvas_height},
          {"gzip_level", gzip_level}, {"model_name", model_name}, {"model_hash", model_hash}, {"version", version},
          {"model_family", model_family}, {"refiner", refiner}};
}

OutputFormat OutputFormat::from_json(const nlohmann::json& j) {
  OutputFormat f;
  f.png = j.at("png");
  f.archive = j.at("archive");
  f.canvas_width = j.at("canvas_width");
  f.canvas_height = j.at("canvas_height");
  f.gzip_level = j.at("gzip_level");
  f.model_name = j.at("model_name");
  f.model_hash = j.at("model_hash");
  f.version = j.at("version");
  f.model_family = j.value("model_family", "");
  f.refiner = j.value("refiner", "");
  return f;
}

void OutputFormat::encode(const WorkItem& item, ImageResult& r) const {
  if (!r.ok || r.rgb.empty()) return;
  if (png)
    r.png = encode_png(r.rgb.data(), r.width, r.height, a1111_parameters(item.params, model_name, model_hash, version, model_family, refiner), 6,
                       "of item " + std::to_string(item.index));
  if (archive)
    r.archive_chunk = encode_archive_chunk(r.rgb.data(), r.width, r.height, canvas_width, canvas_height, gzip_level);
  r.rgb.clear();
  r.rgb.shrink_to_fit();
}

OutputSink::OutputSink(const Setup& setup, const std::vector<WorkItem>& items) : setup_(setup) {
  std::set<int64_t> finished;
  if (!setup.archive_path.empty()) {
    bool exists = fs::exists(setup.archive_path);
    if (exists && setup.resume) {
      // Weights changed or truncated since the archive was made (the common "another job"): say
      // so, naming the model, rather than only that the fingerprints differ.
      const ArchiveInfo made_with = ArchiveReader(setup.archive_path).info();
      if (made_with.fingerprint != setup.fingerprint && !made_with.weights_hash.empty() &&
          made_with.weights_hash != setup.weights_hash)
        throw InputError("archive " + setup.archive_path + " belongs to another job: the weights of " + setup.model_spec +
                         " changed since it was made (weights hash " + made_with.weights_hash.substr(0, 16) +
                         ", now " + setup.weights_hash.substr(0, 16) + "); restore them to resume");
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

  format_.png = !setup.out_dir.empty();
  format_.archive = archive_.has_value();
  if (archive_) {
    format_.canvas_width = archive_->info().canvas_width;
    format_.canvas_height = archive_->info().canvas_height;
    format_.gzip_level = archive_->info().gzip_level;
  }
  format_.model_name = setup.model_name;
  format_.model_family = setup.model_family;
  format_.refiner = setup.refiner;
  // A1111's "Model hash" is the first 10 hex digits of the weights' SHA-256 (none for built-ins).
  bool hex = !setup.weights_hash.empty() && setup.weights_hash.find(':') == std::string::npos;
  format_.model_hash = hex ? setup.weights_hash.substr(0, 10) : "";
  format_.version = std::string("sd_mpi ") + SDMPI_VERSION;
}

OutputSink::~OutputSink() = default;

void OutputSink::write(const WorkItem& item, const ImageResult& r) {
  if (r.ok) {
    // Normally the generating rank encoded both (OutputFormat::encode); raw pixels still work.
    if (format_.png) {
      std::string path = png_file_name(setup_.out_dir, item.index);
      if (!r.png.empty()) write_file_atomic(path, r.png);
      else write_png(path, r.rgb.data(), r.width, r.height,
                     a1111_parameters(item.params, format_.model_name, format_.model_hash, format_.version,
                                      format_.model_family, format_.refiner));
    }
    if (archive_) {
      if (!r.archive_chunk.empty()) archive_->write_encoded_image(item.index, r.archive_chunk, r.width, r.height);
      else archive_->write_image(item.index, r.rgb.data(), r.width, r.height);
    }
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
