// Return-code checks for the CUDA runtime (this file; the backend's cuBLAS(Lt)/cuDNN checks are
// src/backend/cuda/library_check.h).
//
// Every call into those libraries goes through one of these macros. A failure throws sdmpi::Error
// with one line naming the call, the source position and the library's own error string, e.g.
//   "CUDA error: cudaMalloc(&p, bytes) at src/backend/cuda/arena.cpp:57: out of memory (2)".
// Kernel launches are followed by SDMPI_CUDA_CHECK_LAUNCH(), which reports launch errors (bad
// configuration, no kernel image for this GPU) at the launch that caused them.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "sdmpi/error.h"

namespace sdmpi::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

}  // namespace sdmpi::cuda

#define SDMPI_CUDA_CHECK(call)                                                  \
  do {                                                                          \
    cudaError_t sdmpi_err_ = (call);                                            \
    if (sdmpi_err_ != cudaSuccess)                                              \
      ::sdmpi::cuda::throw_cuda_error(sdmpi_err_, #call, __FILE__, __LINE__);   \
  } while (0)

#define SDMPI_CUDA_CHECK_LAUNCH() SDMPI_CUDA_CHECK(cudaGetLastError())
