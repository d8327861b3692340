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
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/tensor.h"

namespace sdmpi {

class SafetensorsFile {
 public:
  struct Entry {
    DType dtype;
    Shape shape;
    uint64_t begin = 0;  // offsets in the data buffer
    uint64_t end = 0;
  };

  // Maps and validates `path`; throws InputError on any defect.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
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
  // A zero-copy view of one tensor; throws InputError if absent or of an unsupported dtype.
  // (A tensor whose bytes are not aligned to its element size, as in files whose header was not
  // padded, is copied once to aligned memory that lives as long as this object.)
  WeightView view(const std::string& name) const;
  // One tensor converted to float32 (tests, tools).
  std::vector<float> to_f32(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  void parse_header();  // fills metadata_/entries_/unsupported_ from map_; throws InputError
  std::string path_;
  bool mapped_ = false;         // map_ is an mmap (else it points into owned_)
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
