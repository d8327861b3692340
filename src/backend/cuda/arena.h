// Device memory: caching pools over a few large cudaMalloc blocks.
//
// A DevicePool takes memory from the driver in large chunks (at least `min_chunk` bytes, or the
// request if larger) and hands out 256-byte aligned sub-blocks, best fit, splitting and coalescing
// neighbours on free. After the first pass over a run's shapes the pool holds enough memory and the
// step loop calls the driver no more: allocation is a map lookup. The choice of block depends only
// on the sequence of requests and frees, so the same sequence of ops lays out memory identically,
// which CUDA-graph capture relies on (see CudaBackend::run_graph).
//
// Freeing is immediate, with no event: all work of a backend runs on one stream in order, so a block
// freed on the host can only be reused by work queued after every earlier use of it. Anyone adding a
// second stream must free through events instead.
//
// The backend keeps three kinds of pools: weights (filled at load, then constant), activations
// (everything else outside graphs) and one private pool per captured graph. A tensor's storage keeps
// its pool alive, so a pool outlives every tensor cut from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "sdmpi/tensor.h"

namespace sdmpi::cuda {

class DevicePool : public std::enable_shared_from_this<DevicePool> {
 public:
  static constexpr size_t kAlignment = 256;

  // `driver_allocations` counts cudaMalloc calls across the pools of one backend.
  DevicePool(std::string name, int device, size_t min_chunk, std::shared_ptr<int64_t> driver_allocations);
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // A block of at least `bytes` (0 gives a minimal block). Grows the pool when no free block fits,
  // unless growth is off (then throws Error naming the request).
  void* allocate(size_t bytes);
  void release(void* ptr) noexcept;
  // Makes sure one free block of at least `bytes` exists (one chunk, if it must grow).
  void reserve(size_t bytes);
  void set_growth(bool allowed);

  const std::string& name() const { return name_; }
  size_t reserved_bytes() const;
  size_t in_use_bytes() const;
  size_t peak_in_use_bytes() const;

 private:
  struct Block {
    size_t size;
    int chunk;
    bool free;
  };
  void add_chunk(size_t bytes);  // caller holds mutex_
  void insert_free(uintptr_t addr, size_t size) { free_.emplace(size, addr); }
  void erase_free(uintptr_t addr, size_t size) { free_.erase({size, addr}); }

  std::string name_;
  int device_;
  size_t min_chunk_;
  std::shared_ptr<int64_t> driver_allocations_;
  mutable std::mutex mutex_;
  std::vector<std::pair<void*, size_t>> chunks_;
  std::map<uintptr_t, Block> blocks_;               // every block by address
  std::set<std::pair<size_t, uintptr_t>> free_;     // free blocks by (size, address): best fit
  size_t reserved_ = 0, in_use_ = 0, peak_ = 0;
  bool growth_ = true;
};

// Storage of a device tensor: a block of a pool, returned to it when the last tensor goes.
class CudaStorage final : public Storage {
 public:
  CudaStorage(std::shared_ptr<DevicePool> pool, void* data, size_t bytes)
      : Storage(data, bytes, Device::CUDA), pool_(std::move(pool)) {}
  ~CudaStorage() override { pool_->release(data_); }
  const std::shared_ptr<DevicePool>& pool() const { return pool_; }

 private:
  std::shared_ptr<DevicePool> pool_;
};

}  // namespace sdmpi::cuda
