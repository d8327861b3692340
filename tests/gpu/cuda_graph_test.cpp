// CUDA-graph capture and replay (CudaBackend::run_graph) and the memory arena: a captured chain of
// ops gives the same bits as running it eagerly, replays follow new inputs, the step loop makes no
// driver allocations, host traffic inside a capture is refused cleanly, and a frozen pool refuses to
// grow. Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "sdmpi/error.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

// A small UNet-like step: group norm + SiLU, 3x3 conv with the input added, a time-embedding add,
// a token view through layer norm, attention and a linear with bias and residual.
struct Step {
  Tensor conv_w, conv_b, gamma, beta, lin_w, lin_b;
  std::vector<Tensor> operator()(Backend& b, const std::vector<Tensor>& in) const {
    const Tensor& x = in[0];     // [B, 8, 8, 32]
    const Tensor& temb = in[1];  // [B, 32]
    Tensor h = b.group_norm(x, 8, gamma, beta, 1e-5f, true);
    h = b.conv2d(h, conv_w, &conv_b, 1, 1, &x);
    h = b.add_batch_channel(h, temb);
    Tensor tokens = h.reshape({x.dim(0), 64, 32});
    Tensor n = b.layer_norm(tokens, gamma, beta, 1e-5f);
    Tensor a = b.attention(n, n, n, 4, false);
    Tensor out = b.linear(a, lin_w, &lin_b, &tokens);
    return {out.reshape(x.shape()), b.activation(out, Activation::GELU)};
  }
};

Step make_step(Backend& b, Rng& rng) {
  auto weight = [&](const Shape& shape, WeightKind kind, float scale) {
    std::vector<float> v = rng.normal(shape_numel(shape), scale);
    WeightView w;
    w.name = "step";
    w.shape = shape;
    w.data = v.data();
    return b.upload_weight(w, kind);
  };
  Step s;
  s.conv_w = weight({32, 32, 3, 3}, WeightKind::Conv, 0.05f);
  s.conv_b = weight({32}, WeightKind::Vector, 0.1f);
  s.gamma = weight({32}, WeightKind::Vector, 0.2f);
  s.beta = weight({32}, WeightKind::Vector, 0.2f);
  s.lin_w = weight({32, 32}, WeightKind::Linear, 0.15f);
  s.lin_b = weight({32}, WeightKind::Vector, 0.1f);
  return s;
}

class CudaGraph : public ::testing::TestWithParam<DType> {};

TEST_P(CudaGraph, ReplayMatchesEagerAndFollowsInputs) {
  SDMPI_REQUIRE_GPU();
  CudaBackend& g = gpu(GetParam());
  Rng rng;
  Step step = make_step(g, rng);
  const GraphKey key{2, 8, 8, 1000 + static_cast<int>(GetParam())};
  auto fn = [&](const std::vector<Tensor>& in) { return step(g, in); };
  int64_t allocations_after_first_replay = -1;
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::vector<float> xv = rng.normal(2 * 8 * 8 * 32), tv = rng.normal(2 * 32);
    Tensor x = g.from_host(xv.data(), {2, 8, 8, 32});
    Tensor temb = g.from_host(tv.data(), {2, 32});
    std::vector<Tensor> eager = step(g, {x, temb});
    std::vector<Tensor> replayed = g.run_graph(key, {x, temb}, fn);
    if (!std::getenv("SDMPI_CUDA_GRAPHS")) {
      EXPECT_TRUE(g.graph_captured(key)) << "the step was not captured";
    }
    ASSERT_EQ(replayed.size(), eager.size());
    for (size_t i = 0; i < eager.size(); ++i) {
      EXPECT_EQ(replayed[i].shape(), eager[i].shape());
      expect_equal(g.to_host(replayed[i]), g.to_host(eager[i]), "graph output " + std::to_string(i));
    }
    eager.clear();
    replayed.clear();
    if (round == 1) allocations_after_first_replay = g.memory_stats().device_allocations;
    if (round > 1) {
      EXPECT_EQ(g.memory_stats().device_allocations, allocations_after_first_replay);
    }
  }
  // Writing straight into the static inputs needs no copy.
  std::vector<Tensor> inputs = g.graph_inputs(key);
  ASSERT_EQ(inputs.size(), 2u);
  std::vector<float> xv = rng.normal(2 * 8 * 8 * 32), tv = rng.normal(2 * 32);
  Tensor x = g.from_host(xv.data(), {2, 8, 8, 32});
  Tensor temb = g.from_host(tv.data(), {2, 32});
  std::vector<Tensor> eager = step(g, {x, temb});
  Tensor x_static = g.copy(x);  // a fresh buffer: run_graph must copy it in
  std::vector<Tensor> replayed = g.run_graph(key, {x_static, temb}, fn);
  expect_equal(g.to_host(replayed[0]), g.to_host(eager[0]), "replay after copy-in");
  EXPECT_GT(g.memory_stats().graph_pool_bytes, 0u);
  // Wrong input shapes are refused.
  Tensor wrong = g.empty({1, 8, 8, 32});
  EXPECT_THROW(g.run_graph(key, {wrong, temb}, fn), Error);
}

TEST_P(CudaGraph, HostTrafficInsideCaptureIsRefused) {
  SDMPI_REQUIRE_GPU();
  CudaBackend& g = gpu(GetParam());
  Rng rng;
  std::vector<float> xv = rng.normal(16);
  Tensor x = g.from_host(xv.data(), {4, 4});
  int calls = 0;
  auto bad = [&](const std::vector<Tensor>& in) {
    ++calls;
    Tensor y = g.binary_scalar(BinaryOp::Mul, in[0], 2.0f);
    if (g.capturing()) {
      std::vector<float> host = g.to_host(y);  // refused while capturing
      (void)host;
    }
    return std::vector<Tensor>{y};
  };
  EXPECT_THROW(g.run_graph({4, 4, 0, 2000 + static_cast<int>(GetParam())}, {x}, bad), Error);
  EXPECT_EQ(calls, 2);  // the warm-up ran, the capture stopped at to_host
  EXPECT_FALSE(g.capturing());
  // The backend still works eagerly afterwards.
  Tensor y = g.binary_scalar(BinaryOp::Add, x, 1.0f);
  std::vector<float> got = g.to_host(y);
  std::vector<float> want = rounded(GetParam(), xv);
  for (float& v : want) v = v + 1.0f;
  expect_equal(got, rounded(GetParam(), want), "eager after a failed capture");
}

TEST_P(CudaGraph, StepLoopDoesNotAllocateAndFrozenPoolRefusesGrowth) {
  SDMPI_REQUIRE_GPU();
  CudaBackend& g = gpu(GetParam());
  Rng rng;
  Step step = make_step(g, rng);
  std::vector<float> xv = rng.normal(2 * 8 * 8 * 32), tv = rng.normal(2 * 32);
  Tensor x = g.from_host(xv.data(), {2, 8, 8, 32});
  Tensor temb = g.from_host(tv.data(), {2, 32});
  step(g, {x, temb});  // first pass: pools grow, algorithms are chosen
  const int64_t before = g.memory_stats().device_allocations;
  g.allow_growth(false);
  for (int i = 0; i < 5; ++i) {
    std::vector<Tensor> out = step(g, {x, temb});
    x = g.copy(out[0]);
  }
  g.synchronize();
  EXPECT_EQ(g.memory_stats().device_allocations, before);
  // Frozen: a request larger than anything free throws a clear error instead of allocating.
  const CudaMemoryStats st = g.memory_stats();
  const int64_t huge = static_cast<int64_t>(st.reserved_bytes / 4 + (int64_t{1} << 30));
  EXPECT_THROW(g.empty({huge}, DType::F32), Error);
  g.allow_growth(true);
  EXPECT_GT(st.weight_bytes, 0u);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaGraph, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& info) { return dtype_label(info.param); });

}  // namespace
