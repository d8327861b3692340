// Shared helpers of the GPU tests: skipping without a GPU, one backend per dtype, fresh random
// inputs fed identically to the CPU reference and the GPU, and the comparisons.
//
// Inputs are drawn fresh every run (seed printed at start; SDMPI_TEST_SEED=<n> repeats a run) and
// rounded to the GPU's compute dtype before both backends see them, so the comparison measures the
// op, not the input rounding. Tolerances (relative L2 error): float32 1e-5, float16/bfloat16 1e-2.
// The GPU backends allocate with poisoning on (every new block filled with NaN bytes), so an output
// element an op forgets to write shows up as a NaN mismatch.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/cuda_backend.h"
#include "sdmpi/dtype.h"

namespace sdmpi {
// How GoogleTest names a DType parameter ("GetParam() = F16").
inline void PrintTo(DType t, std::ostream* os) { *os << dtype_name(t); }
}  // namespace sdmpi

namespace sdmpi::gputest {

inline const CudaProbe& probe() {
  static const CudaProbe p = probe_cuda();
  return p;
}

// Skips the current test, visibly, when no GPU works here.
#define SDMPI_REQUIRE_GPU()                                                                       \
  do {                                                                                            \
    if (!::sdmpi::gputest::probe().usable())                                                      \
      GTEST_SKIP() << "no usable CUDA GPU: " << ::sdmpi::gputest::probe().reason;                 \
  } while (0)

// One backend per compute dtype for the whole test program, device 0, poisoning on. Deliberately
// never destroyed: the CUDA runtime's own teardown at exit is not ordered with static destructors.
inline CudaBackend& gpu(DType t) {
  static std::map<DType, CudaBackend*> backends;
  auto it = backends.find(t);
  if (it != backends.end()) return *it->second;
  CudaBackend* b = as_cuda(*make_cuda_backend(0, t).release());
  b->set_poison(true);
  backends[t] = b;
  return *b;
}

// A second backend for dtype t created with the environment variable `name`=`value` (the debugging
// switches SDMPI_CUDA_ATTENTION=naive, SDMPI_CUDA_CONV=direct), so the fallback kernels get tested too.
inline CudaBackend& gpu_with(DType t, const char* name, const char* value) {
  static std::map<std::tuple<DType, std::string, std::string>, CudaBackend*> backends;
  auto key = std::make_tuple(t, std::string(name), std::string(value));
  auto it = backends.find(key);
  if (it != backends.end()) return *it->second;
  setenv(name, value, 1);
  CudaBackend* b = as_cuda(*make_cuda_backend(0, t).release());
  unsetenv(name);
  b->set_poison(true);
  backends[key] = b;
  return *b;
}

inline Backend& cpu() {
  static Backend* b = make_cpu_backend(0).release();
  return *b;
}

inline uint64_t base_seed() {
  static const uint64_t seed = [] {
    const char* env = std::getenv("SDMPI_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    std::fprintf(stderr, "gpu tests: random seed %llu (SDMPI_TEST_SEED=%llu repeats this run)\n",
                 static_cast<unsigned long long>(s), static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// A generator per test: the base seed mixed with the test's name.
class Rng {
 public:
  Rng() {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
    uint64_t h = 1469598103934665603ull;
    for (char ch : name) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
    gen_.seed(base_seed() ^ h);
  }
  std::vector<float> normal(int64_t n, float scale = 1.0f, float mean = 0.0f) {
    std::normal_distribution<float> d(mean, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = d(gen_);
    return v;
  }
  std::vector<float> uniform(int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = d(gen_);
    return v;
  }
  int64_t integer(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen_); }

 private:
  std::mt19937_64 gen_;
};

// v rounded to dtype t (identity for F32).
inline std::vector<float> rounded(DType t, std::vector<float> v) {
  if (t == DType::F32) return v;
  std::vector<uint16_t> bits(v.size());
  convert_from_f32(t, v.data(), bits.data(), v.size());
  convert_to_f32(t, bits.data(), v.data(), v.size());
  return v;
}

inline double tolerance(DType t) { return t == DType::F32 ? 1e-5 : 1e-2; }

inline const char* dtype_label(DType t) { return t == DType::F32 ? "F32" : t == DType::F16 ? "F16" : "BF16"; }

// A test run once per compute dtype: t() the dtype, g() the GPU backend in it, tol() its tolerance.
class DtypeParamTest : public ::testing::TestWithParam<DType> {
 protected:
  DType t() const { return GetParam(); }
  CudaBackend& g() { return gpu(GetParam()); }
  double tol() const { return tolerance(GetParam()); }
};

// The same values on both backends: an activation.
struct Both {
  std::vector<float> host;  // as both backends hold them
  Tensor c, g;
};

inline Both upload(Backend& gpu_backend, std::vector<float> values, const Shape& shape) {
  Both b;
  b.host = rounded(gpu_backend.compute_dtype(), std::move(values));
  b.c = cpu().from_host(b.host.data(), shape);
  b.g = gpu_backend.from_host(b.host.data(), shape);
  return b;
}

inline Both random_activation(Backend& gpu_backend, Rng& rng, const Shape& shape, float scale = 1.0f,
                              float mean = 0.0f) {
  return upload(gpu_backend, rng.normal(shape_numel(shape), scale, mean), shape);
}

// A weight in PyTorch layout `shape`, uploaded for `kind` from a float32 file view to both.
// Matrix weights are rounded to the compute dtype first (that is what the GPU stores); vectors
// stay float32 on both.
inline Both random_weight(Backend& gpu_backend, Rng& rng, const Shape& shape, WeightKind kind, float scale) {
  Both b;
  std::vector<float> v = rng.normal(shape_numel(shape), scale);
  b.host = kind == WeightKind::Vector ? v : rounded(gpu_backend.compute_dtype(), v);
  WeightView w;
  w.name = "test.weight";
  w.dtype = DType::F32;
  w.shape = shape;
  w.data = b.host.data();
  b.c = cpu().upload_weight(w, kind);
  b.g = gpu_backend.upload_weight(w, kind);
  return b;
}

// Relative L2 error within tol, no non-finite mismatch, and no single element off by more than
// 10·tol of the largest reference magnitude.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double num = 0, den = 0, max_err = 0, max_ref = 0;
  size_t nonfinite = 0, first_nonfinite = 0, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool gf = std::isfinite(got[i]), rf = std::isfinite(ref[i]);
    if (!gf || !rf) {
      const bool same = (std::isnan(got[i]) && std::isnan(ref[i])) || got[i] == ref[i];
      if (!same && nonfinite++ == 0) first_nonfinite = i;
      continue;
    }
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    if (std::fabs(d) > max_err) {
      max_err = std::fabs(d);
      worst = i;
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
  }
  ASSERT_EQ(nonfinite, 0u) << what << ": " << nonfinite << " non-finite mismatches, first at " << first_nonfinite
                           << " (got " << got[first_nonfinite] << ", expected " << ref[first_nonfinite] << ")";
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  EXPECT_LE(rel, tol) << what << ": relative L2 error " << rel << " (tolerance " << tol << "); worst element "
                      << worst << ": got " << got[worst] << ", expected " << ref[worst];
  EXPECT_LE(max_err, 10 * tol * std::max(max_ref, 1e-6))
      << what << ": element " << worst << " off by " << max_err << " (got " << got[worst] << ", expected "
      << ref[worst] << ", largest |expected| " << max_ref << ")";
}

// Bit-for-bit equality (NaN equals NaN).
inline void expect_equal(const std::vector<float>& got, const std::vector<float>& ref, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  size_t mismatches = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    bool same = (std::isnan(got[i]) && std::isnan(ref[i])) || float_bits(got[i]) == float_bits(ref[i]);
    if (!same && mismatches++ == 0) first = i;
  }
  EXPECT_EQ(mismatches, 0u) << what << ": " << mismatches << " of " << got.size() << " elements differ, first at "
                            << first << ": got " << got[first] << ", expected " << ref[first];
}

inline std::string shape_label(const Shape& s) { return shape_str(s); }

}  // namespace sdmpi::gputest
