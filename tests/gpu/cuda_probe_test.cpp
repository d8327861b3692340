// Device probing and selection. Unlike the other GPU tests these also run, and mean something, on a
// machine without a GPU or driver: probing must answer with a reason, never crash; --device cuda
// must fail with that reason; --device auto must hand back "no GPU" so the caller can fall back.
#include <gtest/gtest.h>

#include <string>

#include "gpu/gpu_test_util.h"
#include "sdmpi/error.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

TEST(CudaProbe, AnswersWithDevicesOrAReason) {
  const CudaProbe& p = probe();
  EXPECT_GT(p.runtime_version, 0);
  if (p.usable()) {
    EXPECT_TRUE(p.reason.empty());
    for (const CudaDeviceInfo& d : p.devices) {
      EXPECT_FALSE(d.name.empty());
      EXPECT_GE(d.cc_major, 1);
      EXPECT_GT(d.total_memory, 0u);
    }
    EXPECT_NE(p.summary().find("cuda:0"), std::string::npos) << p.summary();
  } else {
    EXPECT_FALSE(p.reason.empty());
    EXPECT_NE(p.summary().find(p.reason), std::string::npos) << p.summary();
    std::printf("probe: %s\n", p.summary().c_str());
  }
}

TEST(CudaProbe, DeviceChoiceWithoutAGpu) {
  if (probe().usable()) GTEST_SKIP() << "a GPU is present: " << probe().summary();
  // --device cuda: a clear error carrying the reason.
  try {
    open_cuda_backend(0, DType::F16, /*required=*/true, nullptr);
    FAIL() << "--device cuda succeeded without a usable GPU";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(probe().reason), std::string::npos) << e.what();
  }
  // --device auto: nullptr and the reason, for "no usable GPU (...); running on the CPU".
  std::string why;
  EXPECT_EQ(open_cuda_backend(0, DType::F16, /*required=*/false, &why), nullptr);
  EXPECT_EQ(why, probe().reason);
  EXPECT_THROW(make_cuda_backend(0, DType::F32), Error);
}

TEST(CudaProbe, DeviceChoiceWithAGpu) {
  SDMPI_REQUIRE_GPU();
  std::string why;
  std::unique_ptr<Backend> b = open_cuda_backend(0, DType::F16, /*required=*/false, &why);
  ASSERT_NE(b, nullptr) << why;
  EXPECT_EQ(b->device(), Device::CUDA);
  EXPECT_EQ(b->compute_dtype(), DType::F16);
  EXPECT_NE(b->name().find("cuda:0"), std::string::npos) << b->name();
  EXPECT_NE(b->name().find(probe().devices[0].name), std::string::npos) << b->name();
  EXPECT_NE(as_cuda(*b), nullptr);
  EXPECT_EQ(as_cuda(cpu()), nullptr);
  // A device index past the visible ones is a clear error, not a crash.
  const int missing = static_cast<int>(probe().devices.size());
  try {
    make_cuda_backend(missing, DType::F16);
    FAIL() << "cuda:" << missing << " should not exist";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

}  // namespace
