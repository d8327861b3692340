// merge_archives and describe_archive: joining the shard archives of one job, and the summary that
// `sd_mpi inspect` prints.
//
// Merging rebuilds the output through ArchiveWriter from the rows and images of the inputs, so the
// result is exactly what a single-process run of the job writes (rows ordered by global index,
// canvas = the largest row, the inputs' gzip level): only root attributes such as created, shard
// and merged_from tell them apart. Coverage is checked before anything is written.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/archive_h5.h"
#include "sdmpi/archive.h"

namespace sdmpi {

namespace {

struct Slot {
  int64_t index;
  size_t input;
  size_t row;
};

// "3, 17, 18" for the first few values.
std::string first_few(const std::vector<int64_t>& values, size_t limit = 5) {
  std::string out;
  for (size_t i = 0; i < values.size() && i < limit; ++i) {
    if (i) out += ", ";
    out += std::to_string(values[i]);
  }
  if (values.size() > limit) out += ", ...";
  return out;
}

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

}  // namespace

MergeSummary merge_archives(const std::string& out, const std::vector<std::string>& inputs,
                            const MergeOptions& options) {
  h5::quiet();
  const std::string ctx = "archive " + out;
  if (inputs.empty()) throw InputError("merge: no input archives given");
  for (const std::string& in : inputs)
    if (in == out || same_file(in, out)) throw InputError("merge: the output " + out + " is also an input");
  if (!options.overwrite && h5::path_exists(out)) throw Error(ctx + " already exists: remove it first");

  std::vector<ArchiveReader> readers;
  readers.reserve(inputs.size());
  for (const std::string& in : inputs) readers.emplace_back(in);
  const ArchiveInfo& ref = readers[0].info();
  for (size_t k = 1; k < readers.size(); ++k) {
    const ArchiveInfo& info = readers[k].info();
    if (info.fingerprint != ref.fingerprint)
      throw InputError("archive " + inputs[k] + " belongs to another job: fingerprint " + info.fingerprint + ", " +
                       inputs[0] + " has " + ref.fingerprint);
    if (info.total_items != ref.total_items)
      throw InputError("archive " + inputs[k] + " says the job has " + std::to_string(info.total_items) + " items, " +
                       inputs[0] + " says " + std::to_string(ref.total_items));
    if (info.weights_hash != ref.weights_hash)
      throw InputError("archive " + inputs[k] + " was made with other weights (" + info.weights_hash + ") than " +
                       inputs[0] + " (" + ref.weights_hash + ")");
  }

  // Every global index 0..total-1 exactly once across the inputs.
  std::vector<Slot> slots;
  for (size_t k = 0; k < readers.size(); ++k)
    for (size_t r = 0; r < readers[k].rows().size(); ++r) slots.push_back({readers[k].rows()[r].item.index, k, r});
  std::stable_sort(slots.begin(), slots.end(), [](const Slot& a, const Slot& b) { return a.index < b.index; });
  std::vector<int64_t> duplicated, missing;
  int64_t missing_count = 0;
  std::string first_duplicate;
  int64_t expected = 0;
  // Items [from, to) are missing: counted, not walked (a damaged total_items can be 2^62).
  auto add_missing = [&](int64_t from, int64_t to) {
    if (to <= from) return;
    missing_count += to - from;
    for (int64_t item = from; item < to && missing.size() < 6; ++item) missing.push_back(item);
  };
  for (size_t i = 0; i < slots.size(); ++i) {
    if (i > 0 && slots[i].index == slots[i - 1].index) {
      if (duplicated.empty() || duplicated.back() != slots[i].index) duplicated.push_back(slots[i].index);
      if (first_duplicate.empty())
        first_duplicate = " (item " + std::to_string(slots[i].index) + " is in " + inputs[slots[i - 1].input] +
                          " and " + inputs[slots[i].input] + ")";
      continue;
    }
    add_missing(expected, slots[i].index);
    expected = slots[i].index + 1;
  }
  add_missing(expected, ref.total_items);
  if (missing_count > 0 || !duplicated.empty()) {
    std::string msg = "merge: the inputs do not hold every item of the job exactly once:";
    if (missing_count > 0) {
      msg += ' ';
      msg += std::to_string(missing_count);
      msg += " of " + std::to_string(ref.total_items) + " items missing (" + first_few(missing) + ")";
    }
    if (!duplicated.empty()) {
      if (missing_count > 0) msg += ';';
      msg += ' ';
      msg += std::to_string(duplicated.size());
      msg += " items present more than once (" + first_few(duplicated) + ")" + first_duplicate;
    }
    throw InputError(msg);
  }

  MergeSummary summary;
  summary.rows = static_cast<int64_t>(slots.size());
  std::vector<int64_t> unfinished;
  for (const Slot& s : slots) {
    const RowStatus st = readers[s.input].rows()[s.row].status;
    if (st == RowStatus::Done) {
      ++summary.done;
      continue;
    }
    (st == RowStatus::Failed ? summary.failed : summary.pending)++;
    unfinished.push_back(s.index);
  }
  if (!unfinished.empty() && !options.allow_incomplete)
    throw InputError("merge: " + std::to_string(unfinished.size()) + " items are not finished (" +
                     std::to_string(summary.pending) + " pending, " + std::to_string(summary.failed) +
                     " failed; first: " + first_few(unfinished) +
                     "); resume their shards, or merge anyway allowing incomplete archives");

  std::vector<WorkItem> rows;
  rows.reserve(slots.size());
  for (const Slot& s : slots) rows.push_back(readers[s.input].rows()[s.row].item);

  ArchiveInfo info;
  info.model_path = ref.model_path;
  info.weights_hash = ref.weights_hash;
  info.config_json = ref.config_json;
  info.fingerprint = ref.fingerprint;
  info.total_items = ref.total_items;
  info.shard_index = 0;
  info.shard_count = 1;
  info.world_size = 1;
  nlohmann::json from = nlohmann::json::array();
  for (size_t k = 0; k < readers.size(); ++k) {
    const ArchiveInfo& in = readers[k].info();
    info.world_size = std::max(info.world_size, in.world_size);
    from.push_back({{"file", inputs[k]},
                    {"shard", std::to_string(in.shard_index) + "/" + std::to_string(in.shard_count)},
                    {"world_size", in.world_size},
                    {"rows", readers[k].rows().size()},
                    {"created", in.created}});
  }
  info.merged_from = from.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  ArchiveOptions wopts;
  wopts.overwrite = true;  // our own temporary name
  wopts.gzip_level = ref.gzip_level;
  wopts.flush_each_write = false;  // nothing to resume: the rename below is the commit
  const std::string tmp = out + ".merge-tmp-" + std::to_string(::getpid());
  try {
    ArchiveWriter writer = ArchiveWriter::create(tmp, rows, info, wopts);
    for (const Slot& s : slots) {
      const ArchiveRow& row = readers[s.input].rows()[s.row];
      if (row.status == RowStatus::Done) {
        const std::vector<uint8_t> rgb = readers[s.input].read_image(s.row);
        writer.write_image(s.index, rgb.data(), row.item.params.width, row.item.params.height);
      } else if (row.status == RowStatus::Failed) {
        writer.mark_failed(s.index, row.error);
      }
    }
    writer.close();
    h5::publish(tmp, out, options.overwrite, ctx);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  return summary;
}

namespace {
// The reader for `inspect`: a job still writing the archive holds its lock; then read a snapshot.
ArchiveReader open_for_summary(const std::string& path, bool* snapshot) {
  try {
    *snapshot = false;
    return ArchiveReader(path);
  } catch (const ArchiveLockedError&) {
    *snapshot = true;
    return ArchiveReader(path, ArchiveReader::Locking::Off);
  }
}
}  // namespace

std::string describe_archive(const std::string& path) {
  bool snapshot = false;
  ArchiveReader reader = open_for_summary(path, &snapshot);
  const ArchiveInfo& info = reader.info();
  int64_t done = 0, failed = 0, pending = 0;
  std::map<std::pair<int, int>, int64_t> sizes;
  std::vector<const ArchiveRow*> failures;
  for (const ArchiveRow& row : reader.rows()) {
    if (row.status == RowStatus::Done) ++done;
    else if (row.status == RowStatus::Failed) ++failed, failures.push_back(&row);
    else ++pending;
    ++sizes[{row.item.params.width, row.item.params.height}];
  }
  std::ostringstream os;
  os << "sd_mpi archive " << path << "\n";
  if (snapshot) os << "  note:      another process is writing this archive; this is a snapshot\n";
  os << "  format:    " << info.format << " version " << info.format_version << ", written by sd_mpi "
     << info.sd_mpi_version << " (commit " << info.git_commit << ")\n";
  os << "  created:   " << info.created << "\n";
  os << "  model:     " << info.model_path << " (weights " << (info.weights_hash.empty() ? "hash unknown" : info.weights_hash)
     << ")\n";
  os << "  job:       " << info.total_items << " items, fingerprint " << info.fingerprint << "\n";
  os << "  shard:     " << info.shard_index << "/" << info.shard_count << ", world size " << info.world_size;
  const auto merged = nlohmann::json::parse(info.merged_from, nullptr, false);
  if (merged.is_array() && !merged.empty()) os << ", merged from " << merged.size() << " archives";
  os << "\n";
  os << "  rows:      " << reader.rows().size() << " (done " << done << ", failed " << failed << ", pending " << pending
     << ")\n";
  os << "  images:    canvas " << info.canvas_width << "x" << info.canvas_height << ", gzip "
     << (info.gzip_level ? std::to_string(info.gzip_level) : std::string("off")) << "; sizes";
  bool first = true;
  for (const auto& [wh, count] : sizes) {
    os << (first ? " " : ", ") << wh.first << "x" << wh.second << " (" << count << " rows)";
    first = false;
  }
  if (sizes.empty()) os << " none";
  os << "\n";
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(st.st_size) / (1024.0 * 1024.0));
    os << "  file size: " << buf << "\n";
  }
  for (size_t i = 0; i < failures.size() && i < 3; ++i)
    os << "  failed:    item " << failures[i]->item.index << ": " << failures[i]->error << "\n";
  if (failures.size() > 3) os << "  failed:    ... and " << failures.size() - 3 << " more\n";
  return os.str();
}

}  // namespace sdmpi
