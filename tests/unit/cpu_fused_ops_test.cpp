// The fused ops' reference: on the CPU each is the unfused ops it stands for, bit for bit (the
// pipeline golden tests and the batch-invariance tests rely on it), and each is one call for the
// op observer (the launch count sees one op). linear_qkv = three linears; group_norm with a
// channel offset = add_batch_channel, then group_norm, also with the offset a column range of a
// wider tensor; linear_stacked = the linears joined along the channels; concat_group_norm =
// concat_channels, then group_norm.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/error.h"

namespace sdmpi {
namespace {

std::vector<float> random_values(std::mt19937& gen, int64_t n, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(gen);
  return v;
}

Tensor random_tensor(Backend& b, std::mt19937& gen, const Shape& shape, float scale = 1.0f) {
  const std::vector<float> v = random_values(gen, shape_numel(shape), scale);
  return b.from_host(v.data(), shape);
}

void expect_same_bits(Backend& b, const Tensor& got, const Tensor& ref, const std::string& what) {
  ASSERT_EQ(got.shape(), ref.shape()) << what;
  const std::vector<float> g = b.to_host(got), r = b.to_host(ref);
  const bool same_bits = g.size() == r.size() &&
                         (g.empty() || std::memcmp(g.data(), r.data(), g.size() * sizeof(float)) == 0);  // no memcmp on null
  EXPECT_TRUE(same_bits) << what << " differs from the unfused ops";
}

TEST(CpuBackendFusedOps, LinearQkvIsThreeLinears) {
  std::unique_ptr<Backend> b = make_cpu_backend(2);
  std::mt19937 gen(1234);
  struct Case {
    Shape x;
    int64_t n;
    bool bias;
  };
  const Case cases[] = {{{2, 64, 32}, 32, false}, {{1, 7, 13}, 5, true}, {{3, 1, 8}, 8, true}, {{2, 0, 4}, 4, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_str(c.x) + " -> " + std::to_string(c.n));
    const int64_t k = c.x.back();
    Tensor x = random_tensor(*b, gen, c.x);
    Tensor wq = random_tensor(*b, gen, {c.n, k}, 0.3f), wk = random_tensor(*b, gen, {c.n, k}, 0.3f),
           wv = random_tensor(*b, gen, {c.n, k}, 0.3f);
    Tensor bq = random_tensor(*b, gen, {c.n}), bk = random_tensor(*b, gen, {c.n}), bv = random_tensor(*b, gen, {c.n});
    std::vector<std::string> ops;
    b->set_op_observer([&](const OpCall& call) { ops.push_back(call.op); });
    const Backend::QkvProjections p = c.bias ? b->linear_qkv(x, wq, wk, wv, &bq, &bk, &bv) : b->linear_qkv(x, wq, wk, wv);
    b->set_op_observer({});
    EXPECT_EQ(ops, std::vector<std::string>{"linear_qkv"});
    expect_same_bits(*b, p.q, b->linear(x, wq, c.bias ? &bq : nullptr), "q");
    expect_same_bits(*b, p.k, b->linear(x, wk, c.bias ? &bk : nullptr), "k");
    expect_same_bits(*b, p.v, b->linear(x, wv, c.bias ? &bv : nullptr), "v");
  }
}

TEST(CpuBackendFusedOps, LinearQkvChecksItsContract) {
  std::unique_ptr<Backend> b = make_cpu_backend(1);
  std::mt19937 gen(5);
  Tensor x = random_tensor(*b, gen, {1, 3, 4});
  Tensor w = random_tensor(*b, gen, {6, 4}), narrow = random_tensor(*b, gen, {5, 4}), wide = random_tensor(*b, gen, {6, 5});
  Tensor bias = random_tensor(*b, gen, {6});
  EXPECT_THROW(b->linear_qkv(x, w, narrow, w), Error);
  EXPECT_THROW(b->linear_qkv(x, wide, wide, wide), Error);
  EXPECT_THROW(b->linear_qkv(x, w, w, w, &bias, &bias, nullptr), Error);
  EXPECT_THROW(b->linear_qkv(x, w, w, w, &narrow, &narrow, &narrow), Error);
}

TEST(CpuBackendFusedOps, GroupNormWithChannelOffsetIsAddThenNorm) {
  std::unique_ptr<Backend> b = make_cpu_backend(2);
  std::mt19937 gen(99);
  struct Case {
    Shape x;
    int groups;
    bool silu;
  };
  const Case cases[] = {{{2, 8, 8, 64}, 32, true}, {{3, 5, 7, 12}, 4, false}, {{1, 1, 1, 32}, 32, true}, {{2, 9, 6}, 3, true}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_str(c.x) + " groups " + std::to_string(c.groups));
    const int64_t ch = c.x.back();
    Tensor x = random_tensor(*b, gen, c.x, 2.0f);
    Tensor offset = random_tensor(*b, gen, {c.x[0], ch}, 3.0f);
    Tensor gamma = random_tensor(*b, gen, {ch}, 0.5f), beta = random_tensor(*b, gen, {ch}, 0.5f);
    std::vector<std::string> ops;
    b->set_op_observer([&](const OpCall& call) { ops.push_back(call.op); });
    Tensor got = b->group_norm(x, c.groups, gamma, beta, 1e-5f, c.silu, &offset);
    b->set_op_observer({});
    EXPECT_EQ(ops, std::vector<std::string>{"group_norm"});
    Tensor ref = b->group_norm(b->add_batch_channel(x, offset), c.groups, gamma, beta, 1e-5f, c.silu);
    expect_same_bits(*b, got, ref, "group_norm with a channel offset");
  }
  Tensor x = random_tensor(*b, gen, {2, 3, 3, 8});
  Tensor gamma = random_tensor(*b, gen, {8}), wrong = random_tensor(*b, gen, {1, 8});
  EXPECT_THROW(b->group_norm(x, 2, gamma, gamma, 1e-5f, true, &wrong), Error);
}

// The UNet's form: every ResNet's time_emb_proj as one linear_stacked, each norm2 reading its
// columns. Same bits as each ResNet's own linear and a [B, C] offset.
TEST(CpuBackendFusedOps, LinearStackedIsTheLinearsJoined) {
  std::unique_ptr<Backend> b = make_cpu_backend(2);
  std::mt19937 gen(7);
  const int64_t batch = 2, k = 24;
  const std::vector<int64_t> widths{8, 16, 8, 12, 32};
  Tensor x = random_tensor(*b, gen, {batch, k});
  std::vector<Tensor> w, bias;
  std::vector<const Tensor*> wp, bp;
  for (int64_t n : widths) {
    w.push_back(random_tensor(*b, gen, {n, k}, 0.2f));
    bias.push_back(random_tensor(*b, gen, {n}, 0.5f));
  }
  for (size_t i = 0; i < widths.size(); ++i) {
    wp.push_back(&w[i]);
    bp.push_back(&bias[i]);
  }
  std::vector<std::string> ops;
  b->set_op_observer([&](const OpCall& call) { ops.push_back(call.op); });
  Tensor all = b->linear_stacked(x, wp, bp);
  Tensor no_bias = b->linear_stacked(x, wp, {});
  b->set_op_observer({});
  EXPECT_EQ(ops, (std::vector<std::string>{"linear_stacked", "linear_stacked"}));
  ASSERT_EQ(all.shape(), (Shape{batch, 76}));
  const std::vector<float> got = b->to_host(all), got_nb = b->to_host(no_bias);
  int64_t column = 0;
  for (size_t i = 0; i < widths.size(); ++i) {
    SCOPED_TRACE("part " + std::to_string(i));
    const int64_t n = widths[i];
    const std::vector<float> ref = b->to_host(b->linear(x, w[i], &bias[i]));
    const std::vector<float> ref_nb = b->to_host(b->linear(x, w[i], nullptr));
    for (int64_t r = 0; r < batch; ++r) {
      EXPECT_EQ(0, std::memcmp(got.data() + r * 76 + column, ref.data() + r * n, n * sizeof(float)));
      EXPECT_EQ(0, std::memcmp(got_nb.data() + r * 76 + column, ref_nb.data() + r * n, n * sizeof(float)));
    }
    // norm2 of a ResNet with `n` channels reading its columns = with its own [B, n] offset.
    Tensor h = random_tensor(*b, gen, {batch, 3, 5, n}, 2.0f);
    Tensor gamma = random_tensor(*b, gen, {n}, 0.5f), beta = random_tensor(*b, gen, {n}, 0.5f);
    Tensor own = b->linear(x, w[i], &bias[i]);
    expect_same_bits(*b, b->group_norm(h, 4, gamma, beta, 1e-5f, true, &all, column),
                     b->group_norm(h, 4, gamma, beta, 1e-5f, true, &own), "group_norm on a column range");
    column += n;
  }
  // The contract: weights matching x, biases all or none, the column range inside the offset.
  Tensor other_k = random_tensor(*b, gen, {8, k + 1});
  EXPECT_THROW(b->linear_stacked(x, {&w[0], &other_k}, {}), Error);
  EXPECT_THROW(b->linear_stacked(x, wp, {&bias[0]}), Error);
  EXPECT_THROW(b->linear_stacked(x, {}, {}), Error);
  Tensor h = random_tensor(*b, gen, {batch, 2, 2, 32});
  Tensor g32 = random_tensor(*b, gen, {32});
  EXPECT_THROW(b->group_norm(h, 4, g32, g32, 1e-5f, true, &all, 45), Error);  // 45 + 32 > 76
  EXPECT_THROW(b->group_norm(h, 4, g32, g32, 1e-5f, true, nullptr, 4), Error);
  EXPECT_NO_THROW(b->group_norm(h, 4, g32, g32, 1e-5f, true, &all, 44));
}

TEST(CpuBackendFusedOps, ConcatGroupNormIsConcatThenNorm) {
  std::unique_ptr<Backend> b = make_cpu_backend(2);
  std::mt19937 gen(5);
  struct Case {
    Shape a;
    int64_t cb;
    int groups;
    bool silu;
  };
  // Groups that straddle the seam (60 channels per group over 40 + 20 ...), one side empty of a group.
  const Case cases[] = {{{2, 4, 4, 1280}, 640, 32, true}, {{1, 3, 5, 40}, 20, 3, true}, {{2, 2, 2, 8}, 24, 4, false},
                        {{3, 7, 6}, 2, 2, true}};
  for (const Case& c : cases) {
    SCOPED_TRACE(shape_str(c.a) + " + " + std::to_string(c.cb) + " channels, groups " + std::to_string(c.groups));
    Shape bs = c.a;
    bs.back() = c.cb;
    const int64_t ch = c.a.back() + c.cb;
    Tensor x = random_tensor(*b, gen, c.a, 2.0f), skip = random_tensor(*b, gen, bs, 1.5f);
    Tensor gamma = random_tensor(*b, gen, {ch}, 0.5f), beta = random_tensor(*b, gen, {ch}, 0.5f);
    std::vector<std::string> ops;
    b->set_op_observer([&](const OpCall& call) { ops.push_back(call.op); });
    Backend::JoinedNorm got = b->concat_group_norm(x, skip, c.groups, gamma, beta, 1e-5f, c.silu);
    b->set_op_observer({});
    EXPECT_EQ(ops, std::vector<std::string>{"concat_group_norm"});
    Tensor joined = b->concat_channels(x, skip);
    expect_same_bits(*b, got.joined, joined, "the concat");
    expect_same_bits(*b, got.normed, b->group_norm(joined, c.groups, gamma, beta, 1e-5f, c.silu), "the norm");
  }
  Tensor x = random_tensor(*b, gen, {2, 3, 3, 8}), other = random_tensor(*b, gen, {2, 3, 4, 8});
  Tensor g16 = random_tensor(*b, gen, {16}), g12 = random_tensor(*b, gen, {12});
  EXPECT_THROW(b->concat_group_norm(x, other, 4, g16, g16, 1e-5f, true), Error);  // other spatial size
  EXPECT_THROW(b->concat_group_norm(x, x, 4, g12, g12, 1e-5f, true), Error);      // gamma not [16]
  EXPECT_THROW(b->concat_group_norm(x, x, 5, g16, g16, 1e-5f, true), Error);      // 16 channels, 5 groups
}

}  // namespace
}  // namespace sdmpi
