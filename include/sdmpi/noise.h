// Noise that reproduces torch's CPU generator bit for bit.
//
// diffusers draws the initial latents (and the per-step noise of ancestral samplers) with
// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`. TorchGenerator replays
// that stream exactly as the x86-64 PyPI wheel computes it: MT19937 seeded like torch, float
// uniforms from the low 24 bits of one draw, and
//   - numel >= 16: torch's AVX2 Box-Muller kernel (Cephes log/sincos in float32, with the FMA
//     contractions the wheel's compiler made), written here as scalar code with explicit std::fma
//     so the bits do not depend on our build machine;
//   - numel < 16: the double-precision path with its cached second normal, which persists across
//     calls on one generator.
// See docs/reference/sd15-semantics.md §1. Only the low 32 bits of the seed matter, as in torch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace sdmpi {

class TorchGenerator {
 public:
  explicit TorchGenerator(uint64_t seed);

  // torch.Generator.manual_seed(seed): restarts the stream and forgets any cached normal.
  void manual_seed(uint64_t seed);
  uint64_t seed() const { return seed_; }

  // One torch.randn(n, generator=g, dtype=float32) call (any shape with n elements; the draw order
  // is the tensor's memory order).
  void randn(float* out, size_t n);
  std::vector<float> randn(size_t n);

  // One torch.randn(n, generator=g, dtype=float16) call, as IEEE half bit patterns (diffusers
  // draws this when an fp16 pipeline uses a CPU generator). In the pinned wheel it equals
  // randn(n) rounded to half when n is a multiple of 16 or below 16; other sizes differ in the
  // last 16 values (see noise.cpp).
  void randn_half(uint16_t* out, size_t n);

  // The raw engine: one 32-bit MT19937 output; random64 = (first << 32) | second, like torch.
  uint32_t random();
  uint64_t random64();

 private:
  float uniform_float();        // torch's uniform_real_distribution<float>(0, 1)
  double next_double_normal();  // torch's normal_distribution<double>, with its cache
  void twist();

  uint64_t seed_ = 0;
  uint32_t state_[624];
  int left_ = 1;
  int next_ = 0;
  std::optional<double> cached_double_normal_;
};

// Noise for one pipeline item: torch.randn((1, channels, height, width)) drawn in torch's NCHW
// order from `gen`, returned channels-last as [1, height, width, channels] (our latent layout).
void randn_nhwc(TorchGenerator& gen, int64_t channels, int64_t height, int64_t width, float* out);
std::vector<float> randn_nhwc(TorchGenerator& gen, int64_t channels, int64_t height, int64_t width);

}  // namespace sdmpi
