// Choosing the backend for a rank: --device auto|cpu|cuda and --precision, with the node-local
// rank binding of docs/design.md §6. Logs one line per rank: host, rank, local rank, device.
#pragma once

#include <memory>
#include <string>

#include "sdmpi/backend.h"
#include "sdmpi/cluster.h"

namespace sdmpi::app {

// "auto" precision: fp16 when the device can be a GPU, else fp32. The CPU computes in fp32 only.
DType resolve_precision(const std::string& precision, const std::string& device);

// The line naming the device is logged, or, with `device_line`, stored there for the caller to log
// later (generate binds devices before opening the outputs but says so after).
// `cpu_winograd_bytes`: what a CPU backend may keep Winograd's transformed weights in (-1: its own
// default, make_cpu_backend).
std::unique_ptr<Backend> select_backend(const std::string& device, DType precision, const WorldInfo& world,
                                        bool allow_gpu_sharing, int threads, int64_t cpu_winograd_bytes = -1,
                                        std::string* device_line = nullptr);

}  // namespace sdmpi::app
