// Start-up test: does this build's code run on the chosen GPU?
//
// A driver and a device can be present while our kernels still cannot run: the binary may carry no
// machine code or PTX for the GPU's architecture, or the GPU may be in a bad state. Launching one
// one-thread kernel that writes a known value, and reading it back, catches all of these at start-up
// with a clear message instead of at the first op of a job.
#include "device_check.cuh"

#include <cuda_runtime.h>

namespace sdmpi::kernels {
namespace {

__global__ void write_marker(unsigned* out) { *out = 0x5d5d0001u + threadIdx.x; }

}  // namespace

std::string device_check() {
  unsigned* d = nullptr;
  cudaError_t err = cudaMalloc(&d, sizeof(unsigned));
  if (err != cudaSuccess) return std::string("cudaMalloc failed: ") + cudaGetErrorString(err);
  write_marker<<<1, 1>>>(d);
  err = cudaGetLastError();
  unsigned host = 0;
  if (err == cudaSuccess) err = cudaMemcpy(&host, d, sizeof host, cudaMemcpyDeviceToHost);
  cudaFree(d);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("a test kernel did not run: ") + cudaGetErrorString(err);
  }
  if (host != 0x5d5d0001u) return "a test kernel ran but wrote a wrong value";
  return "";
}

}  // namespace sdmpi::kernels
