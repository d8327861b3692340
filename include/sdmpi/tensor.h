// Tensor: a shape, an element type and a view into device memory that a backend owns.
//
// Tensors are always dense and row-major (C order). Image activations are channels-last:
// [B, H, W, C], so a transformer block's token view [B, H*W, C] is a free reshape. Views share
// their storage; the storage is freed when its last tensor goes. Only two kinds of view exist,
// because the models need no more: reshape (same elements) and rows (a range of the first
// dimension, e.g. the unconditional and conditional halves of a CFG batch).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/dtype.h"

namespace sdmpi {

enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 64, 64, 320]"

// Memory owned by a backend. Subclasses free it in their destructor.
class Storage {
 public:
  Storage(void* data, size_t bytes, Device device) : data_(data), bytes_(bytes), device_(device) {}
  virtual ~Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 protected:
  void* data_;
  size_t bytes_;
  Device device_;
};

// 64-byte aligned host memory.
class HostStorage final : public Storage {
 public:
  explicit HostStorage(size_t bytes);
  ~HostStorage() override;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, size_t byte_offset = 0);

  // A new host tensor (uninitialised).
  static Tensor host(const Shape& shape, DType dtype = DType::F32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // i < 0 counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::CPU; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  // Typed access to float32 host data; throws if the tensor is not F32.
  float* f32() const;

  // Same elements, another shape (numel must match).
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) of the first dimension.
  Tensor rows(int64_t begin, int64_t end) const;

  std::string describe() const;  // "F32[2, 77, 768] on cpu"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace sdmpi
