// ArchiveWriter: the rank-0 writer of an archive (layout and crash-safety rules in archive.h).
//
// The idea: every row exists from the start. create() writes each row's parameters with done=0
// into a temporary file, flushes, and renames it onto the target, so the path only ever holds a
// complete skeleton. Images then arrive in any order; each one lands in its row's chunk, is
// flushed, and only then is its done flag set and flushed. Resuming reopens the same file in place.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/archive_h5.h"
#include "sdmpi/archive.h"
#include "sdmpi/log.h"
#include "sdmpi/lora.h"
#include "sdmpi/utf8.h"
#include "sdmpi/version.h"

namespace sdmpi {

namespace {

constexpr const char* kPaddingNote =
    "rows smaller than the canvas sit top-left and are zero-filled to the right and below; "
    "/width and /height give each row's valid region: images[r, :height[r], :width[r], :]";
constexpr const char* kSeedNote =
    "uint64 seeds stored as their int64 bit pattern (two's complement); view as uint64 to recover "
    "seeds >= 2^63";
constexpr const char* kDoneNote = "0 pending, 1 finished image, 2 failed (reason in /error)";

std::string os_error(int err) { return std::strerror(err); }

// Dataset-access properties for /images: no chunk cache, so each whole-chunk write is compressed
// and handed to the file at once instead of lingering in memory until the next flush.
h5::Id images_access(const std::string& ctx) {
  h5::Id dapl = h5::plist(H5Pcreate(H5P_DATASET_ACCESS), ctx, "cannot create dataset-access properties");
  h5::check(H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0), ctx, "cannot set the chunk cache");
  return dapl;
}

}  // namespace

struct ArchiveWriter::Impl {
  std::string path;
  std::string ctx;  // "archive <path>", the head of every message
  ArchiveInfo info;
  ArchiveOptions options;
  std::vector<int64_t> indices;
  std::vector<int32_t> widths, heights;
  std::vector<uint8_t> status;
  std::vector<uint8_t> canvas;  // padding buffer for rows smaller than the canvas
  h5::Id file, images, done, error;

  size_t row_of(int64_t global_index) const {
    auto it = std::lower_bound(indices.begin(), indices.end(), global_index);
    if (it == indices.end() || *it != global_index)
      throw Error(ctx + " has no row for item " + std::to_string(global_index) + " (it holds " +
                  std::to_string(indices.size()) + " items of shard " + std::to_string(info.shard_index) +
                  "/" + std::to_string(info.shard_count) + ")");
    return static_cast<size_t>(it - indices.begin());
  }

  void require_open() const {
    if (!file) throw Error(ctx + ": the archive is already closed");
  }

  void flush() {
    h5::check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), ctx, "cannot flush");
    if (options.fsync) {
      void* handle = nullptr;
      h5::check(H5Fget_vfd_handle(file.get(), H5P_DEFAULT, &handle), ctx, "cannot fsync");
      if (handle && ::fsync(*static_cast<int*>(handle)) != 0)
        throw Error(ctx + ": fsync failed: " + os_error(errno));
    }
  }

  void close() {
    error.reset();
    done.reset();
    images.reset();
    if (file && !file.reset()) h5::fail(ctx, "cannot close (the final flush failed)");
  }
  void mark_row_done(size_t row, const std::string& item);
};

ArchiveWriter::ArchiveWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ArchiveWriter::ArchiveWriter(ArchiveWriter&&) noexcept = default;
ArchiveWriter& ArchiveWriter::operator=(ArchiveWriter&&) noexcept = default;

ArchiveWriter::~ArchiveWriter() {
  if (!impl_) return;
  try {
    impl_->close();
  } catch (const std::exception& e) {
    log::error(e.what());
  }
}

namespace {

void validate_rows(const std::string& ctx, const std::vector<WorkItem>& rows) {
  for (size_t r = 0; r < rows.size(); ++r) {
    const WorkItem& it = rows[r];
    const std::string item = ctx + ": item " + std::to_string(it.index);
    if (it.index < 0) throw InputError(item + ": negative global index");
    if (r > 0 && it.index <= rows[r - 1].index)
      throw InputError(item + ": rows must be sorted by strictly increasing global index (follows item " +
                       std::to_string(rows[r - 1].index) + ")");
    const GenerationParams& p = it.params;
    if (p.width <= 0 || p.height <= 0 || p.width > 65536 || p.height > 65536)
      throw InputError(item + ": image size " + std::to_string(p.width) + "x" + std::to_string(p.height) +
                       " is out of range");
    const std::pair<const char*, const std::string*> strings[] = {
        {"prompt", &p.prompt}, {"negative_prompt", &p.negative_prompt}, {"sampler", &p.sampler},
        {"schedule", &p.schedule}};
    for (const auto& [name, value] : strings)
      if (!valid_utf8(*value)) throw InputError(item + ": " + name + " is not valid UTF-8");
  }
}

// Fills in the defaults of `info` (total items, canvas) and checks what the caller gave.
ArchiveInfo complete_info(const std::string& ctx, const std::vector<WorkItem>& rows, ArchiveInfo info,
                          const ArchiveOptions& options) {
  if (options.gzip_level < 0 || options.gzip_level > 9)
    throw InputError(ctx + ": gzip level " + std::to_string(options.gzip_level) + " is not in 0..9");
  if (info.world_size < 1) throw InputError(ctx + ": world size " + std::to_string(info.world_size) + " < 1");
  if (info.shard_count < 1 || info.shard_index < 0 || info.shard_index >= info.shard_count)
    throw InputError(ctx + ": shard " + std::to_string(info.shard_index) + "/" +
                     std::to_string(info.shard_count) + " is not i/K with 0 <= i < K");
  const int64_t max_index = rows.empty() ? -1 : rows.back().index;
  if (info.total_items == 0) info.total_items = max_index + 1;
  if (info.total_items < 0 || max_index >= info.total_items)
    throw InputError(ctx + ": item " + std::to_string(max_index) + " is beyond the job's " +
                     std::to_string(info.total_items) + " items");
  int max_w = 0, max_h = 0;
  for (const WorkItem& it : rows) {
    max_w = std::max(max_w, it.params.width);
    max_h = std::max(max_h, it.params.height);
  }
  if ((info.canvas_width && info.canvas_width < max_w) || (info.canvas_height && info.canvas_height < max_h) ||
      info.canvas_width < 0 || info.canvas_height < 0)
    throw InputError(ctx + ": canvas " + std::to_string(info.canvas_width) + "x" +
                     std::to_string(info.canvas_height) + " is smaller than the largest image " +
                     std::to_string(max_w) + "x" + std::to_string(max_h));
  if (info.canvas_width == 0) info.canvas_width = std::max(max_w, 1);
  if (info.canvas_height == 0) info.canvas_height = std::max(max_h, 1);
  for (const std::string* s : {&info.model_path, &info.weights_hash, &info.config_json, &info.fingerprint})
    if (!valid_utf8(*s)) throw InputError(ctx + ": archive info holds a string that is not valid UTF-8");
  info.format = kArchiveFormatName;
  info.format_version = kArchiveFormatVersion;
  info.sd_mpi_version = SDMPI_VERSION;
  info.git_commit = SDMPI_GIT_COMMIT;
  info.created = h5::iso8601_utc_now();
  if (info.merged_from.empty()) info.merged_from = "[]";
  info.gzip_level = options.gzip_level;
  return info;
}

template <typename T, typename F>
void write_column(hid_t file, const char* name, hid_t file_type, hid_t mem_type,
                  const std::vector<WorkItem>& rows, F field, const std::string& ctx) {
  std::vector<T> col(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) col[r] = static_cast<T>(field(rows[r]));
  h5::Id d = h5::create_1d(file, name, file_type, rows.size(), ctx);
  if (!col.empty())
    h5::check(H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, col.data()), ctx,
              std::string("cannot write /") + name);
}

template <typename F>
void write_string_column(hid_t file, const char* name, hid_t vlen, const std::vector<WorkItem>& rows, F field,
                         const std::string& ctx) {
  std::vector<std::string> col(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) col[r] = field(rows[r]);
  h5::Id d = h5::create_1d(file, name, vlen, rows.size(), ctx);
  h5::write_strings(d.get(), col, ctx);
}

// Writes the whole skeleton: /images (empty chunks), every per-row dataset, the root attributes.
void write_skeleton(hid_t file, const std::vector<WorkItem>& rows, const ArchiveInfo& info, const std::string& ctx) {
  const size_t n = rows.size();
  const hsize_t H = static_cast<hsize_t>(info.canvas_height), W = static_cast<hsize_t>(info.canvas_width);
  {
    const hsize_t dims[4] = {n, H, W, 3}, maxdims[4] = {H5S_UNLIMITED, H, W, 3}, chunk[4] = {1, H, W, 3};
    h5::Id space = h5::dataspace(H5Screate_simple(4, dims, maxdims), ctx, "cannot create /images");
    h5::Id dcpl = h5::plist(H5Pcreate(H5P_DATASET_CREATE), ctx, "cannot create /images");
    h5::check(H5Pset_chunk(dcpl.get(), 4, chunk), ctx, "cannot set the chunks of /images");
    if (info.gzip_level > 0)
      h5::check(H5Pset_deflate(dcpl.get(), static_cast<unsigned>(info.gzip_level)), ctx, "cannot set gzip");
    const uint8_t zero = 0;
    h5::check(H5Pset_fill_value(dcpl.get(), H5T_NATIVE_UINT8, &zero), ctx, "cannot set the fill value");
    h5::Id dapl = images_access(ctx);
    h5::Id images = h5::dataset(H5Dcreate2(file, "images", H5T_STD_U8LE, space.get(), H5P_DEFAULT, dcpl.get(),
                                           dapl.get()),
                                ctx, "cannot create /images");
    h5::write_string_attr(images.get(), "layout", "NHWC", ctx);
    h5::write_string_attr(images.get(), "color_space", "sRGB", ctx);
    h5::write_string_attr(images.get(), "padding", kPaddingNote, ctx);
  }
  h5::Id vlen = h5::vlen_utf8(ctx);
  const hid_t I64 = H5T_STD_I64LE, I32 = H5T_STD_I32LE, F32 = H5T_IEEE_F32LE;
  write_column<int64_t>(file, "index", I64, H5T_NATIVE_INT64, rows, [](const WorkItem& w) { return w.index; }, ctx);
  write_column<int64_t>(file, "prompt_index", I64, H5T_NATIVE_INT64, rows,
                        [](const WorkItem& w) { return w.prompt_index; }, ctx);
  write_column<int64_t>(file, "sample", I64, H5T_NATIVE_INT64, rows, [](const WorkItem& w) { return w.sample; }, ctx);
  write_string_column(file, "prompt", vlen.get(), rows, [](const WorkItem& w) { return w.params.prompt; }, ctx);
  write_string_column(file, "negative_prompt", vlen.get(), rows,
                      [](const WorkItem& w) { return w.params.negative_prompt; }, ctx);
  write_column<int64_t>(file, "seed", I64, H5T_NATIVE_INT64, rows,
                        [](const WorkItem& w) { return static_cast<int64_t>(w.params.seed); }, ctx);
  write_column<int32_t>(file, "steps", I32, H5T_NATIVE_INT32, rows, [](const WorkItem& w) { return w.params.steps; }, ctx);
  write_column<float>(file, "guidance", F32, H5T_NATIVE_FLOAT, rows,
                      [](const WorkItem& w) { return w.params.guidance; }, ctx);
  write_string_column(file, "sampler", vlen.get(), rows, [](const WorkItem& w) { return w.params.sampler; }, ctx);
  write_string_column(file, "schedule", vlen.get(), rows, [](const WorkItem& w) { return w.params.schedule; }, ctx);
  write_column<float>(file, "eta", F32, H5T_NATIVE_FLOAT, rows, [](const WorkItem& w) { return w.params.eta; }, ctx);
  write_column<float>(file, "guidance_rescale", F32, H5T_NATIVE_FLOAT, rows,
                      [](const WorkItem& w) { return w.params.guidance_rescale; }, ctx);
  write_column<int32_t>(file, "clip_skip", I32, H5T_NATIVE_INT32, rows,
                        [](const WorkItem& w) { return w.params.clip_skip; }, ctx);
  // img2img: strength 0 and an empty hash for txt2img rows.
  write_column<float>(file, "strength", F32, H5T_NATIVE_FLOAT, rows,
                      [](const WorkItem& w) { return w.params.img2img() ? w.params.strength : 0.0f; }, ctx);
  write_string_column(file, "init_image_sha256", vlen.get(), rows,
                      [](const WorkItem& w) { return w.params.init_image_sha256; }, ctx);
  write_string_column(file, "prompt_weighting", vlen.get(), rows,
                      [](const WorkItem& w) { return w.params.prompt_weighting; }, ctx);
  write_string_column(file, "loras", vlen.get(), rows,
                      [](const WorkItem& w) { return loras_to_archive_text(w.params.loras); }, ctx);
  // The SDXL refiner: the share of the schedule the base ran before it (0 = no second stage) and
  // the aesthetic scores it is conditioned on (recorded for every row; used by refiners only).
  write_column<float>(file, "refiner_start", F32, H5T_NATIVE_FLOAT, rows,
                      [](const WorkItem& w) { return w.params.refiner_start; }, ctx);
  write_column<float>(file, "aesthetic_score", F32, H5T_NATIVE_FLOAT, rows,
                      [](const WorkItem& w) { return w.params.aesthetic_score; }, ctx);
  write_column<float>(file, "negative_aesthetic_score", F32, H5T_NATIVE_FLOAT, rows,
                      [](const WorkItem& w) { return w.params.negative_aesthetic_score; }, ctx);
  // SDXL micro-conditioning, 0 = the default (the image's size, crop 0).
  for (const auto& [name, member] : kMicroConditioningColumns)
    write_column<int32_t>(file, name, I32, H5T_NATIVE_INT32, rows, [m = member](const WorkItem& w) { return w.params.*m; }, ctx);
  write_column<int32_t>(file, "width", I32, H5T_NATIVE_INT32, rows, [](const WorkItem& w) { return w.params.width; }, ctx);
  write_column<int32_t>(file, "height", I32, H5T_NATIVE_INT32, rows,
                        [](const WorkItem& w) { return w.params.height; }, ctx);
  write_column<uint8_t>(file, "done", H5T_STD_U8LE, H5T_NATIVE_UINT8, rows, [](const WorkItem&) { return 0; }, ctx);
  write_string_column(file, "error", vlen.get(), rows, [](const WorkItem&) { return std::string(); }, ctx);
  {
    h5::Id seed = h5::open_dataset(file, "seed", ctx);
    h5::write_string_attr(seed.get(), "encoding", kSeedNote, ctx);
    h5::Id done = h5::open_dataset(file, "done", ctx);
    h5::write_string_attr(done.get(), "values", kDoneNote, ctx);
  }
  h5::write_string_attr(file, "format", info.format, ctx);
  h5::write_int_attr(file, "format_version", info.format_version, H5T_STD_I32LE, ctx);
  h5::write_string_attr(file, "sd_mpi_version", info.sd_mpi_version, ctx);
  h5::write_string_attr(file, "git_commit", info.git_commit, ctx);
  h5::write_string_attr(file, "model_path", info.model_path, ctx);
  h5::write_string_attr(file, "weights_hash", info.weights_hash, ctx);
  h5::write_string_attr(file, "created", info.created, ctx);
  h5::write_int_attr(file, "world_size", info.world_size, H5T_STD_I32LE, ctx);
  h5::write_string_attr(file, "shard", std::to_string(info.shard_index) + "/" + std::to_string(info.shard_count), ctx);
  h5::write_int_attr(file, "total_items", info.total_items, H5T_STD_I64LE, ctx);
  h5::write_string_attr(file, "config_json", info.config_json, ctx);
  h5::write_string_attr(file, "fingerprint", info.fingerprint, ctx);
  h5::write_string_attr(file, "merged_from", info.merged_from, ctx);
}

// A kill during the flush of mark_failed() can leave an /error reference to a heap object that
// never reached the file. Readers skip it, but HDF5 cannot overwrite it (a vlen write frees the
// old object first), so a retry of that item would fail. Before reopening for writing, turn such
// references into empty strings by zeroing them in place (contiguous storage, fixed-size
// {length, heap address, index} elements; a zero address means "no object").
void repair_lost_reasons(const std::string& path, size_t n, const std::string& ctx) {
  if (n == 0) return;
  std::vector<size_t> lost;
  haddr_t offset = HADDR_UNDEF;
  hsize_t element = 0;
  {
    h5::Id fapl = h5::file_access(ctx);
    h5::Id file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), ctx, "cannot open");
    h5::Id error = h5::open_dataset(file.get(), "error", ctx);
    lost = h5::unreadable_strings(error.get(), n, ctx);
    if (lost.empty()) return;
    offset = H5Dget_offset(error.get());
    element = H5Dget_storage_size(error.get()) / n;
  }
  if (offset == HADDR_UNDEF || element == 0 || element > 64)
    throw InputError(ctx + ": /error is damaged beyond repair");
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw Error(ctx + ": cannot repair /error: " + os_error(errno));
  const std::vector<char> zeros(element, 0);
  for (size_t row : lost) {
    const off_t at = static_cast<off_t>(offset + row * element);
    if (::pwrite(fd, zeros.data(), zeros.size(), at) != static_cast<ssize_t>(zeros.size())) {
      const int err = errno;
      ::close(fd);
      throw Error(ctx + ": cannot repair /error: " + os_error(err));
    }
  }
  ::close(fd);
  log::warn(ctx + ": " + std::to_string(lost.size()) +
            " failure reason(s) were lost when an earlier run was interrupted; they now read as empty");
}

}  // namespace

ArchiveWriter ArchiveWriter::create(const std::string& path, const std::vector<WorkItem>& rows,
                                    const ArchiveInfo& info_in, const ArchiveOptions& options) {
  h5::quiet();
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->ctx = "archive " + path;
  impl->options = options;
  const std::string& ctx = impl->ctx;
  validate_rows(ctx, rows);
  impl->info = complete_info(ctx, rows, info_in, options);
  if (!options.overwrite && h5::path_exists(path)) throw Error(ctx + " already exists: resume it or remove it first");
  if (options.overwrite && h5::locked_by_other_process(path))
    throw ArchiveLockedError(ctx + " is open in another process (HDF5 file lock); refusing to replace it");

  // Create the temporary file ourselves first: its errno names the real reason (missing
  // directory, permissions, read-only or full filesystem) in plain words.
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot create archive " + path + ": " + os_error(errno));
  ::close(fd);
  try {
    h5::Id fapl = h5::file_access(ctx);
    impl->file = h5::file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), ctx, "cannot create");
    write_skeleton(impl->file.get(), rows, impl->info, ctx);
    impl->flush();
    h5::publish(tmp, path, options.overwrite, ctx);
  } catch (...) {
    impl->file.reset();
    ::unlink(tmp.c_str());
    throw;
  }
  h5::Id dapl = images_access(ctx);
  impl->images = h5::dataset(H5Dopen2(impl->file.get(), "images", dapl.get()), ctx, "cannot open /images");
  impl->done = h5::open_dataset(impl->file.get(), "done", ctx);
  impl->error = h5::open_dataset(impl->file.get(), "error", ctx);
  impl->indices.reserve(rows.size());
  for (const WorkItem& it : rows) {
    impl->indices.push_back(it.index);
    impl->widths.push_back(it.params.width);
    impl->heights.push_back(it.params.height);
  }
  impl->status.assign(rows.size(), static_cast<uint8_t>(RowStatus::Pending));
  return ArchiveWriter(std::move(impl));
}

ArchiveWriter ArchiveWriter::open_existing(const std::string& path, const std::string& expected_fingerprint,
                                           const ArchiveOptions& options) {
  h5::quiet();
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->ctx = "archive " + path;
  impl->options = options;
  const std::string& ctx = impl->ctx;
  {
    // Validate everything through the reader, then reopen for writing.
    ArchiveReader reader(path);
    impl->info = reader.info();
    if (impl->info.fingerprint != expected_fingerprint)
      throw InputError("archive " + path + " belongs to another job: fingerprint " + impl->info.fingerprint +
                       ", this job " + expected_fingerprint);
    for (const ArchiveRow& row : reader.rows()) {
      impl->indices.push_back(row.item.index);
      impl->widths.push_back(row.item.params.width);
      impl->heights.push_back(row.item.params.height);
      impl->status.push_back(static_cast<uint8_t>(row.status));
    }
    // A finished row whose image no longer reads back (a chunk damaged on disk or by hand) is
    // made again: it counts as pending here, and its rewrite replaces the chunk and sets /done.
    // This reads every finished image once per resume, the price of never keeping a broken one.
    for (size_t r = 0; r < impl->status.size(); ++r) {
      if (impl->status[r] != static_cast<uint8_t>(RowStatus::Done)) continue;
      try {
        reader.read_image(r);
      } catch (const InputError& e) {
        log::warn(std::string(e.what()) + ": making it again");
        impl->status[r] = static_cast<uint8_t>(RowStatus::Pending);
      }
    }
  }
  impl->options.gzip_level = impl->info.gzip_level;
  repair_lost_reasons(path, impl->indices.size(), ctx);
  h5::Id fapl = h5::file_access(ctx);
  impl->file = h5::file(H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.get()), ctx, "cannot open for writing");
  {
    // A kill during a flush can leave the chunk index of an unfinished row pointing at data past
    // the end of the address space the superblock records (the superblock is flushed last).
    // Rewriting that row would then fail with "addr overflow": extend the address space over
    // everything in the file first, as `h5clear --increment` would.
    haddr_t eoa = 0;
    struct stat st;
    if (H5Fget_eoa(impl->file.get(), &eoa) >= 0 && ::stat(path.c_str(), &st) == 0 &&
        static_cast<haddr_t>(st.st_size) > eoa) {
      log::warn(ctx + ": recovering from an interrupted write (" + std::to_string(st.st_size - eoa) +
                " bytes beyond the recorded end of the file)");
      h5::check(H5Fincrement_filesize(impl->file.get(), 0), ctx, "cannot recover from an interrupted write");
    }
    H5Eclear2(H5E_DEFAULT);
  }
  h5::Id dapl = images_access(ctx);
  impl->images = h5::dataset(H5Dopen2(impl->file.get(), "images", dapl.get()), ctx, "cannot open /images");
  impl->done = h5::open_dataset(impl->file.get(), "done", ctx);
  impl->error = h5::open_dataset(impl->file.get(), "error", ctx);

  // Belt and braces: a row marked done whose chunk never reached the file (impossible with the
  // flush order of write_image, but cheap to check) goes back to pending.
  for (size_t r = 0; r < impl->status.size(); ++r) {
    if (impl->status[r] != static_cast<uint8_t>(RowStatus::Done)) continue;
    const hsize_t offset[4] = {r, 0, 0, 0};
    hsize_t bytes = 0;
    if (H5Dget_chunk_storage_size(impl->images.get(), offset, &bytes) >= 0 && bytes > 0) continue;
    H5Eclear2(H5E_DEFAULT);
    log::warn(ctx + ": item " + std::to_string(impl->indices[r]) +
              " was marked done but its image is missing; it will be generated again");
    h5::write_u8_at(impl->done.get(), r, static_cast<uint8_t>(RowStatus::Pending), ctx);
    impl->status[r] = static_cast<uint8_t>(RowStatus::Pending);
  }
  impl->flush();
  return ArchiveWriter(std::move(impl));
}

// After a row's image reached the file: flush, then set done=1 and flush again, so the flag
// never gets ahead of the pixels.
void ArchiveWriter::Impl::mark_row_done(size_t row, const std::string& item) {
  Impl& m = *this;
  if (m.options.flush_each_write) m.flush();
  const bool was_failed = m.status[row] == static_cast<uint8_t>(RowStatus::Failed);
  h5::write_u8_at(m.done.get(), row, static_cast<uint8_t>(RowStatus::Done), item);
  m.status[row] = static_cast<uint8_t>(RowStatus::Done);
  // Clear an earlier failure's reason. An empty string needs no heap object, so this plain
  // reference update is safe to flush with the flag; and since /error means nothing where
  // done != 2, failing to clear it costs nothing but a stale text.
  if (was_failed) {
    try {
      h5::write_string_at(m.error.get(), row, "", item);
    } catch (const Error& e) {
      log::warn(e.what());
    }
  }
  if (m.options.flush_each_write) m.flush();
}

void ArchiveWriter::write_image(int64_t global_index, const uint8_t* rgb, int width, int height) {
  // The stored form is what HDF5's gzip filter would make of the padded row (compress2 at the
  // dataset's level), so encoding here and writing the chunk directly gives the same file.
  if (!rgb) throw Error(impl_->ctx + ": item " + std::to_string(global_index) + ": no pixels given");
  Impl& m = *impl_;
  m.require_open();
  const size_t row = m.row_of(global_index);
  if (width != m.widths[row] || height != m.heights[row]) {
    write_encoded_image(global_index, {0}, width, height);  // reports the size mismatch
    return;
  }
  write_encoded_image(global_index,
                      encode_archive_chunk(rgb, width, height, m.info.canvas_width, m.info.canvas_height, m.info.gzip_level),
                      width, height);
}

void ArchiveWriter::write_encoded_image(int64_t global_index, const std::vector<uint8_t>& chunk, int width, int height) {
  h5::quiet();
  Impl& m = *impl_;
  m.require_open();
  const size_t row = m.row_of(global_index);
  const std::string item = m.ctx + ": item " + std::to_string(global_index);
  if (m.status[row] == static_cast<uint8_t>(RowStatus::Done)) throw Error(item + " already holds a finished image");
  if (width != m.widths[row] || height != m.heights[row])
    throw Error(item + ": the image is " + std::to_string(width) + "x" + std::to_string(height) +
                " but the item asks for " + std::to_string(m.widths[row]) + "x" + std::to_string(m.heights[row]));
  if (chunk.empty()) throw Error(item + ": empty encoded image");
  const hsize_t offset[4] = {row, 0, 0, 0};
  // Filter mask 0: every filter of the dataset (gzip, if any) was applied by the encoder.
  h5::check(H5Dwrite_chunk(m.images.get(), H5P_DEFAULT, 0, offset, chunk.size(), chunk.data()), item,
            "cannot write the image");
  m.mark_row_done(row, item);
}

void ArchiveWriter::mark_failed(int64_t global_index, const std::string& reason) {
  h5::quiet();
  Impl& m = *impl_;
  m.require_open();
  const size_t row = m.row_of(global_index);
  const std::string item = m.ctx + ": item " + std::to_string(global_index);
  if (m.status[row] == static_cast<uint8_t>(RowStatus::Done))
    throw Error(item + " already holds a finished image; it cannot also fail");
  // Like write_image: the reason (a heap object plus its reference) must be in the file before
  // the flag that points readers to it.
  h5::write_string_at(m.error.get(), row, replace_invalid_utf8(reason), item);
  if (m.options.flush_each_write) m.flush();
  h5::write_u8_at(m.done.get(), row, static_cast<uint8_t>(RowStatus::Failed), item);
  m.status[row] = static_cast<uint8_t>(RowStatus::Failed);
  if (m.options.flush_each_write) m.flush();
}

void ArchiveWriter::close() {
  h5::quiet();
  impl_->close();
}

const std::string& ArchiveWriter::path() const { return impl_->path; }
const ArchiveInfo& ArchiveWriter::info() const { return impl_->info; }
std::vector<int64_t> ArchiveWriter::indices() const { return impl_->indices; }

std::vector<int64_t> ArchiveWriter::done_indices() const {
  std::vector<int64_t> out;
  for (size_t r = 0; r < impl_->indices.size(); ++r)
    if (impl_->status[r] == static_cast<uint8_t>(RowStatus::Done)) out.push_back(impl_->indices[r]);
  return out;
}

std::vector<int64_t> ArchiveWriter::failed_indices() const {
  std::vector<int64_t> out;
  for (size_t r = 0; r < impl_->indices.size(); ++r)
    if (impl_->status[r] == static_cast<uint8_t>(RowStatus::Failed)) out.push_back(impl_->indices[r]);
  return out;
}

RowStatus ArchiveWriter::status(int64_t global_index) const {
  return static_cast<RowStatus>(impl_->status[impl_->row_of(global_index)]);
}

}  // namespace sdmpi
