// The launch table (cuda_op_launches, src/backend/cuda/launch_table.cpp) against the GPU: one CFG
// UNet call, as txt2img's captured step runs it (the text's cross-attention K/V computed before),
// is captured as a CUDA graph and its node count (kernels, copies, memsets) must equal the table's
// sum over the op calls the observer saw. The CPU-only test tests/unit/launch_count_test.cpp
// trusts this table to count SD 1.5's launches; a library that does not take the fused path the
// table assumes (cuBLASLt without an epilogue algorithm, cuDNN declining the fused convolution or
// running it as two kernels) fails here, with the per-op table printed.
#include <cuda_runtime.h>

#include <cstdio>
#include <map>

#include "gpu_test_util.h"
#include "sdmpi/make_model.h"
#include "sdmpi/unet.h"

namespace sdmpi {
namespace {

struct Step {
  int64_t predicted = 0;
  size_t nodes = 0;
  std::map<std::string, int64_t> launches_by_path;
};

Step capture_cfg_step(const std::string& preset, int64_t h, int64_t w) {
  InMemoryModel model = make_model_in_memory(preset, 11);
  const UNetConfig& c = model.configs.unet;
  CudaBackend& b = *as_cuda(*make_cuda_backend(0, DType::F16).release());  // no poisoning: no extra memsets
  UNet2DConditionModel unet = UNet2DConditionModel::load(c, *model.unet, b);
  const int64_t d = c.cross_attention_dim.at(0);
  std::vector<float> lat(static_cast<size_t>(h * w * c.in_channels), 0.5f), ctx(static_cast<size_t>(2 * 77 * d), 0.1f);
  Tensor latents = b.cast(b.from_host(lat.data(), {1, h, w, c.in_channels}), DType::F32);
  Tensor context = b.from_host(ctx.data(), {2, 77, d});
  Tensor t_proj = unet.time_proj(b, {981.0f, 981.0f});
  // The text's cross-attention K/V, once per batch outside the step, as txt2img computes them.
  const std::vector<Tensor> cross_kv = unet.cross_attention_kv(b, context);
  auto step = [&] {  // txt2img's CFG step: cast, [x; x], the UNet with the K/V, cast back
    Tensor x = b.cast(latents, DType::F16);
    x = b.concat_batch({x, x});
    return b.cast(unet.forward_embedded(b, x, t_proj, cross_kv), DType::F32);
  };
  Step out;
  b.set_op_observer([&](const OpCall& call) {
    const CudaOpLaunches l = cuda_op_launches(call);
    out.predicted += l.launches;
    out.launches_by_path[std::string(call.op) + ": " + l.path] += l.launches;
  });
  { Tensor warm = step(); }  // algorithms, plans, parameter copies, pool growth: outside the capture
  b.set_op_observer({});
  b.synchronize();
  cudaStream_t stream = static_cast<cudaStream_t>(b.stream());
  EXPECT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
  { Tensor eps = step(); }
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  if (graph) {
    EXPECT_EQ(cudaGraphGetNodes(graph, nullptr, &out.nodes), cudaSuccess);
    EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  }
  return out;
}

void check(const std::string& preset, int64_t h, int64_t w) {
  Step s = capture_cfg_step(preset, h, w);
  std::printf("%s %lldx%lld latents, CFG, fp16: captured graph %zu nodes, table %lld launches\n", preset.c_str(),
              static_cast<long long>(h), static_cast<long long>(w), s.nodes, static_cast<long long>(s.predicted));
  for (const auto& [path, n] : s.launches_by_path) std::printf("  %6lld  %s\n", static_cast<long long>(n), path.c_str());
  EXPECT_EQ(static_cast<int64_t>(s.nodes), s.predicted) << "the launch table disagrees with the GPU";
}

TEST(CudaLaunchCount, TinyStepMatchesTheTable) {
  SDMPI_REQUIRE_GPU();
  check("tiny", 8, 8);
}

TEST(CudaLaunchCount, Sd15StepMatchesTheTable) {
  SDMPI_REQUIRE_GPU();
  check("sd15", 64, 64);
}

}  // namespace
}  // namespace sdmpi
