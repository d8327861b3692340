// The CUDA backend of a build without CUDA: probing finds no GPU and says why, so `--device auto`
// runs on the CPU and `--device cuda` fails with that reason, with no #if in the app.
#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace {
constexpr const char* kNoCuda = "this sd_mpi was built without CUDA";
}

CudaProbe probe_cuda() {
  CudaProbe p;
  p.reason = kNoCuda;
  return p;
}

std::unique_ptr<Backend> make_cuda_backend(int, DType) { throw Error(kNoCuda); }

}  // namespace sdmpi
