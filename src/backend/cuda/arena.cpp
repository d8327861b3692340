// DevicePool: best-fit sub-allocation over large cudaMalloc chunks (see arena.h for the design).
#include "backend/cuda/arena.h"

#include <cuda_runtime.h>

#include <cstdio>

#include "cuda_check.cuh"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi::cuda {
namespace {

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

DevicePool::DevicePool(std::string name, int device, size_t min_chunk, std::shared_ptr<int64_t> driver_allocations)
    : name_(std::move(name)),
      device_(device),
      min_chunk_(round_up(min_chunk, kAlignment)),
      driver_allocations_(std::move(driver_allocations)) {}

DevicePool::~DevicePool() {
  if (chunks_.empty()) return;
  // Work queued on any stream may still use the memory; cudaFree does not promise to wait for it.
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device_);
  cudaDeviceSynchronize();
  for (auto& [ptr, size] : chunks_) cudaFree(ptr);  // errors ignored: nothing to do about them here
  cudaSetDevice(previous);
}

void DevicePool::add_chunk(size_t bytes) {
  if (!growth_)
    throw Error("GPU memory pool '" + name_ + "' may not grow now (a request of " + mib(bytes) +
                " while growth is off; it holds " + mib(reserved_) + ", " + mib(in_use_) + " in use)");
  size_t size = std::max(round_up(bytes, kAlignment), min_chunk_);
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation && size > round_up(bytes, kAlignment)) {
    cudaGetLastError();  // clear the sticky-free error and try exactly what is needed
    size = round_up(bytes, kAlignment);
    err = cudaMalloc(&ptr, size);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error("out of GPU memory: pool '" + name_ + "' needs " + mib(size) + " more (it holds " + mib(reserved_) +
                ", " + mib(in_use_) + " in use; the device has " + mib(free_b) + " free of " + mib(total_b) +
                "): " + cudaGetErrorString(err));
  }
  ++*driver_allocations_;
  int id = static_cast<int>(chunks_.size());
  chunks_.emplace_back(ptr, size);
  reserved_ += size;
  uintptr_t addr = reinterpret_cast<uintptr_t>(ptr);
  blocks_.emplace(addr, Block{size, id, true});
  insert_free(addr, size);
  log::debug("cuda: pool '" + name_ + "' grew by " + mib(size) + " to " + mib(reserved_));
}

void* DevicePool::allocate(size_t bytes) {
  size_t size = round_up(std::max<size_t>(bytes, 1), kAlignment);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.lower_bound({size, 0});
  if (it == free_.end()) {
    add_chunk(size);
    it = free_.lower_bound({size, 0});
    SDMPI_CHECK(it != free_.end(), "a new chunk holds no block for the request");
  }
  auto [block_size, addr] = *it;
  free_.erase(it);
  Block& block = blocks_.at(addr);
  block.free = false;
  if (block_size - size >= kAlignment) {  // split: the tail stays free
    block.size = size;
    uintptr_t tail = addr + size;
    blocks_.emplace(tail, Block{block_size - size, block.chunk, true});
    insert_free(tail, block_size - size);
  }
  in_use_ += blocks_.at(addr).size;
  peak_ = std::max(peak_, in_use_);
  return reinterpret_cast<void*>(addr);
}

void DevicePool::release(void* ptr) noexcept {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = blocks_.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == blocks_.end() || it->second.free) {
    std::fprintf(stderr, "sd_mpi: internal error: GPU pool '%s' asked to free %p, which it did not hand out\n",
                 name_.c_str(), ptr);
    return;
  }
  in_use_ -= it->second.size;
  it->second.free = true;
  // Merge with the next block, then with the previous one, when free and in the same chunk.
  auto next = std::next(it);
  if (next != blocks_.end() && next->second.free && next->second.chunk == it->second.chunk &&
      it->first + it->second.size == next->first) {
    erase_free(next->first, next->second.size);
    it->second.size += next->second.size;
    blocks_.erase(next);
  }
  if (it != blocks_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.free && prev->second.chunk == it->second.chunk && prev->first + prev->second.size == it->first) {
      erase_free(prev->first, prev->second.size);
      prev->second.size += it->second.size;
      blocks_.erase(it);
      it = prev;
    }
  }
  insert_free(it->first, it->second.size);
}

void DevicePool::reserve(size_t bytes) {
  size_t size = round_up(std::max<size_t>(bytes, 1), kAlignment);
  std::lock_guard<std::mutex> lock(mutex_);
  if (free_.lower_bound({size, 0}) == free_.end()) add_chunk(size);
}

void DevicePool::set_growth(bool allowed) {
  std::lock_guard<std::mutex> lock(mutex_);
  growth_ = allowed;
}

size_t DevicePool::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reserved_;
}

size_t DevicePool::in_use_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_use_;
}

size_t DevicePool::peak_in_use_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_;
}

}  // namespace sdmpi::cuda
