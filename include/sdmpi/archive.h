// The HDF5 archive of a job, format version 1 (docs/design.md §7 is the contract; this header fixes
// what it leaves open). Rank 0 owns the one writer; the model code never sees HDF5 and the archive
// never sees tensors: it takes uint8 RGB images and the items' parameters.
//
// Layout (N rows = the items of this archive, ordered by global index; H, W = the canvas):
//   /images           uint8 (N,H,W,3), maxdims (unlimited,H,W,3), chunk (1,H,W,3), gzip, fill 0.
//                     attrs layout="NHWC", color_space="sRGB", padding=<text below>.
//                     Mixed sizes: every row sits top-left in the canvas (the largest width and
//                     height of the job unless the caller asks for more); the rest of the row is
//                     zero. /width and /height give each row's valid region, so the image of row r
//                     is images[r, :height[r], :width[r], :]. gzip makes the padding nearly free.
//   /index            int64 (N)  global index g of each row, strictly increasing
//   /prompt_index     int64 (N)  the prompt's record in the job;   /sample int64 (N) k in [0, n)
//   /prompt /negative_prompt /sampler /schedule /error   variable-length UTF-8 strings (N)
//   /seed             int64 (N)  the uint64 seed's bit pattern (two's complement): seeds >= 2^63
//                     read back negative; numpy `.view(np.uint64)` recovers them, and
//                     torch.Generator().manual_seed() takes the negative value as the same seed.
//   /steps /width /height /clip_skip int32 (N);  /guidance /eta float32 (N)
//   /guidance_rescale float32 (N)  diffusers' guidance_rescale (0 = off; absent in older archives)
//   /strength         float32 (N)  img2img strength in (0, 1]; 0 for txt2img rows
//   /init_image_sha256  vlen UTF-8 (N)  SHA-256 (hex) of the img2img init image file, "" for
//                     txt2img rows (both absent in older archives: txt2img)
//   /prompt_weighting vlen UTF-8 (N)  "none" or "a1111": how the prompts were read
//                     (GenerationParams::prompt_weighting; absent in older archives: "none")
//   /loras            vlen UTF-8 (N)  the LoRAs merged for the row, a JSON list of {"name",
//                     "sha256" (A1111's LoRA hash), "scale"}; "" for none (absent in older archives)
//   /done             uint8 (N)  0 pending, 1 finished image, 2 failed (/error holds the reason;
//                     /error means nothing where done != 2)
//   root attributes   format="sd_mpi-archive", format_version=1 (int32), sd_mpi_version,
//                     git_commit, model_path, weights_hash, created (ISO 8601 UTC, "...Z"),
//                     world_size (int32), shard ("i/K"), total_items (int64, the whole job),
//                     config_json, fingerprint, merged_from (JSON list; "[]" unless merged).
//   String attributes are scalar variable-length UTF-8; every dataset but /images is contiguous.
//   A merged archive has shard "0/1", world_size = the largest among its inputs, created = the
//   time of the merge, and merged_from = [{"file", "shard", "world_size", "rows", "created"}, ...].
//
// Crash safety: create() builds the whole skeleton (every row's parameters, done=0) in a temporary
// file next to the target ("<path>.tmp-<pid>") and renames it into place, so the archive path
// never holds a half-made skeleton. write_image() writes the pixels, flushes (H5Fflush), then sets
// done=1 and flushes again: a kill -9 at any moment leaves a file that opens, and done=1 only where
// the image's chunk reached the file. A kill in the middle of a flush can leave the chunk index of
// an unfinished row pointing past the end of the file that the superblock records; readers do not
// mind, and open_existing() repairs it (as `h5clear --increment` would) before rewriting that row.
// H5Fflush hands data to the OS, not to the disk: a node crash can still lose the last images
// (ArchiveOptions::fsync trades speed for that). Tested by killing a writer 1000s of times.
//
// File locking: HDF5 >= 1.10 flock()s the file, which keeps two writers off one archive (and
// create() with overwrite refuses to replace an archive that another process holds open). When
// HDF5_USE_FILE_LOCKING is set, HDF5 obeys it; when unset we lock but ignore filesystems where
// locking is disabled (ENOSYS, some Lustre mounts). On NFS or Lustre mounts that refuse flock
// (errno 37/524), set HDF5_USE_FILE_LOCKING=FALSE; the error message says so.
//
// Availability: the archive needs serial HDF5 (SDMPI_HAVE_HDF5). Without it, kArchiveSupported is
// false and every entry point below is an inline stub that throws Error("this sd_mpi was built
// without HDF5 ..."), so callers link either way and check kArchiveSupported for a clear message.
// One writer object is used from one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/job.h"

namespace sdmpi {

#ifdef SDMPI_HAVE_HDF5
inline constexpr bool kArchiveSupported = true;
#else
inline constexpr bool kArchiveSupported = false;
#endif

inline constexpr int kArchiveFormatVersion = 1;
inline constexpr const char* kArchiveFormatName = "sd_mpi-archive";

enum class RowStatus : uint8_t { Pending = 0, Done = 1, Failed = 2 };

// Another process holds the archive open (HDF5's file lock): a second writer, or a reader while a
// writer runs. The message says so in one line.
class ArchiveLockedError : public Error {
 public:
  using Error::Error;
};

// What the archive says about its job. The caller fills the first block for create(); the writer
// sets the second; ArchiveReader fills both.
struct ArchiveInfo {
  std::string model_path;
  std::string weights_hash;
  std::string config_json;     // the job's full configuration as JSON
  std::string fingerprint;     // identifies the job for resume and merge
  int world_size = 1;
  int shard_index = 0;         // this archive holds shard shard_index of shard_count
  int shard_count = 1;
  int64_t total_items = 0;     // items of the whole job; 0 = (largest row index + 1)
  int canvas_width = 0;        // 0 = the largest width among the rows
  int canvas_height = 0;       // 0 = the largest height among the rows

  std::string format;          // "sd_mpi-archive"
  int format_version = 0;
  std::string sd_mpi_version;  // e.g. "0.1.0"
  std::string git_commit;
  std::string created;         // ISO 8601 UTC
  std::string merged_from;     // JSON list of the merged inputs, "[]" otherwise
  int gzip_level = 0;          // of /images (0 = stored uncompressed)
};

struct ArchiveOptions {
  bool overwrite = false;       // replace an existing file at the path (else refuse)
  int gzip_level = 4;           // 0..9; 0 stores /images uncompressed
  bool flush_each_write = true; // H5Fflush after each image/failure (crash safety); merge turns it off
  bool fsync = false;           // also fsync after each flush (survives node crashes; slower)
};

struct ArchiveRow {
  WorkItem item;
  RowStatus status = RowStatus::Pending;
  std::string error;  // the reason when status == Failed
};

// One image's row of /images in its stored form: width*height*3 RGB placed top-left in a
// canvas_width x canvas_height x 3 zero canvas, then deflated with zlib at gzip_level exactly as
// HDF5's gzip filter does (compress2), or left raw when gzip_level is 0. Needs only zlib.
std::vector<uint8_t> encode_archive_chunk(const uint8_t* rgb, int width, int height, int canvas_width,
                                          int canvas_height, int gzip_level);

class ArchiveWriter {
 public:
  // A new archive at `path` with one row per item of `rows` (sorted by strictly increasing global
  // index), every row's parameters written and done=0. Refuses an existing file unless
  // options.overwrite. Throws Error naming the path (and the OS reason when it cannot be created)
  // or InputError for bad rows/info.
  static ArchiveWriter create(const std::string& path, const std::vector<WorkItem>& rows,
                              const ArchiveInfo& info, const ArchiveOptions& options = {});
  // Reopens an archive to resume it in place. Refuses (InputError) when its fingerprint differs:
  // "archive out.h5 belongs to another job: fingerprint X, this job Y". done_indices() then says
  // which items to skip. options.overwrite is ignored; gzip_level is the file's own.
  static ArchiveWriter open_existing(const std::string& path, const std::string& expected_fingerprint,
                                     const ArchiveOptions& options = {});

  ArchiveWriter(ArchiveWriter&&) noexcept;
  ArchiveWriter& operator=(ArchiveWriter&&) noexcept;
  ~ArchiveWriter();  // closes; errors are logged, not thrown (call close() to see them)

  // Stores the image of item `global_index`: width*height*3 bytes, row-major RGB, whose size must
  // be the item's. Sets done=1 (clearing an earlier failure) and flushes. A row that already holds
  // a finished image is an error.
  void write_image(int64_t global_index, const uint8_t* rgb, int width, int height);
  // The same with the row already in its stored form (encode_archive_chunk with this archive's
  // canvas and gzip level), written as is (H5Dwrite_chunk): what write_image stores, byte for
  // byte, without compressing on the writer. A job's generating ranks encode; rank 0 copies.
  void write_encoded_image(int64_t global_index, const std::vector<uint8_t>& chunk, int width, int height);
  // Records that the item failed (done=2, /error = reason) and flushes.
  void mark_failed(int64_t global_index, const std::string& reason);
  void close();

  const std::string& path() const;
  const ArchiveInfo& info() const;
  std::vector<int64_t> indices() const;                  // every row's global index
  std::vector<int64_t> done_indices() const;             // rows holding a finished image
  std::vector<int64_t> failed_indices() const;
  RowStatus status(int64_t global_index) const;          // throws if no row has this index

 private:
  struct Impl;
  explicit ArchiveWriter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class ArchiveReader {
 public:
  // Opens read-only and validates the whole layout; a file that is not a readable version-1
  // archive throws InputError naming the file and the dataset/attribute at fault, a file another
  // process writes throws ArchiveLockedError. Locking::Off reads it anyway, without the lock (a
  // snapshot: fine for a progress summary, never for merge or resume).
  enum class Locking { Default, Off };
  explicit ArchiveReader(const std::string& path, Locking locking = Locking::Default);
  ArchiveReader(ArchiveReader&&) noexcept;
  ArchiveReader& operator=(ArchiveReader&&) noexcept;
  ~ArchiveReader();

  const std::string& path() const;
  const ArchiveInfo& info() const;
  const std::vector<ArchiveRow>& rows() const;
  std::optional<size_t> find_row(int64_t global_index) const;
  // The valid region of row `row` (width*height*3 bytes, row-major RGB). Throws unless the row is
  // Done.
  std::vector<uint8_t> read_image(size_t row) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct MergeOptions {
  bool allow_incomplete = false;  // accept pending/failed rows (copied with their status)
  bool overwrite = false;         // replace an existing output file
};

struct MergeSummary {
  int64_t rows = 0, done = 0, failed = 0, pending = 0;
};

// Joins the shard archives of one job into `out`: same fingerprint, every global index
// 0..total_items-1 present exactly once across the inputs, every row done unless
// options.allow_incomplete. Rows come out ordered by index with images and per-row datasets
// identical to a single-process run of the job (canvas = the largest row; the inputs' gzip level).
// Written to a temporary file and renamed, so `out` never holds a partial merge.
MergeSummary merge_archives(const std::string& out, const std::vector<std::string>& inputs,
                            const MergeOptions& options = {});

// A few lines for `sd_mpi inspect`: format and version, rows and their done/failed/pending counts,
// canvas and image sizes, model, created, shard, file size. An archive that a running job holds
// open is read without the lock, and the summary says it is a snapshot.
std::string describe_archive(const std::string& path);

#ifndef SDMPI_HAVE_HDF5
// ---- stubs for builds without HDF5 ------------------------------------------------------------
[[noreturn]] inline void archive_unavailable() {
  throw Error("this sd_mpi was built without HDF5: archives (--archive, merge, inspect of .h5) are not available");
}
struct ArchiveWriter::Impl {};
struct ArchiveReader::Impl {};
inline ArchiveWriter::ArchiveWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
inline ArchiveWriter ArchiveWriter::create(const std::string&, const std::vector<WorkItem>&, const ArchiveInfo&,
                                           const ArchiveOptions&) { archive_unavailable(); }
inline ArchiveWriter ArchiveWriter::open_existing(const std::string&, const std::string&, const ArchiveOptions&) {
  archive_unavailable();
}
inline ArchiveWriter::ArchiveWriter(ArchiveWriter&&) noexcept = default;
inline ArchiveWriter& ArchiveWriter::operator=(ArchiveWriter&&) noexcept = default;
inline ArchiveWriter::~ArchiveWriter() = default;
inline void ArchiveWriter::write_image(int64_t, const uint8_t*, int, int) { archive_unavailable(); }
inline void ArchiveWriter::write_encoded_image(int64_t, const std::vector<uint8_t>&, int, int) { archive_unavailable(); }
inline void ArchiveWriter::mark_failed(int64_t, const std::string&) { archive_unavailable(); }
inline void ArchiveWriter::close() { archive_unavailable(); }
inline const std::string& ArchiveWriter::path() const { archive_unavailable(); }
inline const ArchiveInfo& ArchiveWriter::info() const { archive_unavailable(); }
inline std::vector<int64_t> ArchiveWriter::indices() const { archive_unavailable(); }
inline std::vector<int64_t> ArchiveWriter::done_indices() const { archive_unavailable(); }
inline std::vector<int64_t> ArchiveWriter::failed_indices() const { archive_unavailable(); }
inline RowStatus ArchiveWriter::status(int64_t) const { archive_unavailable(); }
inline ArchiveReader::ArchiveReader(const std::string&, Locking) { archive_unavailable(); }
inline ArchiveReader::ArchiveReader(ArchiveReader&&) noexcept = default;
inline ArchiveReader& ArchiveReader::operator=(ArchiveReader&&) noexcept = default;
inline ArchiveReader::~ArchiveReader() = default;
inline const std::string& ArchiveReader::path() const { archive_unavailable(); }
inline const ArchiveInfo& ArchiveReader::info() const { archive_unavailable(); }
inline const std::vector<ArchiveRow>& ArchiveReader::rows() const { archive_unavailable(); }
inline std::optional<size_t> ArchiveReader::find_row(int64_t) const { archive_unavailable(); }
inline std::vector<uint8_t> ArchiveReader::read_image(size_t) const { archive_unavailable(); }
inline MergeSummary merge_archives(const std::string&, const std::vector<std::string>&, const MergeOptions&) {
  archive_unavailable();
}
inline std::string describe_archive(const std::string&) { archive_unavailable(); }
#endif  // !SDMPI_HAVE_HDF5

}  // namespace sdmpi
