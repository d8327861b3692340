// safetensors files: a memory-mapped, validating reader and a writer.
//
// Format (huggingface/safetensors): u64 little-endian header length N, N bytes of UTF-8 JSON
// {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}},
// then the data buffer (offsets relative to its start, end exclusive, little-endian C order).
// The reader maps the file read-only and hands out zero-copy views. It rejects, with one message
// naming the file and the tensor or byte at fault: a header length past the file or over 100 MB,
// invalid JSON or a non-object header, unknown or unsupported dtypes (F32, F16 and BF16 are
// supported; others are named), shapes whose byte size differs from the offsets, offsets outside
// the data buffer, overlapping tensors and duplicate names.
// Tensors of a known but unsupported dtype (e.g. the I64 `position_ids` buffer that many SD
// checkpoints carry) are validated like the others and listed in unsupported(); only view() of
// one of them fails, naming the dtype.
// A file changed on disk after open() (truncated, or rewritten in place) would make its mapped
// pages fault (SIGBUS) or hold other bytes: view() compares the file's size and modification time
// with those seen at open() first and refuses, in one line naming the file, before any of its
// data pages is touched.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/tensor.h"

namespace sdmpi {

class SafetensorsFile : public std::enable_shared_from_this<SafetensorsFile> {
 public:
  struct Entry {
    DType dtype;
    Shape shape;
    uint64_t begin = 0;  // offsets in the data buffer
    uint64_t end = 0;
  };

  // Maps and validates `path`; throws InputError on any defect. With `in_place`, views promise
  // that their bytes stay as they are while the file object lives (WeightView::keep_alive), so a
  // backend may compute from the mapping itself instead of a copy: the caller accepts that the
  // file must then not change on disk while the weights are in use (--map-weights).
  static std::shared_ptr<SafetensorsFile> open(const std::string& path, bool in_place = false);
  // The same checks on bytes in memory (fuzzing, tests); `label` stands for the path in messages.
  static std::shared_ptr<SafetensorsFile> from_bytes(const std::string& label,
                                                     std::vector<uint8_t> bytes);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // Tensors of a known dtype that sd_mpi does not read: name → dtype string ("I64").
  const std::map<std::string, std::string>& unsupported() const { return unsupported_; }
  // Size of the whole file (or buffer) in bytes.
  size_t size() const { return map_size_; }
  // Throws InputError when the file on disk is no longer the one mapped (size or modification
  // time changed since open()); no-op for from_bytes().
  void check_unchanged() const;
  // A zero-copy view of one tensor; throws InputError if absent, of an unsupported dtype, or when
  // the file changed on disk (check_unchanged()). from_bytes() views and, with open(in_place),
  // mapped ones carry this object as their keep_alive.
  // (A tensor whose bytes are not aligned to its element size, as in files whose header was not
  // padded, is copied once to aligned memory that lives as long as this object.)
  WeightView view(const std::string& name) const;
  // One tensor converted to float32 (tests, tools).
  std::vector<float> to_f32(const std::string& name) const;
  // A hint that bytes [offset, offset + length) of tensor `name` were copied (converted, uploaded)
  // and need not stay resident: the whole pages inside that range leave this process's memory
  // (madvise MADV_DONTNEED on the read-only private file mapping; a later view() faults them back
  // in from the page cache or the file, unchanged). Without it the mapped file pages a load touched
  // stay counted in the RSS next to their float32 copies (6.5 GB of F16 SDXL pages, peak RSS 21.9
  // GiB at 1024²: bench/results/cpu/2026-12-05-sdxl-1024-rss.md). No-op for from_bytes() and
  // open(in_place) files, whose views may be in use in place. length < 0: to the tensor's end.
  void drop_resident(const std::string& name, uint64_t offset = 0, int64_t length = -1) const noexcept;

 private:
  SafetensorsFile() = default;
  void parse_header();  // fills metadata_/entries_/unsupported_ from map_; throws InputError
  std::string path_;
  bool mapped_ = false;         // map_ is an mmap (else it points into owned_)
  bool in_place_ = false;       // views may be used in place (keep_alive set)
  int fd_ = -1;                 // the mapped file, kept open for check_unchanged()
  int64_t mtime_ns_ = 0;        // its modification time at open()
  std::vector<uint8_t> owned_;  // from_bytes() storage
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data buffer
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> unsupported_;
  struct AlignedCopies;  // lazily made copies of misaligned tensors
  std::unique_ptr<AlignedCopies> aligned_copies_;
};

// Builds a safetensors file in memory and writes it atomically (temporary file, then rename).
// Layout as the reference writer makes it: tensors ordered by alignment (F32 first) then name,
// header padded with spaces to a multiple of 8 bytes so every tensor is aligned in the file.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, const Shape& shape, const void* data);
  void add_f32(const std::string& name, const Shape& shape, const std::vector<float>& data);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;

 private:
  struct Item {
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Item> items_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace sdmpi
