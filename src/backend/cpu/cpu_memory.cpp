// Recycled host blocks for the CPU backend (see cpu_memory.h).
#include "backend/cpu/cpu_memory.h"

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
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
constexpr size_t kHugePage = size_t{2} << 20;

}  // namespace

// `bytes` of host memory, 64-byte aligned; from 2 MiB on, aligned to a 2 MiB page and advised as
// huge (transparent huge pages in madvise mode, as on this project's machines and Ubuntu's
// kernels, give 4 KiB pages otherwise; in "always" mode the advice changes nothing). An SD 1.5
// model converted from F16 is 4.3 GB of F32 weights: in 4 KiB pages, over a million page faults
// at load, and every weight stream of the GEMM crosses a page every 4 KiB.
// The size is not rounded up: a tail short of a whole huge page stays in small pages, so nothing
// is wasted. Released with std::free. Also the backend's per-thread scratch (FloatScratch).
void* allocate_host(size_t bytes) {
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  void* p = nullptr;
  if (posix_memalign(&p, align, std::max<size_t>((bytes + 63) / 64 * 64, 64)) != 0) throw std::bad_alloc();
  if (align == kHugePage) madvise(p, bytes, MADV_HUGEPAGE);  // advice: where it fails, small pages
  return p;
}

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
    data = allocate_host(capacity);
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

OwnedWeightStorage::OwnedWeightStorage(size_t bytes)
    : WeightStorage(allocate_host(bytes), bytes, Device::CPU) {}

OwnedWeightStorage::~OwnedWeightStorage() { std::free(data_); }

void KeptWeightCache::forget(std::map<Key, Entry>::iterator it) {
  used_ -= it->second.bytes;
  if (is_panels(it->first)) used_by_panels_ -= it->second.bytes;
  entries_.erase(it);
}

void KeptWeightCache::drop_expired() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    auto next = std::next(it);
    if (it->second.owner.expired()) forget(it);
    it = next;
  }
}

const float* KeptWeightCache::find_or_make(const Tensor& w, int kind, bool packed, int64_t floats,
                                           const std::function<void(float*)>& make) {
  const std::shared_ptr<Storage>& storage = w.storage();
  if (budget_ <= 0 || !storage || !dynamic_cast<const WeightStorage*>(storage.get())) return nullptr;
  // On huge pages from 2 MiB on (allocate_host): a first image fills gigabytes of these, and 4 KiB
  // page faults were a visible part of its time. The budget counts what is allocated.
  const int64_t bytes = (floats * static_cast<int64_t>(sizeof(float)) + 63) / 64 * 64;
  const Key key{storage.get(), w.raw(), kind, packed};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    if (it->second.owner.lock() == storage) return it->second.data.get();
    forget(it);  // a freed weight's entry; its address was reused
  }
  drop_expired();  // freed weights' copies go now, not when the budget runs out
  const bool panels = is_panels(key);
  if (used_ + bytes > budget_ || (panels && used_by_panels_ + bytes > budget_ / 4)) return nullptr;
  Entry e;
  e.owner = storage;
  try {
    e.data.reset(static_cast<float*>(allocate_host(static_cast<size_t>(bytes))));
  } catch (const std::bad_alloc&) {
    return nullptr;  // the layer derives its form per call instead
  }
  e.bytes = bytes;
  make(e.data.get());
  used_ += bytes;
  if (panels) used_by_panels_ += bytes;
  return entries_.emplace(key, std::move(e)).first->second.data.get();
}

const float* KeptWeightCache::winograd(const Tensor& w, int m, bool packed, int threads) {
  if (w.rank() != 4) return nullptr;
  const int64_t cout = w.dim(0), cin = w.dim(3);
  return find_or_make(w, m, packed, winograd_kept_floats(m, cout, cin, packed),
                      [&](float* dst) { winograd_prepare_weights(m, w.f32(), cout, cin, packed, dst, threads); });
}

const float* KeptWeightCache::gemm_panels(const Tensor& w, int parts) {
  if (w.rank() < 2 || parts < 1 || w.dim(0) % parts != 0) return nullptr;
  const int64_t N = w.dim(0) / parts, K = N > 0 ? w.numel() / w.dim(0) : 0;
  if (N <= 0 || K <= 0) return nullptr;
  const int64_t part_floats = gemm_packed_floats(N, K);
  return find_or_make(w, -parts, true, parts * part_floats, [&](float* dst) {
    for (int p = 0; p < parts; ++p) gemm_pack_weights(w.f32() + p * N * K, N, K, dst + p * part_floats);
  });
}

int64_t KeptWeightCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

size_t HostBlockPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

}  // namespace sdmpi::cpu
