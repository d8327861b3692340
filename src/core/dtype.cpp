#include "sdmpi/dtype.h"

namespace sdmpi {

bool parse_dtype(const std::string& s, DType* out) {
  if (s == "fp32" || s == "F32" || s == "float32") { *out = DType::F32; return true; }
  if (s == "fp16" || s == "F16" || s == "float16") { *out = DType::F16; return true; }
  if (s == "bf16" || s == "BF16" || s == "bfloat16") { *out = DType::BF16; return true; }
  return false;
}

uint16_t float_to_half(float f) {
  uint32_t x = float_bits(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // subnormal half (or zero): value = abs_float * 2^24 rounded
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);  // < 2^-25 rounds to 0 (2^-25 ties to even 0)
    uint32_t exp = abs >> 23;
    uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;  // 14 + (112 - exp) + 0 ... places mantissa for a subnormal half
    uint32_t half_mant = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return static_cast<uint16_t>(sign | half_mant);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    // subnormal: normalise
    int e = -1;
    do { ++e; mant <<= 1; } while (!(mant & 0x400u));
    mant &= 0x3ffu;
    return bits_float(sign | ((112u - static_cast<uint32_t>(e)) << 23) | (mant << 13));
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

void convert_to_f32(DType from, const void* src, float* dst, size_t n) {
  if (n == 0) return;  // src/dst may be null for empty tensors
  switch (from) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      break;
    case DType::F16: {
      // Branch-free, so the compiler vectorises it (model load converts billions of these); the
      // same bits as half_to_float for all 65536 inputs (weight_loading_test).
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) {
        const uint32_t h = s[i], exp = h & 0x7c00u;
        const uint32_t em = (h & 0x7fffu) << 13;  // exponent and mantissa at their float places
        const uint32_t inf_nan = 0u - static_cast<uint32_t>(exp == 0x7c00u);  // masks, not branches
        const uint32_t tiny_mask = 0u - static_cast<uint32_t>(exp == 0);
        // Normal: exponent rebiased (15 → 127); infinity/NaN: exponent all ones, payload kept.
        const uint32_t wide = (em + (112u << 23)) | (inf_nan & 0x7f800000u);
        // Zero and subnormals: mantissa × 2^-24, exact in float32.
        const uint32_t tiny = float_bits(static_cast<float>(static_cast<int32_t>(h & 0x3ffu)) * 0x1p-24f);
        dst[i] = bits_float((wide & ~tiny_mask) | (tiny & tiny_mask) | ((h & 0x8000u) << 16));
      }
      break;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      break;
    }
  }
}

void convert_from_f32(DType to, const float* src, void* dst, size_t n) {
  if (n == 0) return;
  switch (to) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      break;
    case DType::F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_half(src[i]);
      break;
    }
    case DType::BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      break;
    }
  }
}

}  // namespace sdmpi
