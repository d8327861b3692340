// The fused ops' reference: on the CPU each is the unfused ops it stands for, bit for bit (the
// pipeline golden tests and the batch-invariance tests rely on it), and each is one call for the
// op observer (the launch count sees one op). linear_qkv = three linears; group_norm with a
// channel offset = add_batch_channel, then group_norm.
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

}  // namespace
}  // namespace sdmpi
