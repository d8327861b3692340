// What the CUDA backend's entry points share with and without CUDA (this file builds in both):
// the probe's summary line and the --device choice. probe.cpp (CUDA builds) and no_cuda.cpp
// (builds without CUDA) provide probe_cuda() and make_cuda_backend().
#include <cstdio>

#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"

namespace sdmpi {

std::string cuda_version_string(int version) {
  return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}

std::string CudaProbe::summary() const {
  if (!usable()) return "no usable CUDA GPU: " + reason;
  std::string s = "driver " + cuda_version_string(driver_version) + ", runtime " + cuda_version_string(runtime_version) +
                  ", " + std::to_string(devices.size()) + (devices.size() == 1 ? " device:" : " devices:");
  for (const CudaDeviceInfo& d : devices) {
    char mem[32];
    std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(d.total_memory) / (1024.0 * 1024.0 * 1024.0));
    s += " cuda:" + std::to_string(d.index) + " " + d.name + " (sm_" + std::to_string(d.cc_major) +
         std::to_string(d.cc_minor) + ", " + mem + ")";
    if (d.index + 1 < static_cast<int>(devices.size())) s += ";";
  }
  return s;
}

std::unique_ptr<Backend> open_cuda_backend(int device, DType compute, bool required, std::string* why_not) {
  try {
    return make_cuda_backend(device, compute);
  } catch (const Error& e) {
    if (required) throw Error(std::string("--device cuda: ") + e.what());
    if (why_not) *why_not = e.what();
    return nullptr;
  }
}

}  // namespace sdmpi
