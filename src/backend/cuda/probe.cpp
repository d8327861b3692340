// Device probing and the error reporting of cuBLAS and cuDNN (the runtime's is kernels/cuda_check.cu).
//
// probe_cuda() must work where no GPU does. The CUDA runtime loads the driver (libcuda.so.1) with
// dlopen on first use, whether the runtime is linked statically or dynamically; without a driver its
// calls fail with cudaErrorInsufficientDriver and cudaDriverGetVersion reports 0, so nothing here
// crashes: we only translate the runtime's answers into one line a user can act on. The binary
// itself still needs the CUDA libraries it links (cuBLAS, cuDNN) to be installed to start at all.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "backend/cuda/library_check.h"
#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace cuda {

void throw_cublas_error(cublasStatus_t st, const char* call, const char* file, int line) {
  throw Error(std::string("cuBLAS error: ") + call + " at " + file + ":" + std::to_string(line) + ": " +
              cublasGetStatusString(st) + " (" + cublasGetStatusName(st) + ")");
}

void throw_cudnn_error(cudnnStatus_t st, const char* call, const char* file, int line) {
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  std::string more = detail[0] ? std::string(" [") + detail + "]" : "";
  throw Error(std::string("cuDNN error: ") + call + " at " + file + ":" + std::to_string(line) + ": " +
              cudnnGetErrorString(st) + more);
}

}  // namespace cuda

CudaProbe probe_cuda() {
  CudaProbe p;
  cudaRuntimeGetVersion(&p.runtime_version);
  if (cudaDriverGetVersion(&p.driver_version) != cudaSuccess) p.driver_version = 0;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    if (err == cudaErrorStubLibrary) {
      p.reason = "the CUDA driver library found is the toolkit's stub, not a driver (no NVIDIA driver installed)";
    } else if (p.driver_version == 0) {
      p.reason = "no NVIDIA driver (libcuda.so.1 not found or not loadable)";
    } else if (err == cudaErrorInsufficientDriver) {
      p.reason = "the NVIDIA driver is too old: it supports CUDA " + cuda_version_string(p.driver_version) +
                 ", this build needs CUDA " + cuda_version_string(p.runtime_version) + " (update the driver)";
    } else if (err == cudaErrorNoDevice) {
      p.reason = "no CUDA device visible";
      if (visible) p.reason += std::string(" (CUDA_VISIBLE_DEVICES=\"") + visible + "\")";
    } else {
      p.reason = std::string("CUDA initialisation failed: ") + cudaGetErrorString(err) + " (" +
                 cudaGetErrorName(err) + ")";
    }
    return p;
  }
  if (count == 0) {
    p.reason = "no CUDA device visible";
    return p;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) {
      cudaGetLastError();
      p.devices.clear();
      p.reason = "cannot read the properties of cuda:" + std::to_string(i) + ": " + cudaGetErrorString(err);
      return p;
    }
    CudaDeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    d.total_memory = prop.totalGlobalMem;
    d.multiprocessors = prop.multiProcessorCount;
    p.devices.push_back(d);
  }
  return p;
}

}  // namespace sdmpi
