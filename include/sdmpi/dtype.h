// Element types and their host-side conversions.
//
// Weights arrive as F32, F16 or BF16 (safetensors); the CPU backend computes in F32, the CUDA
// backend in F16, BF16 or F32. Conversions round to nearest even, as torch's .half()/.bfloat16() do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace sdmpi {

enum class DType : uint8_t { F32, F16, BF16 };

inline size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "?";
}

// Parses "fp32"/"fp16"/"bf16" (command line) and "F32"/"F16"/"BF16" (safetensors). Returns false
// for anything else.
bool parse_dtype(const std::string& s, DType* out);

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE binary16 <-> binary32, round to nearest even, with subnormals, infinities and NaN.
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);

// bfloat16 <-> binary32, round to nearest even (NaN stays NaN).
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// Converts n elements of type `from` at src to float32 at dst.
void convert_to_f32(DType from, const void* src, float* dst, size_t n);
// Converts n float32 elements to type `to`.
void convert_from_f32(DType to, const float* src, void* dst, size_t n);

}  // namespace sdmpi
