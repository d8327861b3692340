// The GPU pipeline's own machinery: CudaBackend::cast, the UNet split for graphs
// (forward_embedded), and the UNet step as a CUDA graph inside Txt2ImgPipeline (replays the same
// images as running without graphs, allocates nothing from the driver once the shapes are known,
// and never replays another model's graph). Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "io/sd_configs.h"
#include "sdmpi/error.h"
#include "sdmpi/job.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/unet.h"
#include "sdmpi/weights.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

// ---- cast -------------------------------------------------------------------------------------------

TEST(CudaCast, RoundsLikeTheHostAndWidensExactly) {
  SDMPI_REQUIRE_GPU();
  CudaBackend& b = gpu(DType::F32);
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -2.5f, 1e-8f, 6.1e-5f, 65504.0f, 65520.0f, 1e6f, -3.0e38f,
                          INFINITY, -INFINITY, 0.1f, 1.0f / 3.0f, 2049.0f, 2051.0f};
  std::mt19937 gen(static_cast<uint32_t>(base_seed()));
  std::normal_distribution<float> d(0.0f, 10.0f);
  for (int i = 0; i < 4093; ++i) v.push_back(d(gen));  // an odd count: the kernel's tail
  const Shape shape{static_cast<int64_t>(v.size())};
  Tensor x = b.from_host(v.data(), shape);
  ASSERT_EQ(x.dtype(), DType::F32);
  EXPECT_EQ(b.cast(x, DType::F32).raw(), x.raw()) << "a cast to the same dtype must return the tensor itself";
  for (DType t : {DType::F16, DType::BF16}) {
    SCOPED_TRACE(dtype_name(t));
    Tensor narrow = b.cast(x, t);
    ASSERT_EQ(narrow.dtype(), t);
    ASSERT_EQ(narrow.shape(), shape);
    std::vector<float> got = b.to_host(narrow);
    Tensor wide = b.cast(narrow, DType::F32);
    ASSERT_EQ(wide.dtype(), DType::F32);
    std::vector<float> back = b.to_host(wide);
    int bad = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const float want = t == DType::F16 ? half_to_float(float_to_half(v[i])) : bf16_to_float(float_to_bf16(v[i]));
      if (float_bits(got[i]) != float_bits(want) || float_bits(back[i]) != float_bits(want)) {
        if (++bad <= 5)
          ADD_FAILURE() << "element " << i << ": " << v[i] << " → " << got[i] << " (widened back " << back[i]
                        << "), host rounding gives " << want;
      }
    }
    EXPECT_EQ(bad, 0);
  }
}

// ---- pipelines ------------------------------------------------------------------------------------

std::vector<WorkItem> items(const std::string& sampler, float guidance, int batch, int steps = 4) {
  std::vector<WorkItem> out;
  const char* prompts[] = {"a photograph of an astronaut riding a horse", "a red cube on a blue table",
                           "a lighthouse at dusk"};
  for (int i = 0; i < batch; ++i) {
    WorkItem w;
    w.index = i;
    w.prompt_index = i;
    w.params.prompt = prompts[i % 3];
    w.params.negative_prompt = i == 1 ? "blurry" : "";
    w.params.seed = 4321 + static_cast<uint64_t>(i);
    w.params.steps = steps;
    w.params.guidance = guidance;
    w.params.width = 64;
    w.params.height = 48;
    w.params.sampler = sampler;
    out.push_back(w);
  }
  return out;
}

int max_level_difference(const std::vector<ImageResult>& a, const std::vector<ImageResult>& b) {
  EXPECT_EQ(a.size(), b.size());
  int worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_TRUE(a[i].ok) << a[i].error;
    EXPECT_TRUE(b[i].ok) << b[i].error;
    EXPECT_EQ(a[i].rgb.size(), b[i].rgb.size());
    for (size_t k = 0; k < std::min(a[i].rgb.size(), b[i].rgb.size()); ++k)
      worst = std::max(worst, std::abs(static_cast<int>(a[i].rgb[k]) - static_cast<int>(b[i].rgb[k])));
  }
  return worst;
}

class CudaPipelineGraphs : public ::testing::TestWithParam<DType> {};

// The graph replays the kernels the eager run launches, so the images agree (to one level, in
// case a library picks another algorithm inside a capture); the graph is really used; and a second
// batch of the same shapes takes no memory from the driver.
TEST_P(CudaPipelineGraphs, ReplayMatchesEagerAndAllocatesNothingLater) {
  SDMPI_REQUIRE_GPU();
  const DType t = GetParam();
  ModelSource model = ModelSource::open("tiny");
  CudaBackend& graphs = gpu(t);
  CudaBackend& eager = gpu_with(t, "SDMPI_CUDA_GRAPHS", "0");
  Txt2ImgPipeline with_graphs(model, graphs);
  Txt2ImgPipeline without(model, eager);
  for (const char* sampler : {"pndm", "euler_a"}) {
    for (float guidance : {7.5f, 1.0f}) {
      SCOPED_TRACE(std::string(sampler) + ", guidance " + std::to_string(guidance));
      const std::vector<WorkItem> batch = items(sampler, guidance, 3);
      const int64_t graph_calls_before = with_graphs.timings().unet_graph_calls;
      std::vector<ImageResult> a = with_graphs.generate(batch);
      std::vector<ImageResult> b = without.generate(batch);
      EXPECT_LE(max_level_difference(a, b), 1);
      EXPECT_GT(with_graphs.timings().unet_graph_calls, graph_calls_before)
          << "no UNet call replayed a CUDA graph (see the warning on why the capture failed)";
      EXPECT_EQ(without.timings().unet_graph_calls, 0);
      EXPECT_EQ(graphs.memory_stats().graph_fallbacks, 0) << "a step fell back to running without a graph";

      const int64_t allocations = graphs.memory_stats().device_allocations;
      std::vector<ImageResult> again = with_graphs.generate(batch);
      EXPECT_EQ(graphs.memory_stats().device_allocations, allocations)
          << "a second batch of the same shapes took memory from the driver";
      EXPECT_EQ(max_level_difference(a, again), 0) << "a replay gave other images than the first run";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaPipelineGraphs, ::testing::Values(DType::F32, DType::F16),
                         [](const ::testing::TestParamInfo<DType>& info) { return dtype_label(info.param); });

ModelSource tiny_with_seed(uint64_t seed) {
  InMemoryModel m = make_model_in_memory("tiny", seed);
  std::map<std::string, nlohmann::json> configs{{"unet", m.configs.unet.to_json()},
                                                {"vae", m.configs.vae.to_json()},
                                                {"text_encoder", m.configs.text_encoder.to_json()},
                                                {"scheduler", sd_config("sd15", "scheduler")}};
  std::map<std::string, std::shared_ptr<WeightSource>> weights{
      {"unet", m.unet}, {"vae", m.vae}, {"text_encoder", m.text_encoder}};
  return ModelSource::from_memory("tiny-seed-" + std::to_string(seed), configs, weights);
}

// Graphs bake in weight addresses: two models of the same shapes on one backend must each run
// their own (a shared key would give model B model A's images), and a pipeline's destruction must
// leave the other working.
TEST(CudaPipelineGraphsTwoModels, EachModelReplaysItsOwnGraph) {
  SDMPI_REQUIRE_GPU();
  CudaBackend& g = gpu(DType::F32);
  const std::vector<WorkItem> batch = items("pndm", 7.5f, 2, 3);
  ModelSource model_a = tiny_with_seed(11), model_b = tiny_with_seed(12);
  Txt2ImgPipeline cpu_a(model_a, cpu()), cpu_b(model_b, cpu());
  const std::vector<ImageResult> ref_a = cpu_a.generate(batch), ref_b = cpu_b.generate(batch);
  ASSERT_GT(max_level_difference(ref_a, ref_b), 1) << "the two test models should give different images";

  Txt2ImgPipeline gpu_a(model_a, g);
  EXPECT_LE(max_level_difference(gpu_a.generate(batch), ref_a), 1) << "model A";
  {
    Txt2ImgPipeline gpu_b(model_b, g);
    EXPECT_LE(max_level_difference(gpu_b.generate(batch), ref_b), 1) << "model B after A";
    EXPECT_LE(max_level_difference(gpu_a.generate(batch), ref_a), 1) << "model A while B lives";
  }
  EXPECT_LE(max_level_difference(gpu_a.generate(batch), ref_a), 1) << "model A after B's pipeline went";
  EXPECT_GT(gpu_a.timings().unet_graph_calls, 0);
}

// forward() is forward_embedded() after time_proj(): the same ops, so the same numbers.
TEST(CudaUNetSplit, ForwardEmbeddedEqualsForward) {
  SDMPI_REQUIRE_GPU();
  CudaBackend& g = gpu(DType::F32);
  InMemoryModel m = make_model_in_memory("tiny", 3);
  UNet2DConditionModel unet = UNet2DConditionModel::load(m.configs.unet, *m.unet, g);
  const UNetConfig& c = m.configs.unet;
  const int64_t B = 2, h = 8, w = 6;
  std::mt19937 gen(static_cast<uint32_t>(base_seed()));
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(B * h * w * c.in_channels)), ctx(static_cast<size_t>(B * 77 * c.cross_attention_dim[0]));
  for (float& v : x) v = d(gen);
  for (float& v : ctx) v = d(gen);
  Tensor sample = g.from_host(x.data(), {B, h, w, c.in_channels});
  Tensor context = g.from_host(ctx.data(), {B, 77, c.cross_attention_dim[0]});
  const std::vector<float> t{981.0f, 1.5f};
  std::vector<float> a = g.to_host(unet.forward(g, sample, t, context));
  std::vector<float> b = g.to_host(unet.forward_embedded(g, sample, unet.time_proj(g, t), context));
  ASSERT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(a[i]) * a[i];
  }
  EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), 1e-6);
  EXPECT_THROW(unet.forward_embedded(g, sample, unet.time_proj(g, {1.0f}), context), Error);
}

}  // namespace
