// The CPU backend's kernels on raw float32 pointers. cpu_backend.cpp checks shapes and allocates;
// these only compute. Each takes the OpenMP thread count to use and splits its work by a rule that
// depends on the shapes alone, so results never depend on `threads`. Image tensors are NHWC.
#pragma once

#include <cstdint>

#include "sdmpi/backend.h"

namespace sdmpi::cpu {

// ---- cpu_conv.cpp ---------------------------------------------------------------------------------
// y[b] = x[b] ⊛ w (+ bias) (+ residual), per batch item; w is [Cout, kh, kw, Cin].
// `winograd_w`: the layer's transformed weights when it takes Winograd's path (winograd_plan) and
// the caller keeps them (winograd_transform_weights), else null (transformed per call). `w_packed`:
// w as [Cout, kh·kw·Cin] in gemm_pack_weights' layout when the caller keeps it, for a layer that
// takes the product path where gemm_packs_weights_per_call(B·Ho·Wo, Cout, kh·kw·Cin), else null.
void conv2d_nhwc(const float* x, int64_t B, int64_t H, int64_t W, int64_t Cin, const float* w,
                 int64_t Cout, int64_t kh, int64_t kw, int stride, int pad, const float* bias,
                 const float* residual, float* y, int64_t Ho, int64_t Wo, int threads,
                 const float* winograd_w = nullptr, const float* w_packed = nullptr);
// ---- cpu_winograd.cpp -------------------------------------------------------------------------------
// The tile size m (4: F(4,3), 2: F(2,3)) a convolution of this shape takes Winograd's path with, or
// 0 for the direct one. Depends on the layer's shape and per-item output size only (never on the
// batch) and on SDMPI_CPU_CONV=winograd|direct (default winograd); throws on another value.
int winograd_plan(int64_t Ho, int64_t Wo, int64_t Cin, int64_t Cout, int64_t kh, int64_t kw, int stride);
// "Winograd F(4,3)/F(2,3)" or "direct": the convolution mode, for the device line.
const char* conv_mode_name();
// False under SDMPI_CPU_CONV=direct (no layer takes Winograd's path).
bool winograd_enabled();
// conv2d_nhwc for 3×3 stride-1 weights by Winograd F(m×m, 3×3), m = 2 or 4; `kept_w`, when given,
// is winograd_prepare_weights' result for w in the form winograd_kept_packed names (else the
// weights are transformed on the call).
void conv3x3_winograd_nhwc(int m, const float* x, int64_t B, int64_t H, int64_t W, int64_t Cin, const float* w,
                           int64_t Cout, int pad, const float* bias, const float* residual, float* y, int64_t Ho,
                           int64_t Wo, int threads, const float* kept_w = nullptr);
// One transform of F(m,3) on C channels (Input: Bᵀ d B, (m+2)² → (m+2)² positions; Output: Aᵀ M A,
// (m+2)² → m² positions; Filter: G g Gᵀ, 3×3 taps → (m+2)² positions); element [a][b] of `in` at
// in + a·in_a + b·in_b, [i][j] of `out` at out + i·out_i + j·out_j. What the convolution runs (the
// matrix fixed at compile time), or with `generic` the same sums with the matrix read at run time,
// which a test compares it with.
enum class WinogradTransform { Input, Output, Filter };
void winograd_tile_transform(int m, WinogradTransform kind, bool generic, const float* in, int64_t in_a, int64_t in_b,
                             float* out, int64_t out_i, int64_t out_j, int64_t C);
// Winograd's transformed weights of an OHWI [Cout, 3, 3, Cin] layer: (m+2)²·Cout·Cin floats.
int64_t winograd_weight_floats(int m, int64_t Cout, int64_t Cin);
void winograd_transform_weights(int m, const float* w, int64_t Cout, int64_t Cin, float* U, int threads);
// The form a caller keeps them in for a layer of this shape and batch, which conv3x3_winograd_nhwc
// expects: packed for our GEMM (true), or the plain transform (false: on OpenBLAS, and where the
// products have so few rows that the GEMM reads the weights in place). Same bits either way.
bool winograd_kept_packed(int m, int64_t B, int64_t Ho, int64_t Wo, int64_t Cin, int64_t Cout);
// The transform in that form (winograd_kept_floats floats); packed needs the built-in GEMM.
int64_t winograd_kept_floats(int m, int64_t Cout, int64_t Cin, bool packed);
void winograd_prepare_weights(int m, const float* w, int64_t Cout, int64_t Cin, bool packed, float* dst,
                              int threads);
// y[i] = x[i] · wᵀ (+ bias) (+ residual) for `items` independent [rows, K] blocks; w is [N, K].
// `w_packed` (optional): w in gemm_pack_weights' layout, for products where
// gemm_packs_weights_per_call(items·rows, N, K) (the same bits, without packing w on the call).
void linear_rows(const float* x, int64_t items, int64_t rows, int64_t K, const float* w, int64_t N,
                 const float* bias, const float* residual, float* y, int threads, const float* w_packed = nullptr);
// diffusers' GEGLU after its projection, fused: with h = x · wᵀ + bias ([.., 2C], w [2C, K]),
// y = h[:, :C] · gelu(h[:, C:]) ([.., C]), the bits of linear_rows then geglu_rows. `gate` is
// scratch of items·rows·C floats.
// `w_packed` (optional): w's two halves [C, K] each in gemm_pack_weights' layout, the first half's
// then the second's (KeptWeightCache::gemm_panels with 2 parts).
void linear_geglu_rows(const float* x, int64_t items, int64_t rows, int64_t K, const float* w, int64_t C,
                       const float* bias, float* gate, float* y, int threads, const float* w_packed = nullptr);

// ---- cpu_norm.cpp -----------------------------------------------------------------------------------
void group_norm_nhwc(const float* x, int64_t B, int64_t HW, int64_t C, int64_t groups,
                     const float* gamma, const float* beta, float eps, bool silu, float* y, int threads);
void layer_norm_rows(const float* x, int64_t rows, int64_t C, const float* gamma, const float* beta,
                     float eps, float* y, int threads);

// ---- cpu_attention.cpp ------------------------------------------------------------------------------
// q [B, Nq, heads*d], k and v [B, Nk, heads*d] → out [B, Nq, heads*d].
void attention_mh(const float* q, const float* k, const float* v, int64_t B, int64_t Nq, int64_t Nk,
                  int64_t heads, int64_t d, bool causal, float* out, int threads);

// ---- cpu_elementwise.cpp ----------------------------------------------------------------------------
void activation_inplace(Activation act, const float* x, float* y, int64_t n, int threads);
void geglu_rows(const float* x, float* y, int64_t rows, int64_t C, int threads);
// geglu_rows' two halves on a block of a matrix (row stride ld), single-threaded, for a GEMM's
// epilogue: g = gelu(g + bias) (the gate), then a = (a + bias) · g (the hidden half), each element
// with geglu_rows' bits.
void gelu_bias_block(float* g, int64_t rows, int64_t cols, int64_t ld, const float* bias);
void mul_bias_block(float* a, int64_t rows, int64_t cols, int64_t ld, const float* bias, const float* g, int64_t ldg);
void binary_op(BinaryOp op, const float* a, const float* b, float* y, int64_t n, int threads);
void binary_scalar_op(BinaryOp op, const float* a, float s, bool scalar_first, float* y, int64_t n,
                      int threads);
void add_batch_channel_op(const float* x, const float* t, float* y, int64_t B, int64_t inner,
                          int64_t C, int threads);
void clamp_op(const float* x, float* y, int64_t n, float lo, float hi, int threads);
// PyTorch's mode="nearest" source index for an output size (see cpu_elementwise.cpp).
int64_t nearest_source_index(int64_t dst, int64_t in_size, int64_t out_size);
void upsample_nearest_nhwc(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho,
                           int64_t Wo, float* y, int threads);
// Zero padding: x [B, H, W, C] into y [B, H + top + bottom, W + left + right, C].
void pad2d_nhwc(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t top, int64_t bottom,
                int64_t left, int64_t right, float* y, int threads);
// Copies `rows` rows of a_cols and b_cols floats into rows of a_cols + b_cols.
void concat_rows(const float* a, int64_t a_cols, const float* b, int64_t b_cols, float* y,
                 int64_t rows, int threads);
void copy_floats(const float* x, float* y, int64_t n, int threads);

// Exposed for tests: the vectorised transcendental functions on n floats (single-threaded).
void exp_floats(const float* x, float* y, int64_t n);
void erf_floats(const float* x, float* y, int64_t n);

}  // namespace sdmpi::cpu
