// Picks the widest vector instruction set the running CPU has, once (see cpu_simd.h).
#include "backend/cpu/cpu_simd.h"

namespace sdmpi::cpu {

SimdIsa simd_isa() {
  static const SimdIsa isa = [] {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return SimdIsa::Avx512;
    if (__builtin_cpu_supports("avx2")) return SimdIsa::Avx2;
#endif
    return SimdIsa::Sse2;
  }();
  return isa;
}

const char* simd_isa_name() {
  switch (simd_isa()) {
    case SimdIsa::Avx512: return "AVX-512";
    case SimdIsa::Avx2: return "AVX2";
    case SimdIsa::Sse2: break;
  }
  return "SSE2";
}

}  // namespace sdmpi::cpu
