// Host memory of the CPU backend: op outputs (large blocks recycled instead of freed), weights, and
// the weights' Winograd transforms kept for reuse.
//
// Why: glibc serves allocations over 32 MiB with a fresh mmap, and the kernel then faults in and
// zeroes every page on first touch. For the VAE's full-resolution activations (33 MB at 256×256,
// 134 MB at 512×512) that costs 2–5 times the arithmetic of an elementwise op. Blocks of at least
// 1 MiB whose last tensor goes away return to a per-backend free list (up to a cap) and serve the
// next output of a similar size; smaller tensors use plain HostStorage, which malloc handles well.
// Contents of a reused block are stale, which is fine: every op overwrites its whole output, and
// Backend::empty() promises uninitialised memory anyway.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <tuple>

#include "sdmpi/tensor.h"

namespace sdmpi::cpu {

// `bytes` of host memory, 64-byte aligned; from 2 MiB on, aligned to a 2 MiB page and advised as
// huge (see cpu_memory.cpp). Released with std::free (HostFree). Throws std::bad_alloc.
void* allocate_host(size_t bytes);
struct HostFree {
  void operator()(float* p) const { std::free(p); }
};

// A growable float buffer that a thread keeps between calls (declare it thread_local): fresh large
// buffers would be faulted in and zeroed by the kernel on every call. Large ones sit on 2 MiB
// pages (allocate_host), so the GEMM's streams over them (Winograd's transformed inputs and
// products, packed panels) do not take a TLB miss every 4 KiB. Contents are stale.
class FloatScratch {
 public:
  float* get(size_t n) {
    if (n > size_) {
      data_.reset(static_cast<float*>(allocate_host(std::max<size_t>(n, 1) * sizeof(float))));
      size_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<float, HostFree> data_;
  size_t size_ = 0;
};

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

// Forms the backend derives from uploaded weights and keeps, one copy per (weight, form), made on a
// layer's first call and kept within one byte budget; past it, a layer derives its form per call
// (the same bits). Two kinds:
// - Winograd's transformed weights (cpu_winograd.cpp). The transform is 20-35% of a Winograd
//   layer's time where few tiles share each weight (the UNet's 8×8-32×32 maps), and a kept copy is
//   16/9 (F(2,3)) or 4× (F(4,3)) the layer's weights, so the budget is what the resource plan
//   leaves free (docs/design.md, CPU backend).
// - The GEMM's packed panels of a linear's or a direct convolution's weight, for the products that
//   would otherwise pack W on every call (gemm_packs_weights_per_call: more rows than the few-rows
//   path takes, e.g. the UNet's 32×32 and 16×16 levels): the size of the weight itself. They save
//   1-5% of those products (a pack of W per call), Winograd's transforms 20-35% of their layers,
//   so panels may take at most a quarter of the budget: a large model's panels never crowd out the
//   transforms of the layers that come after them in a step.
// An entry holds a weak reference to its weight's storage: a weight freed (a model unloaded, a
// LoRA set unmerged) frees its entry's claim, and a new weight at the same address is never
// mistaken for it. Only uploaded weights (WeightStorage) are kept: other tensors may be written or
// reused with other contents.
class KeptWeightCache {
 public:
  explicit KeptWeightCache(int64_t budget_bytes) : budget_(budget_bytes) {}
  // The transformed weights of w under F(m,3) in the given form (winograd_kept_packed), or null
  // when they do not fit the budget.
  const float* winograd(const Tensor& w, int m, bool packed, int threads);
  // w as [N, K] (N = its first dimension: a linear's [N, K], a convolution's OHWI [Cout, kh·kw·Cin])
  // cut into `parts` equal blocks of rows, each packed as gemm_pack_weights packs it, one after
  // the other (part p at p · gemm_packed_floats(N / parts, K)); null when it does not fit.
  const float* gemm_panels(const Tensor& w, int parts);
  int64_t bytes() const;
  int64_t budget() const { return budget_; }

 private:
  struct Entry {
    std::weak_ptr<Storage> owner;
    std::unique_ptr<float, HostFree> data;  // 64-byte aligned: the GEMM's micro-kernels load panels aligned
    int64_t bytes = 0;
  };
  using Key = std::tuple<const Storage*, const void*, int, bool>;  // (storage, first element, kind, packed)
  static bool is_panels(const Key& key) { return std::get<2>(key) < 0; }
  void forget(std::map<Key, Entry>::iterator it);  // drops an entry and its claim on the budget
  // The entry for (w, kind, packed), made by make(dst) into `floats` floats when missing and within
  // the budget; kind: m (2, 4) for Winograd, -parts for GEMM panels.
  const float* find_or_make(const Tensor& w, int kind, bool packed, int64_t floats,
                            const std::function<void(float*)>& make);
  void drop_expired();  // with mu_ held
  mutable std::mutex mu_;
  std::map<Key, Entry> entries_;
  int64_t used_ = 0, used_by_panels_ = 0;
  int64_t budget_;
};

// Storage of an uploaded weight, written once at upload and never after: the only tensors whose
// derived forms (KeptWeightCache) the backend keeps.
class WeightStorage : public Storage {
 protected:
  using Storage::Storage;
};

// A weight's own 64-byte aligned host memory.
class OwnedWeightStorage final : public WeightStorage {
 public:
  explicit OwnedWeightStorage(size_t bytes);
  ~OwnedWeightStorage() override;
};

// Host memory that someone else owns (a mapped file, a node's shared weights), kept alive by
// `owner` as long as a tensor uses it. Read-only: weights are never written.
class BorrowedWeightStorage final : public WeightStorage {
 public:
  BorrowedWeightStorage(const void* data, size_t bytes, std::shared_ptr<const void> owner)
      : WeightStorage(const_cast<void*>(data), bytes, Device::CPU), owner_(std::move(owner)) {}

 private:
  std::shared_ptr<const void> owner_;
};

}  // namespace sdmpi::cpu
