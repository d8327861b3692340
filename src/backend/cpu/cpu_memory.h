// Host memory for the CPU backend's op outputs: large blocks are recycled instead of freed.
//
// Why: glibc serves allocations over 32 MiB with a fresh mmap, and the kernel then faults in and
// zeroes every page on first touch. For the VAE's full-resolution activations (33 MB at 256×256,
// 134 MB at 512×512) that costs 2–5 times the arithmetic of an elementwise op. Blocks of at least
// 1 MiB whose last tensor goes away return to a per-backend free list (up to a cap) and serve the
// next output of a similar size; smaller tensors use plain HostStorage, which malloc handles well.
// Contents of a reused block are stale, which is fine: every op overwrites its whole output, and
// Backend::empty() promises uninitialised memory anyway.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>

#include "sdmpi/tensor.h"

namespace sdmpi::cpu {

class HostBlockPool : public std::enable_shared_from_this<HostBlockPool> {
 public:
  static constexpr size_t kMinPooledBytes = size_t{1} << 20;

  explicit HostBlockPool(size_t max_cached_bytes) : max_cached_(max_cached_bytes) {}
  ~HostBlockPool();
  HostBlockPool(const HostBlockPool&) = delete;
  HostBlockPool& operator=(const HostBlockPool&) = delete;

  // A host tensor of `shape`, from the pool when it is large.
  Tensor tensor(const Shape& shape, DType dtype = DType::F32);
  // Called by a pooled block's storage when its last tensor is gone.
  void give_back(void* data, size_t capacity);
  size_t cached_bytes() const;

 private:
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // capacity → block
  size_t cached_ = 0;
  size_t max_cached_;
};

}  // namespace sdmpi::cpu
