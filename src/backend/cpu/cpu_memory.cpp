// Recycled host blocks for the CPU backend (see cpu_memory.h).
#include "backend/cpu/cpu_memory.h"

#include <cstdlib>
#include <new>

namespace sdmpi::cpu {

namespace {

// Storage over a pooled block; hands the block back instead of freeing it.
class PooledHostStorage final : public Storage {
 public:
  PooledHostStorage(std::shared_ptr<HostBlockPool> pool, void* data, size_t bytes, size_t capacity)
      : Storage(data, bytes, Device::CPU), pool_(std::move(pool)), capacity_(capacity) {}
  ~PooledHostStorage() override { pool_->give_back(data_, capacity_); }

 private:
  std::shared_ptr<HostBlockPool> pool_;
  size_t capacity_;
};

constexpr size_t kGranule = size_t{1} << 16;  // capacities are multiples of 64 KiB

}  // namespace

HostBlockPool::~HostBlockPool() {
  for (auto& [capacity, data] : free_) std::free(data);
}

Tensor HostBlockPool::tensor(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  if (bytes < kMinPooledBytes) return Tensor::host(shape, dtype);
  void* data = nullptr;
  size_t capacity = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The smallest free block that fits, if it wastes at most a quarter.
    auto it = free_.lower_bound(bytes);
    if (it != free_.end() && it->first <= bytes + bytes / 4 + kGranule) {
      capacity = it->first;
      data = it->second;
      cached_ -= capacity;
      free_.erase(it);
    }
  }
  if (!data) {
    capacity = (bytes + kGranule - 1) / kGranule * kGranule;
    data = std::aligned_alloc(4096, capacity);
    if (!data) throw std::bad_alloc();
  }
  auto storage = std::make_shared<PooledHostStorage>(shared_from_this(), data, bytes, capacity);
  return Tensor(std::move(storage), shape, dtype);
}

void HostBlockPool::give_back(void* data, size_t capacity) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cached_ + capacity <= max_cached_) {
      free_.emplace(capacity, data);
      cached_ += capacity;
      return;
    }
  }
  std::free(data);
}

size_t HostBlockPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

}  // namespace sdmpi::cpu
