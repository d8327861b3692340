// The one place a failed CUDA runtime call becomes an sdmpi::Error (kernels/cuda_check.cuh): the
// kernels and the backend above them report through it alike.
#include <string>

#include "cuda_check.cuh"

namespace sdmpi::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  throw Error(std::string("CUDA error: ") + call + " at " + file + ":" + std::to_string(line) + ": " +
              cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

}  // namespace sdmpi::cuda
