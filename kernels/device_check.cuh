// Launcher for the start-up test kernel (kernels/device_check.cu).
#pragma once

#include <string>

namespace sdmpi::kernels {

// Runs one tiny kernel on the current device and reads its result back. Returns "" when it worked,
// else the reason (e.g. "no kernel image is available for execution on the device" on a GPU this
// build has no code for).
std::string device_check();

}  // namespace sdmpi::kernels
