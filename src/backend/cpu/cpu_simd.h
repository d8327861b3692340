// Portable SIMD for the CPU backend's transcendental loops (exp, SiLU, GELU, softmax).
//
// The project builds for plain x86-64 (no -march), where the compiler only auto-vectorises with
// SSE2 and gives up on loops with selects. The few loops that cost real time are therefore written
// once on GCC vector-extension types of W lanes (Vec<W>) and compiled three times: W = 16 under
// target("avx512f"), W = 8 under target("avx2,fma"), W = 4 for plain SSE2; simd_dispatch() picks one at
// run time. Every lane does the same IEEE operations in the same order whatever W is (no implicit
// contraction: fused multiply-adds only where written, through vfma; no horizontal reductions), so
// all three give bit-identical results: the choice of instruction set never changes an image.
//
// A kernel is a struct with `template <int W> static void run(args...)`, marked SDMPI_SIMD_INLINE
// so that it is compiled inside each target-specific wrapper.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

// Vector types never cross a non-inlined call, so the ABI notes about them do not apply.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define SDMPI_SIMD_INLINE __attribute__((always_inline)) inline

namespace sdmpi::cpu {

template <int W> struct Vec;
template <> struct Vec<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef int32_t i __attribute__((vector_size(16)));
};
template <> struct Vec<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef int32_t i __attribute__((vector_size(32)));
};
template <> struct Vec<16> {
  typedef float f __attribute__((vector_size(64)));
  typedef int32_t i __attribute__((vector_size(64)));
};

// W doubles beside W floats (a dependent vector_size is not allowed in a typedef): float → double
// conversions are exact, double → float rounds to nearest as static_cast does.
template <int W> struct DoubleVec;
template <> struct DoubleVec<4> { typedef double d __attribute__((vector_size(32))); };
template <> struct DoubleVec<8> { typedef double d __attribute__((vector_size(64))); };
template <> struct DoubleVec<16> { typedef double d __attribute__((vector_size(128))); };

template <int W> SDMPI_SIMD_INLINE typename Vec<W>::f vsplat(float v) {
  typename Vec<W>::f r;
  for (int i = 0; i < W; ++i) r[i] = v;
  return r;
}
template <int W> SDMPI_SIMD_INLINE typename Vec<W>::f vload(const float* p) {
  typename Vec<W>::f r;
  std::memcpy(&r, p, sizeof r);
  return r;
}
template <int W> SDMPI_SIMD_INLINE void vstore(float* p, typename Vec<W>::f v) {
  std::memcpy(p, &v, sizeof v);
}

// a·b + c rounded once, every lane. Written per lane on the builtin so that the compiler emits one
// vfmadd under the AVX-512 and AVX2 (with FMA) wrappers, and calls the C library's fmaf (correctly
// rounded, in hardware or software) in the portable build: the same bits on every instruction set.
// The build keeps -ffp-contract=off, so `a * b + c` stays two roundings wherever it is written.
template <int W>
SDMPI_SIMD_INLINE typename Vec<W>::f vfma(typename Vec<W>::f a, typename Vec<W>::f b, typename Vec<W>::f c) {
  typename Vec<W>::f r;
  for (int i = 0; i < W; ++i) r[i] = __builtin_fmaf(a[i], b[i], c[i]);
  return r;
}

// e^x for every lane, within 1 ulp over the float range (Cody–Waite reduction by ln 2 in two
// parts, then a degree-7 polynomial for e^r on |r| ≤ ln2/2, then exact scaling by 2^n done in
// two halves so n = 128 and n = -126 stay representable). exp(-inf) = 0, exp(+inf) = inf,
// NaN stays NaN; results that would be subnormal (x < -87.34) flush to 0.
// e^(x - n·ln 2) for |x - n·ln 2| ≤ ln2/2, given nf = n as a float: the reduction (ln 2 in two
// parts) and the polynomial that vexp and the attention's exp (cpu_attention.cpp) share.
template <int W>
SDMPI_SIMD_INLINE typename Vec<W>::f vexp_reduced(typename Vec<W>::f x, typename Vec<W>::f nf) {
  using F = typename Vec<W>::f;
  F r = vfma<W>(nf, vsplat<W>(-0.693359375f), x);  // exact: ln 2's first part has 9 bits
  r = vfma<W>(nf, vsplat<W>(2.12194440e-4f), r);
  F z = r * r;
  F y = vfma<W>(vsplat<W>(1.9875691500e-4f), r, vsplat<W>(1.3981999507e-3f));
  y = vfma<W>(y, r, vsplat<W>(8.3334519073e-3f));
  y = vfma<W>(y, r, vsplat<W>(4.1665795894e-2f));
  y = vfma<W>(y, r, vsplat<W>(1.6666665459e-1f));
  y = vfma<W>(y, r, vsplat<W>(5.0000001201e-1f));
  return vfma<W>(y, z, r) + 1.0f;
}
template <int W> SDMPI_SIMD_INLINE typename Vec<W>::f vexp(typename Vec<W>::f x) {
  using F = typename Vec<W>::f;
  using I = typename Vec<W>::i;
  const F hi = vsplat<W>(88.7228391f), lo = vsplat<W>(-87.3365448f);
  F xc = x > hi ? hi : x;
  xc = xc < lo ? lo : xc;
  xc = x == x ? xc : vsplat<W>(0.0f);  // NaN lanes: keep the integer conversion defined
  F fx = vfma<W>(xc, vsplat<W>(1.44269504088896341f), vsplat<W>(0.5f));
  I n = __builtin_convertvector(fx, I);  // truncation; fix to floor below
  n = __builtin_convertvector(n, F) > fx ? n - 1 : n;
  F nf = __builtin_convertvector(n, F);
  F y = vexp_reduced<W>(xc, nf);
  I n1 = n >> 1;
  F res = y * reinterpret_cast<F>((n1 + 127) << 23) * reinterpret_cast<F>((n - n1 + 127) << 23);
  res = x > hi ? vsplat<W>(INFINITY) : res;
  res = x < lo ? vsplat<W>(0.0f) : res;
  res = x != x ? x : res;
  return res;
}

// erf(x) for every lane: |x| < 1: x·P(x²) (7 terms); 1 ≤ |x| < 4: 1 − e^(−x²)·Q(1/|x|) (10 terms);
// beyond, ±1. P and Q are least-squares fits (reweighted towards minimax) in double, rounded to
// float; measured error ≤ 2.5 ulp against erf in double (tests/unit/cpu_backend_test.cpp).
template <int W> SDMPI_SIMD_INLINE typename Vec<W>::f verf(typename Vec<W>::f x) {
  using F = typename Vec<W>::f;
  F a = x < 0.0f ? -x : x;
  F t = a * a;
  F p = vsplat<W>(7.854221622e-05f);
  p = vfma<W>(p, t, vsplat<W>(-8.010311285e-04f));
  p = vfma<W>(p, t, vsplat<W>(5.188342649e-03f));
  p = vfma<W>(p, t, vsplat<W>(-2.685382031e-02f));
  p = vfma<W>(p, t, vsplat<W>(1.128358543e-01f));
  p = vfma<W>(p, t, vsplat<W>(-3.761262596e-01f));
  p = vfma<W>(p, t, vsplat<W>(1.128379107e+00f));
  F small = a * p;
  F v = 1.0f / (a < 1.0f ? vsplat<W>(1.0f) : a);
  F q = vsplat<W>(3.071605228e-02f);
  q = vfma<W>(q, v, vsplat<W>(-1.797242612e-01f));
  q = vfma<W>(q, v, vsplat<W>(4.382676780e-01f));
  q = vfma<W>(q, v, vsplat<W>(-5.369860530e-01f));
  q = vfma<W>(q, v, vsplat<W>(2.383658290e-01f));
  q = vfma<W>(q, v, vsplat<W>(2.303774357e-01f));
  q = vfma<W>(q, v, vsplat<W>(-3.758567274e-01f));
  q = vfma<W>(q, v, vsplat<W>(2.053440921e-02f));
  q = vfma<W>(q, v, vsplat<W>(5.617681742e-01f));
  q = vfma<W>(q, v, vsplat<W>(1.210682094e-04f));
  F large = vfma<W>(-vexp<W>(-t), q, vsplat<W>(1.0f));
  F r = a < 1.0f ? small : large;
  r = a >= 4.0f ? vsplat<W>(1.0f) : r;
  r = x < 0.0f ? -r : r;
  return x != x ? x : r;
}

// Applies Op::apply<W> (an SDMPI_SIMD_INLINE static member: no vector value may cross a real call,
// whose ABI would differ between the target-specific copies) to n floats: full vectors, then the
// tail through a zero-padded vector so tail elements get exactly the same arithmetic.
template <int W, class Op>
SDMPI_SIMD_INLINE void vmap(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore<W>(y + i, Op::template apply<W>(vload<W>(x + i)));
  if (i < n) {
    float tmp[W] = {};
    std::memcpy(tmp, x + i, static_cast<size_t>(n - i) * sizeof(float));
    vstore<W>(tmp, Op::template apply<W>(vload<W>(tmp)));
    std::memcpy(y + i, tmp, static_cast<size_t>(n - i) * sizeof(float));
  }
}

// Ordered by width: a cap compares as an int.
enum class SimdIsa { Sse2, Avx2, Avx512 };
// The instruction set every CPU kernel uses: the widest the CPU has (AVX2 counts only with FMA),
// capped by SDMPI_CPU_ISA=avx512|avx2|portable; decided once (cpu_simd.cpp). A cap above what
// the CPU has, or an unknown value, is an Error on first use.
SimdIsa simd_isa();
const char* simd_isa_name();
// The CPU's bfloat16 matrix units ("AMX-BF16", "AVX512-BF16", both, or ""), for the device line:
// detected, never used, since the CPU backend computes in float32 (bf16's 8-bit mantissa would not
// keep the images within 1 level of diffusers; AMX has no float32 mode, and its float32-accurate
// emulation, six bf16 tile products per float32 one, measured no faster than our FMA kernels on an
// Emerald Rapids VM: bench/cpu/amx_probe_bench.cpp).
std::string bf16_units_name();
// The rule behind simd_isa(), for tests: `requested` is SDMPI_CPU_ISA's value (null or empty: none).
SimdIsa simd_isa_from(const char* requested, SimdIsa detected);

#if defined(__x86_64__)
template <class K, class... A> __attribute__((target("avx512f"))) void simd_run_avx512(A... a) {
  K::template run<16>(a...);
}
template <class K, class... A> __attribute__((target("avx2,fma"))) void simd_run_avx2(A... a) {
  K::template run<8>(a...);
}
#endif
template <class K, class... A> void simd_run_sse2(A... a) { K::template run<4>(a...); }

template <class K, class... A> void simd_dispatch(A... a) {
#if defined(__x86_64__)
  switch (simd_isa()) {
    case SimdIsa::Avx512: simd_run_avx512<K>(a...); return;
    case SimdIsa::Avx2: simd_run_avx2<K>(a...); return;
    case SimdIsa::Sse2: break;
  }
#endif
  simd_run_sse2<K>(a...);
}

}  // namespace sdmpi::cpu
