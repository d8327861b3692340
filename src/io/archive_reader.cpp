// ArchiveReader: opens an archive read-only, checks the whole version-1 layout (archive.h) and
// serves rows and images, for `sd_mpi inspect`, resume and merge. Anything that does not match
// the layout is an InputError naming the file and the dataset or attribute at fault.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/archive_h5.h"
#include "sdmpi/archive.h"
#include "sdmpi/lora.h"

namespace sdmpi {

struct ArchiveReader::Impl {
  std::string path;
  std::string ctx;
  ArchiveInfo info;
  std::vector<ArchiveRow> rows;
  h5::Id file, images;
};

namespace {

// "i/K" → (i, K); false unless 0 <= i < K.
bool parse_shard(const std::string& s, int* index, int* count) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= s.size()) return false;
  for (size_t i = 0; i < s.size(); ++i)
    if (i != slash && (s[i] < '0' || s[i] > '9')) return false;
  if (slash > 9 || s.size() - slash - 1 > 9) return false;
  *index = std::stoi(s.substr(0, slash));
  *count = std::stoi(s.substr(slash + 1));
  return *count >= 1 && *index < *count;
}

// The deflate level of a dataset's filter pipeline (0 when uncompressed).
int gzip_level_of(hid_t dset, const std::string& ctx) {
  h5::Id dcpl = h5::plist(H5Dget_create_plist(dset), ctx, "cannot read the properties of /images");
  const int n = H5Pget_nfilters(dcpl.get());
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0, cd[8] = {0};
    size_t ncd = 8;
    char name[64];
    const H5Z_filter_t f = H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &ncd, cd, sizeof name, name, nullptr);
    if (f == H5Z_FILTER_DEFLATE) return ncd > 0 ? static_cast<int>(cd[0]) : 6;
  }
  return 0;
}

}  // namespace

ArchiveReader::ArchiveReader(const std::string& path, Locking locking) : impl_(std::make_unique<Impl>()) {
  h5::quiet();
  Impl& m = *impl_;
  m.path = path;
  m.ctx = "archive " + path;
  const std::string& ctx = m.ctx;

  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw InputError("cannot open archive " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw InputError("cannot open archive " + path + ": not a regular file");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 <= 0) {
    const std::string detail = h5::error_detail();
    throw InputError(path + " is not an HDF5 file" + (detail.empty() ? "" : " (HDF5: " + detail + ")"));
  }
  {
    h5::Id fapl = h5::file_access(ctx, locking == Locking::Default);
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
    if (f < 0) {
      // A lock conflict is the environment's fault (Error with a hint); anything else is a
      // damaged file, such as one truncated by a full disk.
      const std::string detail = h5::error_detail();
      if (h5::is_lock_failure(detail)) h5::fail(ctx, "cannot open", detail);
      throw InputError(ctx + ": cannot open, the file is damaged" + (detail.empty() ? "" : " (HDF5: " + detail + ")"));
    }
    m.file = h5::Id(f, H5Fclose);
  }
  const hid_t file = m.file.get();

  // Root attributes.
  if (!h5::has_attr(file, "format"))
    throw InputError(path + " is not an sd_mpi archive (no root attribute 'format')");
  ArchiveInfo& info = m.info;
  info.format = h5::read_string_attr(file, "format", ctx);
  if (info.format != kArchiveFormatName)
    throw InputError(path + " is not an sd_mpi archive (root attribute format is '" + info.format + "')");
  const int64_t version = h5::read_int_attr(file, "format_version", ctx);
  if (version != kArchiveFormatVersion)
    throw InputError(ctx + ": format_version " + std::to_string(version) + " is not supported (this sd_mpi reads " +
                     std::to_string(kArchiveFormatVersion) + ")");
  info.format_version = static_cast<int>(version);
  info.sd_mpi_version = h5::read_string_attr(file, "sd_mpi_version", ctx);
  info.git_commit = h5::read_string_attr(file, "git_commit", ctx);
  info.model_path = h5::read_string_attr(file, "model_path", ctx);
  info.weights_hash = h5::read_string_attr(file, "weights_hash", ctx);
  info.created = h5::read_string_attr(file, "created", ctx);
  info.config_json = h5::read_string_attr(file, "config_json", ctx);
  info.fingerprint = h5::read_string_attr(file, "fingerprint", ctx);
  info.merged_from = h5::read_string_attr(file, "merged_from", ctx);
  const int64_t world = h5::read_int_attr(file, "world_size", ctx);
  if (world < 1 || world > (1 << 30)) throw InputError(ctx + ": attribute world_size " + std::to_string(world) + " is out of range");
  info.world_size = static_cast<int>(world);
  const std::string shard = h5::read_string_attr(file, "shard", ctx);
  if (!parse_shard(shard, &info.shard_index, &info.shard_count))
    throw InputError(ctx + ": attribute shard '" + shard + "' is not i/K with 0 <= i < K");
  info.total_items = h5::read_int_attr(file, "total_items", ctx);
  if (info.total_items < 0) throw InputError(ctx + ": attribute total_items " + std::to_string(info.total_items) + " is negative");

  // Per-row datasets: /index fixes N, everything else must match it.
  size_t n = 0;
  {
    h5::Id index = h5::open_dataset(file, "index", ctx);
    const auto dims = h5::dims_of(index.get(), ctx);
    if (dims.size() != 1) throw InputError(ctx + ": dataset /index is not one-dimensional");
    // Every row stores at least its 8-byte /index value, so a damaged dataspace that claims more
    // rows than the file has bytes for is refused here, before N-row buffers are allocated.
    hsize_t file_bytes = 0;
    h5::check(H5Fget_filesize(file, &file_bytes), ctx, "cannot read the file's size");
    if (dims[0] > file_bytes / 8)
      throw InputError(ctx + ": dataset /index claims " + std::to_string(dims[0]) + " rows, more than the " +
                       std::to_string(file_bytes) + "-byte file can hold (8 bytes a row); the file is damaged");
    n = static_cast<size_t>(dims[0]);
  }
  const auto index = h5::read_numbers<int64_t>(file, "index", n, H5T_NATIVE_INT64, H5T_INTEGER, ctx);
  const auto prompt_index = h5::read_numbers<int64_t>(file, "prompt_index", n, H5T_NATIVE_INT64, H5T_INTEGER, ctx);
  const auto sample = h5::read_numbers<int64_t>(file, "sample", n, H5T_NATIVE_INT64, H5T_INTEGER, ctx);
  auto prompt = h5::read_strings(file, "prompt", n, ctx);
  auto negative = h5::read_strings(file, "negative_prompt", n, ctx);
  const auto seed = h5::read_numbers<int64_t>(file, "seed", n, H5T_NATIVE_INT64, H5T_INTEGER, ctx);
  const auto steps = h5::read_numbers<int32_t>(file, "steps", n, H5T_NATIVE_INT32, H5T_INTEGER, ctx);
  const auto guidance = h5::read_numbers<float>(file, "guidance", n, H5T_NATIVE_FLOAT, H5T_FLOAT, ctx);
  auto sampler = h5::read_strings(file, "sampler", n, ctx);
  auto schedule = h5::read_strings(file, "schedule", n, ctx);
  const auto eta = h5::read_numbers<float>(file, "eta", n, H5T_NATIVE_FLOAT, H5T_FLOAT, ctx);
  // Added after format version 1's first archives: absent means 0 (plain CFG).
  const bool has_rescale = H5Lexists(file, "guidance_rescale", H5P_DEFAULT) > 0;
  const auto guidance_rescale = has_rescale
                                    ? h5::read_numbers<float>(file, "guidance_rescale", n, H5T_NATIVE_FLOAT, H5T_FLOAT, ctx)
                                    : std::vector<float>(n, 0.0f);
  const auto clip_skip = h5::read_numbers<int32_t>(file, "clip_skip", n, H5T_NATIVE_INT32, H5T_INTEGER, ctx);
  // img2img, added later too: absent means txt2img rows (strength 0, no init image hash).
  const bool has_img2img = H5Lexists(file, "strength", H5P_DEFAULT) > 0 && H5Lexists(file, "init_image_sha256", H5P_DEFAULT) > 0;
  const auto strength = has_img2img ? h5::read_numbers<float>(file, "strength", n, H5T_NATIVE_FLOAT, H5T_FLOAT, ctx)
                                    : std::vector<float>(n, 0.0f);
  auto init_image_sha256 = has_img2img ? h5::read_strings(file, "init_image_sha256", n, ctx) : std::vector<std::string>(n);
  // Prompt weighting, added later too: absent means "none" (plain text).
  auto prompt_weighting = H5Lexists(file, "prompt_weighting", H5P_DEFAULT) > 0
                              ? h5::read_strings(file, "prompt_weighting", n, ctx)
                              : std::vector<std::string>(n, "none");
  // LoRAs, added later too: absent means none.
  auto loras = H5Lexists(file, "loras", H5P_DEFAULT) > 0 ? h5::read_strings(file, "loras", n, ctx)
                                                         : std::vector<std::string>(n);
  // The refiner's columns, added later too: absent means no second stage and the default scores.
  auto float_column = [&](const char* name, float absent) {
    return H5Lexists(file, name, H5P_DEFAULT) > 0 ? h5::read_numbers<float>(file, name, n, H5T_NATIVE_FLOAT, H5T_FLOAT, ctx)
                                                   : std::vector<float>(n, absent);
  };
  const auto refiner_start = float_column("refiner_start", 0.0f);
  const auto aesthetic_score = float_column("aesthetic_score", GenerationParams{}.aesthetic_score);
  const auto negative_aesthetic_score = float_column("negative_aesthetic_score", GenerationParams{}.negative_aesthetic_score);
  // SDXL micro-conditioning, added later too: absent means 0 (the defaults).
  std::vector<std::vector<int32_t>> micro;
  for (const auto& column : kMicroConditioningColumns)
    micro.push_back(H5Lexists(file, column.first, H5P_DEFAULT) > 0
                        ? h5::read_numbers<int32_t>(file, column.first, n, H5T_NATIVE_INT32, H5T_INTEGER, ctx)
                        : std::vector<int32_t>(n, 0));
  const auto width = h5::read_numbers<int32_t>(file, "width", n, H5T_NATIVE_INT32, H5T_INTEGER, ctx);
  const auto height = h5::read_numbers<int32_t>(file, "height", n, H5T_NATIVE_INT32, H5T_INTEGER, ctx);
  const auto done = h5::read_numbers<uint8_t>(file, "done", n, H5T_NATIVE_UINT8, H5T_INTEGER, ctx);
  // The one dataset rewritten after creation: a kill during a flush can leave a reference to a
  // reason that never reached the file. Such a row reads back with this text instead.
  static const std::string kLostReason = "(reason lost: the writer was interrupted while recording it)";
  auto error = h5::read_strings(file, "error", n, ctx, &kLostReason);

  // /images: uint8 (N, H, W, 3).
  m.images = h5::open_dataset(file, "images", ctx);
  {
    const auto dims = h5::dims_of(m.images.get(), ctx);
    if (dims.size() != 4 || dims[0] != n || dims[3] != 3 || dims[1] == 0 || dims[2] == 0 || dims[1] > 65536 ||
        dims[2] > 65536)
      throw InputError(ctx + ": dataset /images is not (" + std::to_string(n) + ", H, W, 3)");
    h5::Id type = h5::datatype(H5Dget_type(m.images.get()), ctx, "cannot read the type of /images");
    if (H5Tget_class(type.get()) != H5T_INTEGER || H5Tget_size(type.get()) != 1 || H5Tget_sign(type.get()) != H5T_SGN_NONE)
      throw InputError(ctx + ": dataset /images is not uint8");
    info.canvas_height = static_cast<int>(dims[1]);
    info.canvas_width = static_cast<int>(dims[2]);
    info.gzip_level = gzip_level_of(m.images.get(), ctx);
  }

  m.rows.resize(n);
  for (size_t r = 0; r < n; ++r) {
    const std::string row = ctx + ": row " + std::to_string(r);
    if (index[r] < 0 || index[r] >= info.total_items)
      throw InputError(row + ": /index " + std::to_string(index[r]) + " is outside the job's " +
                       std::to_string(info.total_items) + " items");
    if (r > 0 && index[r] <= index[r - 1])
      throw InputError(row + ": /index " + std::to_string(index[r]) + " does not follow " + std::to_string(index[r - 1]) +
                       " (rows must be ordered by increasing global index)");
    if (width[r] < 1 || width[r] > info.canvas_width || height[r] < 1 || height[r] > info.canvas_height)
      throw InputError(row + ": size " + std::to_string(width[r]) + "x" + std::to_string(height[r]) +
                       " does not fit the " + std::to_string(info.canvas_width) + "x" +
                       std::to_string(info.canvas_height) + " canvas of /images");
    if (done[r] > 2) throw InputError(row + ": /done is " + std::to_string(done[r]) + " (expected 0, 1 or 2)");
    ArchiveRow& out = m.rows[r];
    out.item.index = index[r];
    out.item.prompt_index = prompt_index[r];
    out.item.sample = sample[r];
    GenerationParams& p = out.item.params;
    p.prompt = std::move(prompt[r]);
    p.negative_prompt = std::move(negative[r]);
    p.seed = static_cast<uint64_t>(seed[r]);
    p.steps = steps[r];
    p.guidance = guidance[r];
    p.width = width[r];
    p.height = height[r];
    p.sampler = std::move(sampler[r]);
    p.schedule = std::move(schedule[r]);
    p.eta = eta[r];
    p.guidance_rescale = guidance_rescale[r];
    p.refiner_start = refiner_start[r];
    p.aesthetic_score = aesthetic_score[r];
    p.negative_aesthetic_score = negative_aesthetic_score[r];
    if (!init_image_sha256[r].empty()) {  // an img2img row (the archive records no path)
      p.strength = strength[r];
      p.init_image_sha256 = std::move(init_image_sha256[r]);
    }
    p.clip_skip = clip_skip[r];
    check_prompt_weighting(prompt_weighting[r], row + ": /prompt_weighting");
    p.prompt_weighting = std::move(prompt_weighting[r]);
    p.loras = loras_from_archive_text(loras[r], row + ": /loras");
    for (size_t c = 0; c < micro.size(); ++c) p.*(kMicroConditioningColumns[c].second) = micro[c][r];
    out.status = static_cast<RowStatus>(done[r]);
    // /error means something only where done=2 (a retried row can keep a stale reason when the
    // writer died right after finishing it).
    if (out.status == RowStatus::Failed) out.error = std::move(error[r]);
  }
}

ArchiveReader::ArchiveReader(ArchiveReader&&) noexcept = default;
ArchiveReader& ArchiveReader::operator=(ArchiveReader&&) noexcept = default;
ArchiveReader::~ArchiveReader() = default;

const std::string& ArchiveReader::path() const { return impl_->path; }
const ArchiveInfo& ArchiveReader::info() const { return impl_->info; }
const std::vector<ArchiveRow>& ArchiveReader::rows() const { return impl_->rows; }

std::optional<size_t> ArchiveReader::find_row(int64_t global_index) const {
  const auto& rows = impl_->rows;
  auto it = std::lower_bound(rows.begin(), rows.end(), global_index,
                             [](const ArchiveRow& row, int64_t g) { return row.item.index < g; });
  if (it == rows.end() || it->item.index != global_index) return std::nullopt;
  return static_cast<size_t>(it - rows.begin());
}

std::vector<uint8_t> ArchiveReader::read_image(size_t row) const {
  h5::quiet();
  const Impl& m = *impl_;
  if (row >= m.rows.size())
    throw Error(m.ctx + ": row " + std::to_string(row) + " does not exist (" + std::to_string(m.rows.size()) + " rows)");
  const ArchiveRow& r = m.rows[row];
  const std::string ctx = m.ctx + ": item " + std::to_string(r.item.index);
  if (r.status != RowStatus::Done) throw Error(ctx + " holds no finished image");
  const size_t H = static_cast<size_t>(m.info.canvas_height), W = static_cast<size_t>(m.info.canvas_width);
  // The row's chunk must be on disk and big enough for the canvas it claims: deflate expands at
  // most 1032-fold, and a stored chunk is the raw canvas. So a damaged file that claims a huge
  // canvas is refused before the canvas buffer is allocated.
  {
    const hsize_t offset[4] = {row, 0, 0, 0};
    hsize_t stored = 0;
    if (H5Dget_chunk_storage_size(m.images.get(), offset, &stored) < 0 || stored == 0) {
      H5Eclear2(H5E_DEFAULT);
      throw InputError(ctx + ": its image is missing from /images although /done marks it finished");
    }
    const double most = static_cast<double>(stored) * (m.info.gzip_level > 0 ? 1032.0 : 1.0);
    if (static_cast<double>(H) * static_cast<double>(W) * 3.0 > most)
      throw InputError(ctx + ": its stored image holds " + std::to_string(stored) + " bytes, too few for a " +
                       std::to_string(W) + "x" + std::to_string(H) + " canvas; the file is damaged");
  }
  std::vector<uint8_t> canvas(H * W * 3);
  const hsize_t start[4] = {row, 0, 0, 0}, count[4] = {1, H, W, 3};
  h5::Id fspace = h5::dataspace(H5Dget_space(m.images.get()), ctx, "cannot select the row of /images");
  h5::check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr), ctx,
            "cannot select the row of /images");
  h5::Id mspace = h5::dataspace(H5Screate_simple(4, count, nullptr), ctx, "cannot select the row of /images");
  if (H5Dread(m.images.get(), H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT, canvas.data()) < 0) {
    const std::string detail = h5::error_detail();
    throw InputError(ctx + ": cannot read its image, the file is damaged" + (detail.empty() ? "" : " (HDF5: " + detail + ")"));
  }
  const size_t w = static_cast<size_t>(r.item.params.width), h = static_cast<size_t>(r.item.params.height);
  if (w == W && h == H) return canvas;
  std::vector<uint8_t> out(w * h * 3);
  for (size_t y = 0; y < h; ++y) std::memcpy(out.data() + y * w * 3, canvas.data() + y * W * 3, w * 3);
  return out;
}

}  // namespace sdmpi
