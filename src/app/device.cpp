#include "app/device.h"

#include <omp.h>

#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi::app {

namespace {
bool cuda_usable(std::string* why) {
  CudaProbe probe = probe_cuda();  // a build without CUDA says so here
  if (!probe.usable()) *why = probe.reason;
  return probe.usable();
}
}  // namespace

DType resolve_precision(const std::string& precision, const std::string& device) {
  if (precision == "auto") {
    if (device == "cpu") return DType::F32;
    std::string why;
    return (device == "cuda" || cuda_usable(&why)) ? DType::F16 : DType::F32;
  }
  DType t = DType::F32;
  if (!parse_dtype(precision, &t)) throw InputError("--precision " + precision + ": expected fp32, fp16 or bf16");
  if (device == "cpu" && t != DType::F32)
    throw InputError("--precision " + precision + ": the CPU backend computes in fp32 only");
  return t;
}

std::unique_ptr<Backend> select_backend(const std::string& device, DType precision, const WorldInfo& world,
                                        bool allow_gpu_sharing, int threads, int64_t cpu_winograd_bytes,
                                        std::string* device_line) {
  auto say = [&](const std::string& line) {
    if (device_line) *device_line = line;
    else log::info(line);
  };
  // The log prefix already names the rank when there are several.
  std::string where = "host " + world.host + ", local rank " + std::to_string(world.local_rank) + "/" +
                      std::to_string(world.local_size);
  bool want_gpu = device == "cuda" || device == "auto";
  std::string why;
  if (want_gpu && cuda_usable(&why)) {
    CudaProbe probe = probe_cuda();
    int index = choose_device(world.local_rank, world.local_size, static_cast<int>(probe.devices.size()), allow_gpu_sharing);
    // A GPU that is visible but unusable (no code for its architecture, ...) is an error for
    // --device cuda and a fallback to the CPU, with the reason, for --device auto.
    auto backend = open_cuda_backend(index, precision, device == "cuda", &why);
    if (backend) {
      say(where + ": " + backend->name() + ", " + dtype_name(precision));
      return backend;
    }
  }
  if (device == "cuda") throw Error("--device cuda: no usable GPU on " + world.host + ": " + why);
  if (precision != DType::F32 && device == "auto") log::warn(where + ": no usable GPU (" + why + "); the CPU computes in fp32");
  if (threads <= 0) threads = std::max(1, omp_get_num_procs() / std::max(1, world.local_size));
  auto backend = make_cpu_backend(threads, cpu_winograd_bytes);
  say(where + ": " + backend->name() + (device == "auto" && !why.empty() ? " (no GPU: " + why + ")" : ""));
  return backend;
}

}  // namespace sdmpi::app
