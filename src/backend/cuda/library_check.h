// Return-code checks for cuBLAS/cuBLASLt and cuDNN, in the style of cuda_check.h: a failure throws
// sdmpi::Error naming the call, the source position and the library's error string.
#pragma once

#include <cublasLt.h>
#include <cudnn.h>

#include "cuda_check.cuh"

namespace sdmpi::cuda {

[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line);
[[noreturn]] void throw_cudnn_error(cudnnStatus_t st, const char* call, const char* file, int line);

}  // namespace sdmpi::cuda

#define SDMPI_CUBLAS_CHECK(call)                                                \
  do {                                                                          \
    cublasStatus_t sdmpi_st_ = (call);                                          \
    if (sdmpi_st_ != CUBLAS_STATUS_SUCCESS)                                     \
      ::sdmpi::cuda::throw_cublas_error(sdmpi_st_, #call, __FILE__, __LINE__);  \
  } while (0)

#define SDMPI_CUDNN_CHECK(call)                                                 \
  do {                                                                          \
    cudnnStatus_t sdmpi_st_ = (call);                                           \
    if (sdmpi_st_ != CUDNN_STATUS_SUCCESS)                                      \
      ::sdmpi::cuda::throw_cudnn_error(sdmpi_st_, #call, __FILE__, __LINE__);   \
  } while (0)
