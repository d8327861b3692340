#include "sdmpi/tensor.h"

#include <cstdlib>
#include <new>
#include <sstream>

#include "sdmpi/error.h"

namespace sdmpi {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

HostStorage::HostStorage(size_t bytes) : Storage(nullptr, bytes, Device::CPU) {
  size_t rounded = (bytes + 63) / 64 * 64;
  data_ = std::aligned_alloc(64, rounded ? rounded : 64);
  if (!data_) throw std::bad_alloc();
}

HostStorage::~HostStorage() { std::free(data_); }

Tensor::Tensor(std::shared_ptr<Storage> storage, Shape shape, DType dtype, size_t byte_offset)
    : storage_(std::move(storage)), offset_(byte_offset), shape_(std::move(shape)), dtype_(dtype) {
  for (int64_t d : shape_) SDMPI_CHECK(d >= 0, "negative dimension in " + shape_str(shape_));
  SDMPI_CHECK(!storage_ || offset_ + nbytes() <= storage_->bytes(),
              "tensor " + shape_str(shape_) + " exceeds its storage");
}

Tensor Tensor::host(const Shape& shape, DType dtype) {
  auto storage = std::make_shared<HostStorage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  return Tensor(std::move(storage), shape, dtype);
}

int64_t Tensor::dim(int i) const {
  int r = rank();
  if (i < 0) i += r;
  SDMPI_CHECK(i >= 0 && i < r, "dimension index out of range for " + shape_str(shape_));
  return shape_[static_cast<size_t>(i)];
}

float* Tensor::f32() const {
  SDMPI_CHECK(dtype_ == DType::F32, "expected an F32 tensor, got " + describe());
  SDMPI_CHECK(device() == Device::CPU, "host access to a device tensor: " + describe());
  return static_cast<float*>(raw());
}

Tensor Tensor::reshape(const Shape& shape) const {
  SDMPI_CHECK(shape_numel(shape) == numel(),
              "reshape " + shape_str(shape_) + " to " + shape_str(shape) + " changes the size");
  return Tensor(storage_, shape, dtype_, offset_);
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  SDMPI_CHECK(rank() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
              "rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " + shape_str(shape_));
  Shape s = shape_;
  int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  s[0] = end - begin;
  return Tensor(storage_, s, dtype_, offset_ + static_cast<size_t>(begin * row) * dtype_size(dtype_));
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape_) + (device() == Device::CPU ? " on cpu" : " on cuda");
}

}  // namespace sdmpi
