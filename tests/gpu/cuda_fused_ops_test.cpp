// The CUDA backend's fused ops (issue 13's launch cuts) against the CPU reference, whose defaults
// run the unfused ops: linear_qkv (q, k, v of one x as one strided-batched product over the packed
// weights), group_norm with a channel offset (a ResNet's time embedding read inside the norm
// kernel), linear_geglu (a feed-forward's product with the gate in its epilogue) and linear_stacked
// (every ResNet's time_emb_proj as one product, each norm2 reading its column range in place),
// concat_group_norm (an up-path ResNet's norm1 over [x, skip], writing the concat as it reads). F32, F16 and BF16; fresh random inputs (gpu_test_util.h), poisoned outputs (an element
// an op forgets to write is a NaN mismatch), odd shapes and SD 1.5's. Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "sdmpi/error.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

class CudaFusedOps : public DtypeParamTest {};

struct QkvCase {
  Shape x;
  int64_t n;  // each projection's width: the weights are [n, x.back()]
  bool bias;
};

const QkvCase kQkvCases[] = {
    // SD 1.5's attn1 at 512x512 (batch 2 with CFG), per level; no bias.
    {{2, 4096, 320}, 320, false},
    {{2, 1024, 640}, 640, false},
    {{2, 256, 1280}, 1280, false},
    {{2, 64, 1280}, 1280, false},
    // The VAE's mid-block attention (biases), and odd shapes: slices that are not multiples of the
    // pool's alignment, widths that are not multiples of 8, one token.
    {{1, 4096, 512}, 512, true},
    {{3, 7, 24}, 13, true},
    {{1, 5, 9}, 3, false},
    {{1, 1, 8}, 1, true},
    {{2, 3, 1}, 5, true},
};

// linear_qkv on `backend` against the CPU's (three linears), with the weights uploaded as weights
// (packed once, kept) or passed as activations (packed each call).
void check_qkv(CudaBackend& backend, DType t, Rng& rng, const QkvCase& c, bool weights_as_activations,
               const char* what) {
  SCOPED_TRACE(std::string(what) + " " + shape_label(c.x) + " -> 3 x " + std::to_string(c.n) +
               (c.bias ? " +bias" : "") + (weights_as_activations ? ", weights as activations" : ""));
  const int64_t k = c.x.back();
  const float scale = 1.0f / std::sqrt(static_cast<float>(k));
  Both x = random_activation(backend, rng, c.x);
  std::vector<Both> w, b;
  for (int i = 0; i < 3; ++i) {
    w.push_back(weights_as_activations ? random_activation(backend, rng, {c.n, k}, scale)
                                       : random_weight(backend, rng, {c.n, k}, WeightKind::Linear, scale));
    b.push_back(random_weight(backend, rng, {c.n}, WeightKind::Vector, 0.5f));
  }
  auto bias = [&](int i, bool gpu_side) -> const Tensor* {
    return c.bias ? (gpu_side ? &b[static_cast<size_t>(i)].g : &b[static_cast<size_t>(i)].c) : nullptr;
  };
  const Backend::QkvProjections ref =
      cpu().linear_qkv(x.c, w[0].c, w[1].c, w[2].c, bias(0, false), bias(1, false), bias(2, false));
  const Backend::QkvProjections got =
      backend.linear_qkv(x.g, w[0].g, w[1].g, w[2].g, bias(0, true), bias(1, true), bias(2, true));
  const Tensor* refs[] = {&ref.q, &ref.k, &ref.v};
  const Tensor* gots[] = {&got.q, &got.k, &got.v};
  const char* names[] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(gots[i]->shape(), refs[i]->shape()) << names[i];
    EXPECT_EQ(gots[i]->dtype(), t) << names[i];
    expect_close(backend.to_host(*gots[i]), cpu().to_host(*refs[i]), tolerance(t), names[i]);
  }
  // Again: the packed weights come from the cache (or are packed again), same bits.
  const Backend::QkvProjections again =
      backend.linear_qkv(x.g, w[0].g, w[1].g, w[2].g, bias(0, true), bias(1, true), bias(2, true));
  expect_equal(backend.to_host(again.v), backend.to_host(got.v), "repeated v");
}

TEST_P(CudaFusedOps, LinearQkvMatchesThreeLinears) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (const QkvCase& c : kQkvCases) check_qkv(g(), t(), rng, c, false, "linear_qkv");
  for (const QkvCase& c : kQkvCases) check_qkv(g(), t(), rng, c, true, "linear_qkv");
}

// SDMPI_CUDA_MATMUL=fallback: no cuBLASLt algorithm, so a batch with biases runs as three products
// with our epilogue and one without as cublasGemmStridedBatchedEx.
TEST_P(CudaFusedOps, LinearQkvFallbackPaths) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  CudaBackend& fallback = gpu_with(t(), "SDMPI_CUDA_MATMUL", "fallback");
  for (const QkvCase& c : kQkvCases) check_qkv(fallback, t(), rng, c, false, "linear_qkv through the fallbacks");
}

// The slices feed the attention kernels as they are: a self-attention through linear_qkv equals
// the CPU's, and the op is one call for the observer.
TEST_P(CudaFusedOps, LinearQkvFeedsAttention) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int heads;
  };
  const Case cases[] = {{{2, 1024, 320}, 8}, {{2, 64, 1280}, 8}, {{1, 33, 48}, 3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " heads " + std::to_string(c.heads));
    const int64_t k = c.x.back();
    Both x = random_activation(g(), rng, c.x);
    std::vector<Both> w;
    for (int i = 0; i < 3; ++i)
      w.push_back(random_weight(g(), rng, {k, k}, WeightKind::Linear, 1.0f / std::sqrt(static_cast<float>(k))));
    const Backend::QkvProjections rp = cpu().linear_qkv(x.c, w[0].c, w[1].c, w[2].c);
    int calls = 0;
    g().set_op_observer([&](const OpCall& call) { calls += std::string(call.op) == "linear_qkv"; });
    const Backend::QkvProjections gp = g().linear_qkv(x.g, w[0].g, w[1].g, w[2].g);
    g().set_op_observer({});
    EXPECT_EQ(calls, 1);
    Tensor ref = cpu().attention(rp.q, rp.k, rp.v, c.heads, false);
    Tensor got = g().attention(gp.q, gp.k, gp.v, c.heads, false);
    expect_close(g().to_host(got), cpu().to_host(ref), 2 * tol(), "attention of linear_qkv");
  }
}

TEST_P(CudaFusedOps, LinearQkvRejectsMismatchedWeights) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  Both x = random_activation(g(), rng, {1, 4, 8});
  Both w = random_weight(g(), rng, {6, 8}, WeightKind::Linear, 0.3f);
  Both other = random_weight(g(), rng, {5, 8}, WeightKind::Linear, 0.3f);
  Both b = random_weight(g(), rng, {6}, WeightKind::Vector, 0.3f);
  EXPECT_THROW(g().linear_qkv(x.g, w.g, other.g, w.g), Error);
  EXPECT_THROW(g().linear_qkv(x.g, w.g, w.g, w.g, &b.g, nullptr, &b.g), Error);
}

// norm2(h + time_emb_proj(temb)[b, c]) in one kernel against the CPU's add, then norm; also against
// the GPU's own two launches, which round the sum the same way.
TEST_P(CudaFusedOps, GroupNormWithChannelOffset) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int groups;
    float eps;
    bool silu;
    bool f32_offset;  // the offset in float32 (else the compute dtype, as time_emb_proj gives it)
  };
  const Case cases[] = {
      // SD 1.5's ResNet norm2 shapes at 512x512 with CFG.
      {{2, 64, 64, 320}, 32, 1e-5f, true, false},
      {{2, 32, 32, 640}, 32, 1e-5f, true, false},
      {{2, 16, 16, 1280}, 32, 1e-5f, true, false},
      {{2, 8, 8, 1280}, 32, 1e-5f, true, true},
      // Odd shapes: a group of one channel, odd spatial sizes, batch 3, tokens [B, N, C], no SiLU.
      {{3, 5, 7, 64}, 64, 1e-6f, false, false},
      {{1, 1, 1, 32}, 32, 1e-5f, true, true},
      {{2, 9, 11, 96}, 32, 1e-5f, true, false},
      {{2, 77, 24}, 3, 1e-5f, false, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " groups " + std::to_string(c.groups) + (c.silu ? " +silu" : "") +
                 (c.f32_offset ? ", F32 offset" : ""));
    const int64_t ch = c.x.back();
    Both x = random_activation(g(), rng, c.x, 2.0f);
    Both gamma = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Both beta = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Both offset;
    if (c.f32_offset) {  // values of the compute dtype (what from_host can carry), held in float32
      offset.host = rounded(t(), rng.normal(c.x[0] * ch, 3.0f));
      offset.c = cpu().from_host(offset.host.data(), {c.x[0], ch});
      offset.g = g().cast(g().from_host(offset.host.data(), {c.x[0], ch}), DType::F32);
    } else {
      offset = random_activation(g(), rng, {c.x[0], ch}, 3.0f);
    }
    Tensor ref = cpu().group_norm(x.c, c.groups, gamma.c, beta.c, c.eps, c.silu, &offset.c);
    Tensor got = g().group_norm(x.g, c.groups, gamma.g, beta.g, c.eps, c.silu, &offset.g);
    EXPECT_EQ(got.shape(), ref.shape());
    expect_close(g().to_host(got), cpu().to_host(ref), tol(), "group_norm with a channel offset");
    Tensor two_launches = g().group_norm(g().add_batch_channel(x.g, offset.g), c.groups, gamma.g, beta.g, c.eps, c.silu);
    expect_equal(g().to_host(got), g().to_host(two_launches), "fused vs add_batch_channel + group_norm on the GPU");
  }
}

// The norm kernel reading [x, skip] as one input against the CPU's concat then norm, and against the
// GPU's own concat_channels + group_norm (same values normalised: the same bits).
TEST_P(CudaFusedOps, ConcatGroupNormMatchesConcatThenNorm) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape a;
    int64_t cb;
    int groups;
    bool silu;
  };
  const Case cases[] = {
      // SD 1.5's up-path concats at 512x512 with CFG (groups straddle the seam where 32 does not divide it).
      {{2, 8, 8, 1280}, 1280, 32, true},
      {{2, 16, 16, 1280}, 640, 32, true},
      {{2, 32, 32, 640}, 320, 32, true},
      {{2, 64, 64, 320}, 320, 32, true},
      // Odd shapes: a side of one channel, odd spatial sizes, batch 3, tokens [B, N, C], no SiLU.
      {{3, 5, 7, 40}, 20, 3, true},
      {{1, 1, 1, 1}, 31, 32, true},
      {{2, 9, 11, 96}, 1, 1, false},
      {{2, 77, 24}, 8, 4, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.a) + " + " + std::to_string(c.cb) + " channels, groups " + std::to_string(c.groups));
    Shape bs = c.a;
    bs.back() = c.cb;
    const int64_t ch = c.a.back() + c.cb;
    Both x = random_activation(g(), rng, c.a, 2.0f), skip = random_activation(g(), rng, bs, 1.5f);
    Both gamma = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Both beta = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Backend::JoinedNorm ref = cpu().concat_group_norm(x.c, skip.c, c.groups, gamma.c, beta.c, 1e-5f, c.silu);
    int launches_seen = 0;
    g().set_op_observer([&](const OpCall& call) { launches_seen += cuda_op_launches(call).launches; });
    Backend::JoinedNorm got = g().concat_group_norm(x.g, skip.g, c.groups, gamma.g, beta.g, 1e-5f, c.silu);
    g().set_op_observer({});
    EXPECT_EQ(launches_seen, 1);
    EXPECT_EQ(got.joined.shape(), ref.joined.shape());
    EXPECT_EQ(got.normed.shape(), ref.normed.shape());
    expect_equal(g().to_host(got.joined), cpu().to_host(ref.joined), "the concat");
    expect_close(g().to_host(got.normed), cpu().to_host(ref.normed), tol(), "the norm");
    Tensor joined = g().concat_channels(x.g, skip.g);
    expect_equal(g().to_host(got.normed), g().to_host(g().group_norm(joined, c.groups, gamma.g, beta.g, 1e-5f, c.silu)),
                 "fused vs concat_channels + group_norm on the GPU");
  }
}

// SD 1.5's 22 time_emb_proj widths (320 x 5, 640 x 5, 1280 x 9, 640 x 3) as one product over the
// stacked weights (packed once and kept, or each call when they are activations), and group_norm
// reading one part's columns in place, against the CPU's separate linears and dense offsets.
TEST_P(CudaFusedOps, LinearStackedAndColumnRangeOffsets) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    int64_t batch, k;
    std::vector<int64_t> widths;
    bool bias, weights_as_activations;
  };
  const std::vector<int64_t> sd15{320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 1280,
                                  1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 640};
  const Case cases[] = {
      {2, 1280, sd15, true, false},
      {3, 24, {8, 16, 8, 12, 32}, true, true},
      {1, 9, {5, 3}, false, false},
      {2, 7, {1}, true, false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.widths.size()) + " parts, k " + std::to_string(c.k) + (c.bias ? " +bias" : "") +
                 (c.weights_as_activations ? ", weights as activations" : ""));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.k));
    Both x = random_activation(g(), rng, {c.batch, c.k});
    std::vector<Both> w, b;
    for (int64_t n : c.widths) {
      w.push_back(c.weights_as_activations ? random_activation(g(), rng, {n, c.k}, scale)
                                           : random_weight(g(), rng, {n, c.k}, WeightKind::Linear, scale));
      b.push_back(random_weight(g(), rng, {n}, WeightKind::Vector, 0.5f));
    }
    std::vector<const Tensor*> wc, wg, bc, bg;
    for (size_t i = 0; i < w.size(); ++i) {
      wc.push_back(&w[i].c);
      wg.push_back(&w[i].g);
      if (c.bias) {
        bc.push_back(&b[i].c);
        bg.push_back(&b[i].g);
      }
    }
    Tensor ref = cpu().linear_stacked(x.c, wc, bc);
    int launches_seen = 0;
    g().set_op_observer([&](const OpCall& call) { launches_seen += cuda_op_launches(call).launches; });
    Tensor got = g().linear_stacked(x.g, wg, bg);
    g().set_op_observer({});
    EXPECT_EQ(launches_seen, 1);
    EXPECT_EQ(got.shape(), ref.shape());
    expect_close(g().to_host(got), cpu().to_host(ref), tol(), "linear_stacked");
    expect_equal(g().to_host(g().linear_stacked(x.g, wg, bg)), g().to_host(got), "repeated");
    // The last part's norm2 (groups of 1 channel where the width is odd) on its column range.
    const int64_t n = c.widths.back(), column = ref.dim(1) - n;
    const int groups = n % 32 == 0 ? 32 : 1;
    Both h = random_activation(g(), rng, {c.batch, 5, 3, n}, 2.0f);
    Both gamma = random_weight(g(), rng, {n}, WeightKind::Vector, 0.3f);
    Both beta = random_weight(g(), rng, {n}, WeightKind::Vector, 0.3f);
    Tensor norm_ref = cpu().group_norm(h.c, groups, gamma.c, beta.c, 1e-5f, true, &ref, column);
    Tensor norm_got = g().group_norm(h.g, groups, gamma.g, beta.g, 1e-5f, true, &got, column);
    expect_close(g().to_host(norm_got), cpu().to_host(norm_ref), tol(), "group_norm on a column range");
  }
}

// linear_geglu: F16/BF16 run the tensor-core product with the gate in its epilogue
// (kernels/linear_geglu.cu), F32 the product then the geglu kernel; both against the CPU's linear
// then geglu, and the fused kernel also against the GPU's own two launches (SDMPI_CUDA_GEGLU=unfused),
// which round the product to the storage type before gating just as the epilogue does.
TEST_P(CudaFusedOps, LinearGegluMatchesLinearThenGeglu) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int64_t c;  // the gate's width: the weight is [2c, x.back()]
    bool bias;
  };
  const Case cases[] = {
      // SD 1.5's feed-forwards at 512x512 with CFG (inner = 4 x dim), per level.
      {{2, 4096, 320}, 1280, true},
      {{2, 1024, 640}, 2560, true},
      {{2, 256, 1280}, 5120, true},
      {{2, 64, 1280}, 5120, true},
      // Odd shapes: rows and columns off the 128 x 64 tile, k not a multiple of 8 (element loads),
      // k below one pipeline stage, one row, one output column, no bias, a rank-2 input.
      {{1, 300, 40}, 70, true},
      {{3, 7, 24}, 13, false},
      {{1, 5, 9}, 3, true},
      {{1, 1, 8}, 1, true},
      {{2, 129, 100}, 65, false},
      {{77, 33}, 129, true},
  };
  CudaBackend& unfused = gpu_with(t(), "SDMPI_CUDA_GEGLU", "unfused");
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " -> " + std::to_string(c.c) + (c.bias ? " +bias" : ""));
    const int64_t k = c.x.back();
    Both x = random_activation(g(), rng, c.x);
    Both w = random_weight(g(), rng, {2 * c.c, k}, WeightKind::Linear, 1.0f / std::sqrt(static_cast<float>(k)));
    Both b = random_weight(g(), rng, {2 * c.c}, WeightKind::Vector, 0.5f);
    Tensor ref = cpu().linear_geglu(x.c, w.c, c.bias ? &b.c : nullptr);
    int calls = 0;
    g().set_op_observer([&](const OpCall& call) { calls += std::string(call.op) == "linear_geglu"; });
    Tensor got = g().linear_geglu(x.g, w.g, c.bias ? &b.g : nullptr);
    g().set_op_observer({});
    EXPECT_EQ(calls, 1);
    EXPECT_EQ(got.shape(), ref.shape());
    EXPECT_EQ(got.dtype(), t());
    const std::vector<float> got_host = g().to_host(got);
    expect_close(got_host, cpu().to_host(ref), tol(), "linear_geglu vs the CPU's linear then geglu");
    // The unfused GPU path: same roundings, another summation order inside the product.
    Tensor x_u = unfused.from_host(x.host.data(), c.x);
    WeightView wv{"test.weight", DType::F32, {2 * c.c, k}, w.host.data()};
    WeightView bv{"test.bias", DType::F32, {2 * c.c}, b.host.data()};
    Tensor w_u = unfused.upload_weight(wv, WeightKind::Linear), b_u = unfused.upload_weight(bv, WeightKind::Vector);
    Tensor two_launches = unfused.linear_geglu(x_u, w_u, c.bias ? &b_u : nullptr);
    expect_close(got_host, unfused.to_host(two_launches), tol(), "fused vs the GPU's product then geglu kernel");
    // Again: the same kernel on the same data gives the same bits.
    expect_equal(g().to_host(g().linear_geglu(x.g, w.g, c.bias ? &b.g : nullptr)), got_host, "repeated");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaFusedOps, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& info) { return dtype_label(info.param); });

}  // namespace
