// Every op of the CUDA backend against the CPU reference backend, in F32, F16 and BF16, on fresh
// random inputs: odd shapes (tails, channel counts that are not multiples of 8, batch 1 and 3) and
// SD 1.5's shapes. Arithmetic ops: relative L2 error ≤ 1e-5 (F32) / 1e-2 (F16, BF16). Data movement
// and single elementwise ops: bit for bit, since each rounds exactly once like the CPU's float32
// result rounded to the compute dtype. Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "sdmpi/error.h"
#include "sdmpi/unet.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

class CudaOps : public DtypeParamTest {};

// The CPU result as the GPU would store it (one rounding to the compute dtype).
std::vector<float> host_rounded(Backend& backend, DType t, const Tensor& x) { return rounded(t, backend.to_host(x)); }

TEST_P(CudaOps, FromHostToHostRoundTrip) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (Shape shape : {Shape{1}, Shape{3, 5, 7}, Shape{2, 64, 64, 4}, Shape{0, 3}}) {
    SCOPED_TRACE(shape_label(shape));
    std::vector<float> v = rng.normal(shape_numel(shape), 3.0f);
    Tensor x = g().from_host(v.data(), shape);
    EXPECT_EQ(x.dtype(), t());
    EXPECT_EQ(x.device(), Device::CUDA);
    EXPECT_EQ(x.shape(), shape);
    expect_equal(g().to_host(x), rounded(t(), v), "round trip");
  }
}

TEST_P(CudaOps, UploadWeightConvertsEveryDtypeAndLayout) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape shape;
    WeightKind kind;
  };
  const Case cases[] = {{{7, 5}, WeightKind::Linear},       {{3, 4, 3, 3}, WeightKind::Conv},
                        {{8, 6, 1, 1}, WeightKind::Conv},   {{6, 5, 1, 1}, WeightKind::Linear},
                        {{13}, WeightKind::Vector},         {{11, 9}, WeightKind::Embedding},
                        {{320, 4, 3, 3}, WeightKind::Conv}, {{2, 3, 1, 2}, WeightKind::Conv}};
  for (DType file_dtype : {DType::F32, DType::F16, DType::BF16}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(std::string(dtype_name(file_dtype)) + " file, " + shape_label(c.shape));
      std::vector<float> v = rounded(file_dtype, rng.normal(shape_numel(c.shape), 2.0f));
      std::vector<uint16_t> bits(v.size());
      WeightView w;
      w.name = "test.weight";
      w.dtype = file_dtype;
      w.shape = c.shape;
      if (file_dtype == DType::F32) {
        w.data = v.data();
      } else {
        convert_from_f32(file_dtype, v.data(), bits.data(), v.size());
        w.data = bits.data();
      }
      Tensor ref = cpu().upload_weight(w, c.kind);
      Tensor got = g().upload_weight(w, c.kind);
      EXPECT_EQ(got.shape(), ref.shape());
      EXPECT_EQ(got.dtype(), c.kind == WeightKind::Vector ? DType::F32 : t());
      const DType stored = c.kind == WeightKind::Vector ? DType::F32 : t();
      expect_equal(g().to_host(got), rounded(stored, cpu().to_host(ref)), "upload");
    }
  }
  WeightView bad;
  bad.name = "bad.weight";
  bad.shape = {3, 3};
  std::vector<float> data(9, 1.0f);
  bad.data = data.data();
  EXPECT_THROW(g().upload_weight(bad, WeightKind::Conv), InputError);
  EXPECT_THROW(g().upload_weight(bad, WeightKind::Vector), InputError);
}

// Every linear case on `backend` against the CPU reference.
void check_linear(CudaBackend& backend, Rng& rng, double tolerance_value, const char* what) {
  struct Case {
    Shape x;
    int64_t n;
    bool bias, residual;
  };
  const Case cases[] = {{{2, 77, 768}, 320, false, false}, {{3, 5, 13}, 7, true, true},  {{64, 320}, 1280, true, false},
                        {{1, 1, 1}, 1, true, true},         {{2, 3, 8}, 16, false, true}, {{2, 1024, 320}, 320, true, true},
                        {{1, 77, 768}, 3072, true, false},  {{1, 64, 1280}, 10240, true, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " -> " + std::to_string(c.n) + (c.bias ? " +bias" : "") +
                 (c.residual ? " +residual" : ""));
    const int64_t k = c.x.back();
    Both x = random_activation(backend, rng, c.x);
    Both w = random_weight(backend, rng, {c.n, k}, WeightKind::Linear, 1.0f / std::sqrt(static_cast<float>(k)));
    Both b = random_weight(backend, rng, {c.n}, WeightKind::Vector, 0.5f);
    Shape out_shape = c.x;
    out_shape.back() = c.n;
    Both r = random_activation(backend, rng, out_shape);
    Tensor ref = cpu().linear(x.c, w.c, c.bias ? &b.c : nullptr, c.residual ? &r.c : nullptr);
    Tensor got = backend.linear(x.g, w.g, c.bias ? &b.g : nullptr, c.residual ? &r.g : nullptr);
    EXPECT_EQ(got.shape(), ref.shape());
    expect_close(backend.to_host(got), cpu().to_host(ref), tolerance_value, what);
  }
}

TEST_P(CudaOps, Linear) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  check_linear(g(), rng, tol(), "linear");
  Both x = random_activation(g(), rng, {2, 5});
  Both w = random_weight(g(), rng, {3, 4}, WeightKind::Linear, 1.0f);
  EXPECT_THROW(g().linear(x.g, w.g, nullptr), Error);
}

// The fallbacks for shapes cuBLASLt has no algorithm for (SDMPI_CUDA_MATMUL=fallback forces them):
// the product without the fused epilogue plus our bias/residual kernel, and cublasGemmEx.
TEST_P(CudaOps, LinearFallbackPaths) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  check_linear(gpu_with(t(), "SDMPI_CUDA_MATMUL", "fallback"), rng, tol(), "linear through the fallbacks");
}

struct ConvCase {
  Shape x;
  int64_t k, kh, kw;
  int stride, pad;
  bool bias, residual;
};

const ConvCase kConvCases[] = {
    {{2, 16, 16, 32}, 64, 3, 3, 1, 1, true, true},    // resnet conv with the shortcut added
    {{1, 9, 7, 4}, 320, 3, 3, 1, 1, true, false},     // conv_in: 4 channels
    {{2, 8, 8, 128}, 3, 3, 3, 1, 1, true, false},     // VAE conv_out: 3 output channels
    {{2, 17, 15, 64}, 64, 3, 3, 2, 1, true, false},   // downsample, odd sizes
    {{2, 8, 8, 320}, 640, 1, 1, 1, 0, true, true},    // 1x1 shortcut (the matrix-product path)
    {{1, 5, 5, 8}, 8, 1, 1, 2, 0, false, false},      // 1x1 with stride: the cuDNN path
    {{3, 6, 5, 3}, 5, 3, 3, 1, 0, false, true},       // no padding
    {{1, 7, 7, 16}, 24, 5, 5, 1, 2, true, false},     // 5x5
    {{1, 32, 32, 320}, 320, 3, 3, 1, 1, true, true},  // SD 1.5 width
};

void check_conv(CudaBackend& g, DType t, Rng& rng, const ConvCase& c, const char* what) {
  SCOPED_TRACE(std::string(what) + " " + shape_label(c.x) + " k" + std::to_string(c.k) + " " + std::to_string(c.kh) +
               "x" + std::to_string(c.kw) + " s" + std::to_string(c.stride) + " p" + std::to_string(c.pad));
  const int64_t cin = c.x[3];
  Both x = random_activation(g, rng, c.x);
  Both w = random_weight(g, rng, {c.k, cin, c.kh, c.kw}, WeightKind::Conv,
                         1.0f / std::sqrt(static_cast<float>(cin * c.kh * c.kw)));
  Both b = random_weight(g, rng, {c.k}, WeightKind::Vector, 0.5f);
  const int64_t ho = (c.x[1] + 2 * c.pad - c.kh) / c.stride + 1, wo = (c.x[2] + 2 * c.pad - c.kw) / c.stride + 1;
  Both r = random_activation(g, rng, {c.x[0], ho, wo, c.k});
  Tensor ref = cpu().conv2d(x.c, w.c, c.bias ? &b.c : nullptr, c.stride, c.pad, c.residual ? &r.c : nullptr);
  Tensor got = g.conv2d(x.g, w.g, c.bias ? &b.g : nullptr, c.stride, c.pad, c.residual ? &r.g : nullptr);
  EXPECT_EQ(got.shape(), ref.shape());
  expect_close(g.to_host(got), cpu().to_host(ref), tolerance(t), what);
  // Twice: the second call runs the cached algorithm.
  Tensor again = g.conv2d(x.g, w.g, c.bias ? &b.g : nullptr, c.stride, c.pad, c.residual ? &r.g : nullptr);
  expect_equal(g.to_host(again), g.to_host(got), "repeated");
}

TEST_P(CudaOps, Conv2d) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (const ConvCase& c : kConvCases) check_conv(g(), t(), rng, c, "conv2d");
  // An input that is a view at an unaligned offset (rows 1..2 of a batch of 3 with 75 elements each).
  Both x = random_activation(g(), rng, {3, 5, 5, 3});
  Both w = random_weight(g(), rng, {4, 3, 3, 3}, WeightKind::Conv, 0.3f);
  Tensor ref = cpu().conv2d(x.c.rows(1, 3), w.c, nullptr, 1, 1);
  Tensor got = g().conv2d(x.g.rows(1, 3), w.g, nullptr, 1, 1);
  expect_close(g().to_host(got), cpu().to_host(ref), tol(), "conv2d on an unaligned view");
  Both wrong = random_weight(g(), rng, {4, 5, 3, 3}, WeightKind::Conv, 0.3f);
  EXPECT_THROW(g().conv2d(x.g, wrong.g, nullptr, 1, 1), Error);
}

TEST_P(CudaOps, Conv2dDirectKernel) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (const ConvCase& c : kConvCases) check_conv(gpu_with(t(), "SDMPI_CUDA_CONV", "direct"), t(), rng, c, "direct conv2d");
}

// The path a shape cuDNN declines takes: patches (kernels/im2col.cu) times weights, bias and
// residual in the product's epilogue, in slices of rows.
TEST_P(CudaOps, Conv2dAsPatchesTimesWeights) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (const ConvCase& c : kConvCases) check_conv(gpu_with(t(), "SDMPI_CUDA_CONV", "gemm"), t(), rng, c, "im2col conv2d");
}

TEST_P(CudaOps, GroupNorm) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int groups;
    float eps;
    bool silu;
    float mean;
  };
  const Case cases[] = {
      {{2, 16, 16, 320}, 32, 1e-5f, true, 0.0f},  {{1, 8, 8, 2560}, 32, 1e-5f, false, 0.0f},
      {{3, 5, 7, 64}, 32, 1e-6f, false, 0.0f},    {{2, 3, 3, 8}, 2, 1e-5f, true, 0.0f},
      {{1, 64, 64, 128}, 32, 1e-6f, true, 0.0f},  {{2, 77, 64}, 8, 1e-5f, false, 0.0f},
      {{2, 9, 11, 96}, 32, 1e-5f, false, 50.0f},  {{1, 1, 1, 32}, 32, 1e-5f, true, 0.0f},
      {{2, 32, 32, 640}, 32, 1e-6f, true, -3.0f},
      // SD 1.5's largest groups (one block per group since the one-launch kernel): up block 1 at
      // 64x64 with 960 and 640 channels, the mid block at 8x8 with 1280.
      {{2, 64, 64, 960}, 32, 1e-5f, true, 0.0f},  {{2, 64, 64, 640}, 32, 1e-5f, false, 1.0f},
      {{2, 8, 8, 1280}, 32, 1e-6f, true, 0.0f},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " groups " + std::to_string(c.groups) + (c.silu ? " +silu" : "") + " mean " +
                 std::to_string(c.mean));
    const int64_t ch = c.x.back();
    Both x = random_activation(g(), rng, c.x, 2.0f, c.mean);
    Both gamma = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Both beta = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Tensor ref = cpu().group_norm(x.c, c.groups, gamma.c, beta.c, c.eps, c.silu);
    Tensor got = g().group_norm(x.g, c.groups, gamma.g, beta.g, c.eps, c.silu);
    expect_close(g().to_host(got), cpu().to_host(ref), tol(), "group_norm");
  }
  Both x = random_activation(g(), rng, {1, 2, 2, 10});
  Both gamma = random_weight(g(), rng, {10}, WeightKind::Vector, 1.0f);
  EXPECT_THROW(g().group_norm(x.g, 3, gamma.g, gamma.g, 1e-5f, false), Error);
}

// The feed-forward's first projection and its gate as one op (odd and SD 1.5 shapes).
TEST_P(CudaOps, LinearGeglu) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int64_t c;  // gated width: the weight is [2c, in]
  };
  const Case cases[] = {{{2, 4096, 320}, 1280}, {{2, 64, 1280}, 5120}, {{3, 7, 24}, 13}, {{1, 1, 8}, 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " -> " + std::to_string(c.c));
    const int64_t in = c.x.back();
    Both x = random_activation(g(), rng, c.x);
    Both w = random_weight(g(), rng, {2 * c.c, in}, WeightKind::Linear, 1.0f / std::sqrt(static_cast<float>(in)));
    Both b = random_weight(g(), rng, {2 * c.c}, WeightKind::Vector, 0.5f);
    Tensor ref = cpu().linear_geglu(x.c, w.c, &b.c);
    Tensor got = g().linear_geglu(x.g, w.g, &b.g);
    EXPECT_EQ(got.shape(), ref.shape());
    expect_close(g().to_host(got), cpu().to_host(ref), tol(), "linear_geglu");
  }
}

TEST_P(CudaOps, LayerNorm) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    float mean;
  };
  const Case cases[] = {{{2, 77, 768}, 0.0f}, {{3, 5, 320}, 0.0f}, {{7, 1280}, 0.0f}, {{2, 4096, 320}, 0.0f},
                        {{4, 13}, 100.0f},   {{1, 1}, 0.0f},      {{2, 3, 2560}, -7.0f}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " mean " + std::to_string(c.mean));
    const int64_t ch = c.x.back();
    Both x = random_activation(g(), rng, c.x, 1.5f, c.mean);
    Both gamma = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Both beta = random_weight(g(), rng, {ch}, WeightKind::Vector, 0.3f);
    Tensor ref = cpu().layer_norm(x.c, gamma.c, beta.c, 1e-5f);
    Tensor got = g().layer_norm(x.g, gamma.g, beta.g, 1e-5f);
    expect_close(g().to_host(got), cpu().to_host(ref), tol(), "layer_norm");
  }
}

struct AttentionCase {
  int64_t b, nq, nk;
  int heads, d;
  bool causal;
};

void check_attention(CudaBackend& backend, DType t, Rng& rng, const AttentionCase& c, const char* what) {
  SCOPED_TRACE(std::string(what) + " b" + std::to_string(c.b) + " nq" + std::to_string(c.nq) + " nk" +
               std::to_string(c.nk) + " heads " + std::to_string(c.heads) + " d" + std::to_string(c.d) +
               (c.causal ? " causal" : ""));
  const int64_t ch = static_cast<int64_t>(c.heads) * c.d;
  Both q = random_activation(backend, rng, {c.b, c.nq, ch});
  Both k = random_activation(backend, rng, {c.b, c.nk, ch});
  Both v = random_activation(backend, rng, {c.b, c.nk, ch});
  Tensor ref = cpu().attention(q.c, k.c, v.c, c.heads, c.causal);
  Tensor got = backend.attention(q.g, k.g, v.g, c.heads, c.causal);
  expect_close(backend.to_host(got), cpu().to_host(ref), tolerance(t), what);
}

const AttentionCase kAttentionCases[] = {
    {2, 64, 64, 8, 40, false},   {2, 64, 77, 8, 40, false},  {1, 77, 77, 12, 64, true},
    {2, 33, 17, 8, 80, false},   {1, 16, 77, 8, 160, false}, {1, 256, 256, 1, 512, false},
    {1, 1024, 1024, 8, 40, false}, {3, 5, 9, 2, 24, true},  {1, 1, 1, 1, 8, false},
};

TEST_P(CudaOps, Attention) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (const AttentionCase& c : kAttentionCases) check_attention(g(), t(), rng, c, "attention");
}

TEST_P(CudaOps, AttentionNaiveKernel) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (const AttentionCase& c : kAttentionCases)
    check_attention(gpu_with(t(), "SDMPI_CUDA_ATTENTION", "naive"), t(), rng, c, "naive attention");
}

TEST_P(CudaOps, Activations) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (Activation act : {Activation::SiLU, Activation::GELU, Activation::QuickGELU}) {
    SCOPED_TRACE(static_cast<int>(act));
    Both x = random_activation(g(), rng, {3, 1001}, 4.0f);
    Tensor ref = cpu().activation(x.c, act);
    Tensor got = g().activation(x.g, act);
    // A few ulp of expf/erff apart from the CPU's: a tolerance, tighter than the op tolerance.
    expect_close(g().to_host(got), cpu().to_host(ref), t() == DType::F32 ? 1e-6 : tol(), "activation");
  }
}

TEST_P(CudaOps, Geglu) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (Shape shape : {Shape{2, 77, 320}, Shape{5, 6}, Shape{1, 4096, 2560}}) {
    SCOPED_TRACE(shape_label(shape));
    Both x = random_activation(g(), rng, shape, 2.0f);
    Tensor ref = cpu().geglu(x.c);
    Tensor got = g().geglu(x.g);
    EXPECT_EQ(got.shape(), ref.shape());
    expect_close(g().to_host(got), cpu().to_host(ref), t() == DType::F32 ? 1e-6 : tol(), "geglu");
  }
}

TEST_P(CudaOps, BinaryRoundsLikeOneEagerOp) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
    SCOPED_TRACE(static_cast<int>(op));
    const Shape shape{2, 3, 37, 5};
    Both a = random_activation(g(), rng, shape, 3.0f);
    std::vector<float> bv = rng.uniform(shape_numel(shape), 0.25f, 4.0f);
    for (size_t i = 0; i < bv.size(); i += 2) bv[i] = -bv[i];
    Both b = upload(g(), bv, shape);
    expect_equal(g().to_host(g().binary(op, a.g, b.g)), host_rounded(cpu(), t(), cpu().binary(op, a.c, b.c)),
                 "binary");
    for (bool first : {false, true}) {
      const float s = -1.7371f;
      expect_equal(g().to_host(g().binary_scalar(op, a.g, s, first)),
                   host_rounded(cpu(), t(), cpu().binary_scalar(op, a.c, s, first)), "binary_scalar");
    }
  }
  // Mixed dtypes promote to F32, exactly.
  if (t() != DType::F32) {
    Both a = random_activation(g(), rng, {100});
    std::vector<float> bv = rng.normal(100);
    Tensor b32 = gpu(DType::F32).from_host(bv.data(), {100});  // an F32 tensor on the same device
    // It was written on the F32 backend's stream; g() reads it on its own: order the two explicitly.
    gpu(DType::F32).synchronize();
    Tensor ref_b = cpu().from_host(bv.data(), {100});
    Tensor got = g().binary(BinaryOp::Mul, a.g, b32);
    EXPECT_EQ(got.dtype(), DType::F32);
    expect_equal(g().to_host(got), cpu().to_host(cpu().binary(BinaryOp::Mul, a.c, ref_b)), "mixed dtypes");
  }
}

TEST_P(CudaOps, AddBatchChannelAndClamp) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (Shape shape : {Shape{2, 16, 16, 320}, Shape{3, 7, 5}, Shape{1, 1, 1, 1}}) {
    SCOPED_TRACE(shape_label(shape));
    Both x = random_activation(g(), rng, shape);
    Both tt = random_activation(g(), rng, {shape[0], shape.back()});
    expect_equal(g().to_host(g().add_batch_channel(x.g, tt.g)),
                 host_rounded(cpu(), t(), cpu().add_batch_channel(x.c, tt.c)), "add_batch_channel");
    expect_equal(g().to_host(g().clamp(x.g, -0.5f, 0.75f)), host_rounded(cpu(), t(), cpu().clamp(x.c, -0.5f, 0.75f)),
                 "clamp");
  }
}

TEST_P(CudaOps, GuidanceCombineRoundsLikeThreeEagerOps) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  const Shape shape{4, 8, 8, 4};  // [2B, h, w, c], B = 2
  Both eps = random_activation(g(), rng, shape);
  const float scale = 7.5f;
  // Reference: sub, mul, add on the CPU, each result rounded to the compute dtype as eager torch does.
  Tensor u = eps.c.rows(0, 2), c = eps.c.rows(2, 4);
  std::vector<float> d = host_rounded(cpu(), t(), cpu().binary(BinaryOp::Sub, c, u));
  Tensor dt = cpu().from_host(d.data(), u.shape());
  std::vector<float> m = host_rounded(cpu(), t(), cpu().binary_scalar(BinaryOp::Mul, dt, scale));
  Tensor mt = cpu().from_host(m.data(), u.shape());
  std::vector<float> ref = host_rounded(cpu(), t(), cpu().binary(BinaryOp::Add, u, mt));
  expect_equal(g().to_host(g().guidance_combine(eps.g, scale)), ref, "guidance_combine");
}

TEST_P(CudaOps, TimestepEmbedding) {
  SDMPI_REQUIRE_GPU();
  const std::vector<float> steps = {999.0f, 981.0f, 500.5f, 21.0f, 1.0f, 0.0f, 978.6122f};
  for (int dim : {320, 33}) {
    for (bool flip : {true, false}) {
      for (float shift : {0.0f, 1.0f}) {
        SCOPED_TRACE("dim " + std::to_string(dim) + (flip ? " flip" : "") + " shift " + std::to_string(shift));
        std::vector<float> ref = timestep_embedding(steps, dim, flip, shift);
        Tensor tg = gpu(DType::F32).from_host(steps.data(), {static_cast<int64_t>(steps.size())});
        gpu(DType::F32).synchronize();  // written on another backend's stream than g() reads it on
        Tensor got = g().timestep_embedding(tg, dim, flip, shift);
        EXPECT_EQ(got.shape(), (Shape{static_cast<int64_t>(steps.size()), dim}));
        // Both sides round exp/sin/cos correctly (the kernel evaluates them in double).
        expect_close(g().to_host(got), rounded(t(), ref), t() == DType::F32 ? 1e-6 : tol(), "timestep_embedding");
      }
    }
  }
}

TEST_P(CudaOps, UpsampleNearest) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int64_t oh, ow;
  };
  const Case cases[] = {{{2, 8, 8, 4}, 16, 16}, {{1, 5, 7, 3}, 10, 14}, {{1, 5, 7, 3}, 8, 9},
                        {{2, 6, 6, 320}, 6, 6},  {{1, 9, 9, 2}, 4, 5},   {{1, 32, 32, 640}, 64, 64}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " -> " + std::to_string(c.oh) + "x" + std::to_string(c.ow));
    Both x = random_activation(g(), rng, c.x);
    expect_equal(g().to_host(g().upsample_nearest(x.g, c.oh, c.ow)),
                 cpu().to_host(cpu().upsample_nearest(x.c, c.oh, c.ow)), "upsample_nearest");
  }
}

// pad2d (the VAE encoder's right/bottom pad before its stride-2 convs) against the CPU reference.
TEST_P(CudaOps, Pad2d) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  struct Case {
    Shape x;
    int top, bottom, left, right;
  };
  const Case cases[] = {{{1, 8, 8, 4}, 0, 1, 0, 1}, {{2, 5, 7, 3}, 1, 2, 3, 0}, {{1, 64, 64, 128}, 0, 1, 0, 1},
                        {{1, 3, 3, 5}, 0, 0, 0, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_label(c.x) + " pad " + std::to_string(c.top) + "," + std::to_string(c.bottom) + "," +
                 std::to_string(c.left) + "," + std::to_string(c.right));
    Both x = random_activation(g(), rng, c.x);
    expect_equal(g().to_host(g().pad2d(x.g, c.top, c.bottom, c.left, c.right)),
                 cpu().to_host(cpu().pad2d(x.c, c.top, c.bottom, c.left, c.right)), "pad2d");
  }
}

TEST_P(CudaOps, ConcatEmbeddingCopy) {
  SDMPI_REQUIRE_GPU();
  Rng rng;
  for (auto [ca, cb] : {std::pair<int64_t, int64_t>{1280, 640}, {3, 5}, {320, 320}}) {
    Both a = random_activation(g(), rng, {2, 4, 5, ca});
    Both b = random_activation(g(), rng, {2, 4, 5, cb});
    expect_equal(g().to_host(g().concat_channels(a.g, b.g)), cpu().to_host(cpu().concat_channels(a.c, b.c)),
                 "concat_channels");
  }
  Both p0 = random_activation(g(), rng, {1, 77, 768});
  Both p1 = random_activation(g(), rng, {2, 77, 768});
  Both p2 = random_activation(g(), rng, {0, 77, 768});
  expect_equal(g().to_host(g().concat_batch({p0.g, p1.g, p2.g})), cpu().to_host(cpu().concat_batch({p0.c, p1.c, p2.c})),
               "concat_batch");
  Both table = random_weight(g(), rng, {1000, 64}, WeightKind::Embedding, 1.0f);
  std::vector<int32_t> ids;
  for (int i = 0; i < 77; ++i) ids.push_back(static_cast<int32_t>(rng.integer(0, 999)));
  ids.push_back(0);
  ids.push_back(999);
  expect_equal(g().to_host(g().embedding(ids, table.g)), rounded(t(), cpu().to_host(cpu().embedding(ids, table.c))),
               "embedding");
  EXPECT_THROW(g().embedding({1000}, table.g), Error);
  EXPECT_THROW(g().embedding({-1}, table.g), Error);
  Both x = random_activation(g(), rng, {3, 9, 11});
  expect_equal(g().to_host(g().copy(x.g)), x.host, "copy");
  expect_equal(g().to_host(g().copy(x.g.rows(1, 2))), std::vector<float>(x.host.begin() + 99, x.host.begin() + 198),
               "copy of a view");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaOps, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& info) { return dtype_label(info.param); });

}  // namespace
