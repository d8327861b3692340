// Attention on the GPU: out = softmax(q·kᵀ·scale [+ causal mask])·v for every (batch, head), in
// one fused kernel per call (flash style: K/V stream through shared memory in tiles, the softmax
// is computed online in fp32, the N×N score matrix never reaches device memory).
//
// This header is the one entry point: plain C++ (no device code), so host code compiled by the C++
// compiler (src/backend/cuda) includes it. attention_forward() picks the kernel variant for the
// call's shape and the device (kernels/attention.cu, `choose_variant`); the other functions exist
// for tests and benchmarks, which check and time every variant.
//
// Variants (bench/gpu/ATTENTION_NOTES.md has the design, FLOP counts and resource usage):
//   Reference      one warp per query row, fp32 scalar arithmetic; any head_dim, dtype, alignment.
//   Flash          tensor cores (mma.sync m16n8k16, sm_80+), K/V tiles through shared memory with
//                  cp.async, online softmax; head dims 40, 64, 80, 160 without padding waste.
//   FlashShortKV   the whole K/V of a head in one tile (seq_kv ≤ 80: cross-attention to 77 text
//                  tokens, CLIP's causal self-attention): one pass, keys padded to 80, not 128.
//   FlashWideHead  head_dim 512 (the VAE's single-head mid-block attention): warps split the head
//                  dimension, so the 16×512 output rows fit in registers.
//   FlashHopper    sm_90a only, head dims 40 and 64, not causal: TMA + wgmma + warp specialisation
//                  (FlashAttention-3 style, kernels/attention_hopper.cu). Picked on compute
//                  capability 9.0 when SDMPI_CUDA_ATTENTION=hopper (default: the Flash kernels
//                  until a GPU window has validated it); SDMPI_CUDA_ATTENTION=fa2 forces Flash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "sdmpi/dtype.h"

namespace sdmpi::cuda {

// One attention call. Tensors are token-major; element (b, i, head, c) of q lives at
//   q + b*q_batch_stride + i*q_row_stride + head*head_dim + c        (in elements of `dtype`),
// the [B, N, heads*head_dim] layout of Backend::attention (PyTorch's view(B, N, heads, d)). A row
// stride larger than heads*head_dim reads slices of a fused projection without copies: for a QKV
// buffer [B, N, 3*heads*d], q = base, k = base + heads*d, v = base + 2*heads*d, row strides 3*heads*d.
// `out` is written the same way and must not overlap q, k or v.
struct AttentionParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  DType dtype = DType::F16;  // of q, k, v and out. F16/BF16: tensor-core kernels; F32: Reference.
  int batch = 0;
  int heads = 0;
  int seq_q = 0;     // query tokens, Nq
  int seq_kv = 0;    // key/value tokens, Nk (≥ 1)
  int head_dim = 0;  // d
  // Strides in elements; 0 means packed (row: heads*head_dim; batch: seq * row stride).
  int64_t q_row_stride = 0, k_row_stride = 0, v_row_stride = 0, out_row_stride = 0;
  int64_t q_batch_stride = 0, k_batch_stride = 0, v_batch_stride = 0, out_batch_stride = 0;
  float scale = 0.0f;  // 0 means 1/sqrt(head_dim) (SDPA's default); otherwise finite and > 0
  bool causal = false;  // key j is visible to query i iff j <= i (torch's is_causal: top-left)
};

enum class AttentionKernel : uint8_t { Reference, Flash, FlashShortKV, FlashWideHead, FlashHopper };

// A compiled kernel configuration. `id` is stable within one build.
struct AttentionVariant {
  int id = -1;
  AttentionKernel kernel = AttentionKernel::Reference;
  const char* name = "";  // e.g. "flash_f16_d40_m2w4_k64_s2"
};

// "" when p describes a valid call, else one line naming the field and value at fault.
std::string attention_validate(const AttentionParams& p);

// Runs the attention described by p on `stream` with the variant choose_variant picks for p and the
// current device. Returns cudaErrorInvalidValue for invalid parameters (attention_validate says
// why), otherwise the launch's error (cudaSuccess when it was queued).
cudaError_t attention_forward(const AttentionParams& p, cudaStream_t stream);

// ---- for tests and benchmarks -------------------------------------------------------------------
// The variant attention_forward uses for p on the current device.
AttentionVariant attention_chosen_variant(const AttentionParams& p);
// Every compiled variant that can compute p on the current device (Reference always can), the
// chosen one included.
std::vector<AttentionVariant> attention_variants(const AttentionParams& p);
// Runs one variant by id; cudaErrorNotSupported when it cannot compute p on this device.
cudaError_t attention_forward_variant(const AttentionParams& p, int variant_id,
                                      cudaStream_t stream);

}  // namespace sdmpi::cuda
