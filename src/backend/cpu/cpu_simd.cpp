// Picks the widest vector instruction set the running CPU has, once (see cpu_simd.h), capped by
// SDMPI_CPU_ISA so that the AVX2 and portable kernels can be run, tested and timed on a CPU that
// has AVX-512 (CI's and ours): the same build takes the same paths an AVX2-only node would.
#include "backend/cpu/cpu_simd.h"

#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "sdmpi/error.h"

namespace sdmpi::cpu {

namespace {

SimdIsa detected_isa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return SimdIsa::Avx512;
  // Every AVX2 kernel of ours also uses FMA (one rounding per multiply-add, as on AVX-512).
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SimdIsa::Avx2;
#endif
  return SimdIsa::Sse2;
}

const char* isa_display_name(SimdIsa isa) {
  switch (isa) {
    case SimdIsa::Avx512: return "AVX-512";
    case SimdIsa::Avx2: return "AVX2";
    case SimdIsa::Sse2: break;
  }
  return "SSE2";
}

}  // namespace

SimdIsa simd_isa_from(const char* requested, SimdIsa detected) {
  if (requested == nullptr || *requested == '\0') return detected;
  const std::string want = requested;
  SimdIsa cap;
  if (want == "avx512") cap = SimdIsa::Avx512;
  else if (want == "avx2") cap = SimdIsa::Avx2;
  else if (want == "portable") cap = SimdIsa::Sse2;
  else throw InputError("SDMPI_CPU_ISA=" + want + ": expected 'avx512', 'avx2' or 'portable'");
  if (static_cast<int>(cap) > static_cast<int>(detected))
    throw InputError("SDMPI_CPU_ISA=" + want + ": this CPU has only " + isa_display_name(detected));
  return cap;
}

SimdIsa simd_isa() {
  static const SimdIsa isa = simd_isa_from(std::getenv("SDMPI_CPU_ISA"), detected_isa());
  return isa;
}

const char* simd_isa_name() { return isa_display_name(simd_isa()); }

std::string bf16_units_name() {
#if defined(__x86_64__)
  // CPUID leaf 7: sub-leaf 0 EDX bit 22 = AMX-BF16 (EDX 24 = AMX tiles); sub-leaf 1 EAX bit 5 =
  // AVX512-BF16. Read directly: not every compiler's __builtin_cpu_supports knows the AMX names.
  unsigned a, b, c, d;
  std::string units;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1)) units = "AMX-BF16";
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a >> 5 & 1)) units += units.empty() ? "AVX512-BF16" : ", AVX512-BF16";
  return units;
#else
  return "";
#endif
}

}  // namespace sdmpi::cpu
