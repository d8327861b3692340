// 3×3 stride-1 convolutions by Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray's form):
// each m×m block of outputs ("tile") is computed from its (m+2)×(m+2) input patch d as
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A,
// summed over input channels. With channels last, the element-wise product summed over channels
// is, for each of the (m+2)² positions ξ, one matrix product V_ξ[tiles, Cin] · U_ξ[Cout, Cin]ᵀ: the
// (m+2)² products go through the GEMM driver (cpu_gemm.h) as one batched call. F(4,3) needs 36
// multiplies per 16 outputs where the direct convolution needs 144 (F(2,3): 16 per 4 against 36).
//
// Data flow per block of tiles: input transform (patch → V, per tile, vectorised across
// channels) → 36 (16) GEMMs → output transform (M → Y, + bias, + residual, in torch's order). The
// weights' transform U = G g Gᵀ is 4× (F(4,3)) or 16/9 (F(2,3)) of the weights: the backend keeps
// it per layer while its memory budget allows (KeptWeightCache, cpu_memory.h), already packed
// for the GEMM, and passes it in; otherwise it is computed here on every call and packed by the
// GEMM (together 20-35% of the layer's time on the 8×8-32×32 maps, where few tiles share each
// transformed weight). Kept or not, U has the same bits.
//
// Invariance: every tile is transformed alone, the GEMM adds up each output as one FMA chain
// (its tiles and item merges change no bits; with OpenBLAS the blocks stay inside an item), and
// the blocks of tiles depend on the shape only. Whether a layer takes this path depends on its shape and the per-item output size only
// (winograd_plan), never on the batch, so an item gets the same bits alone or in any batch.
//
// Accuracy: the transforms of F(4,3) have coefficients up to 8 and 1/24, so its results differ
// from the direct convolution by more than F(2,3)'s; tests/unit/cpu_winograd_test.cpp bounds both
// against a double-precision reference, and the rule in winograd_plan() keeps the goldens.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_memory.h"
#include "backend/cpu/cpu_simd.h"
#include "sdmpi/error.h"

namespace sdmpi::cpu {

namespace {

struct WinogradMatrices {
  int m, alpha;        // output tile m×m, input patch alpha×alpha (alpha = m + 2)
  const float* BT;     // alpha × alpha
  const float* G;      // alpha × 3
  const float* AT;     // m × alpha
};

// F(2,3): interpolation points 0, 1, -1, ∞.
constexpr float kBT2[] = {1, 0, -1, 0,  //
                          0, 1, 1, 0,   //
                          0, -1, 1, 0,  //
                          0, 1, 0, -1};
constexpr float kG2[] = {1, 0, 0,           //
                         0.5f, 0.5f, 0.5f,  //
                         0.5f, -0.5f, 0.5f, //
                         0, 0, 1};
constexpr float kAT2[] = {1, 1, 1, 0,  //
                          0, 1, -1, -1};

// F(4,3): points 0, 1, -1, 2, -2, ∞.
constexpr float kBT4[] = {4, 0, -5, 0, 1, 0,    //
                          0, -4, -4, 1, 1, 0,   //
                          0, 4, -4, -1, 1, 0,   //
                          0, -2, -1, 2, 1, 0,   //
                          0, 2, -1, -2, 1, 0,   //
                          0, 4, 0, -5, 0, 1};
constexpr float kG4[] = {1.0f / 4, 0, 0,                          //
                         -1.0f / 6, -1.0f / 6, -1.0f / 6,         //
                         -1.0f / 6, 1.0f / 6, -1.0f / 6,          //
                         1.0f / 24, 1.0f / 12, 1.0f / 6,          //
                         1.0f / 24, -1.0f / 12, 1.0f / 6,         //
                         0, 0, 1};
constexpr float kAT4[] = {1, 1, 1, 1, 1, 0,    //
                          0, 1, -1, 2, -2, 0,  //
                          0, 1, 1, 4, 4, 0,    //
                          0, 1, -1, 8, -8, 1};

const WinogradMatrices& matrices(int m) {
  static const WinogradMatrices f2{2, 4, kBT2, kG2, kAT2}, f4{4, 6, kBT4, kG4, kAT4};
  return m == 2 ? f2 : f4;
}

// The first `lanes` floats at src as a vector (the rest zero), and the first `lanes` lanes of v to
// dst: a transform's channel tail.
template <int W> SDMPI_SIMD_INLINE typename Vec<W>::f load_lanes(const float* src, int64_t lanes) {
  if (lanes == W) return vload<W>(src);
  float tmp[W] = {};
  std::memcpy(tmp, src, static_cast<size_t>(lanes) * sizeof(float));
  return vload<W>(tmp);
}

template <int W> SDMPI_SIMD_INLINE void store_lanes(float* dst, typename Vec<W>::f v, int64_t lanes) {
  if (lanes == W) {
    vstore<W>(dst, v);
    return;
  }
  float tmp[W];
  vstore<W>(tmp, v);
  std::memcpy(dst, tmp, static_cast<size_t>(lanes) * sizeof(float));
}

// out[i][j][c] = Σ_a Σ_b L[i][a] · in[a][b][c] · R[j][b] for i, j < n_out and a, b < n_in (≤ 6), on
// C channels; in[a][b] starts at in + a·in_a + b·in_b, out[i][j] at out + i·out_i + j·out_j. Zero
// coefficients are skipped; the sums run in a fixed order (a, then b).
struct TwoSidedTransform {
  template <int W>
  SDMPI_SIMD_INLINE static void run(const float* L, const float* R, int n_out, int n_in, const float* in, int64_t in_a,
                                    int64_t in_b, float* out, int64_t out_i, int64_t out_j, int64_t C) {
    using F = typename Vec<W>::f;
    for (int64_t c = 0; c < C; c += W) {
      const int64_t lanes = std::min<int64_t>(W, C - c);
      F x[6][6], t[6][6];
      for (int a = 0; a < n_in; ++a)
        for (int b = 0; b < n_in; ++b) x[a][b] = load_lanes<W>(in + a * in_a + b * in_b + c, lanes);
      for (int i = 0; i < n_out; ++i)
        for (int b = 0; b < n_in; ++b) {
          F acc = vsplat<W>(0.0f);
          for (int a = 0; a < n_in; ++a) {
            const float l = L[i * n_in + a];
            if (l != 0.0f) acc = acc + l * x[a][b];
          }
          t[i][b] = acc;
        }
      for (int i = 0; i < n_out; ++i)
        for (int j = 0; j < n_out; ++j) {
          F acc = vsplat<W>(0.0f);
          for (int b = 0; b < n_in; ++b) {
            const float r = R[j * n_in + b];
            if (r != 0.0f) acc = acc + t[i][b] * r;
          }
          store_lanes<W>(out + i * out_i + j * out_j + c, acc, lanes);
        }
    }
  }
};

void two_sided(const float* L, const float* R, int n_out, int n_in, const float* in, int64_t in_a, int64_t in_b,
               float* out, int64_t out_i, int64_t out_j, int64_t C) {
  simd_dispatch<TwoSidedTransform>(L, R, n_out, n_in, in, in_a, in_b, out, out_i, out_j, C);
}

// TwoSidedTransform with L = R = T known at compile time, for the per-tile transforms (Bᵀ d B and
// Aᵀ M A): the loops unroll, zero coefficients drop out and the multiplies by ±1 become exact
// copies, and the first stage runs one column of the patch at a time (fewer live vectors). Every
// output is the same expression in the same order as TwoSidedTransform's, so the bits are its bits
// (CpuWinograd.FixedTransformsGiveTheGenericBits); it ran the input and output transforms of the
// VAE's 128-channel layers at 256² about 2.5× faster.
template <int NOut, int NIn, const float* T>
struct FixedTwoSided {
  template <int W>
  SDMPI_SIMD_INLINE static void run(const float* in, int64_t in_a, int64_t in_b, float* out, int64_t out_i,
                                    int64_t out_j, int64_t C) {
    using F = typename Vec<W>::f;
    for (int64_t c = 0; c < C; c += W) {
      const int64_t lanes = std::min<int64_t>(W, C - c);
      F t[NOut][NIn];
#pragma GCC unroll 6
      for (int b = 0; b < NIn; ++b) {
        F x[NIn];
#pragma GCC unroll 6
        for (int a = 0; a < NIn; ++a) x[a] = load_lanes<W>(in + a * in_a + b * in_b + c, lanes);
#pragma GCC unroll 6
        for (int i = 0; i < NOut; ++i) {
          F acc = vsplat<W>(0.0f);
#pragma GCC unroll 6
          for (int a = 0; a < NIn; ++a) {
            const float l = T[i * NIn + a];
            if (l != 0.0f) acc = acc + l * x[a];
          }
          t[i][b] = acc;
        }
      }
#pragma GCC unroll 6
      for (int i = 0; i < NOut; ++i)
#pragma GCC unroll 6
        for (int j = 0; j < NOut; ++j) {
          F acc = vsplat<W>(0.0f);
#pragma GCC unroll 6
          for (int b = 0; b < NIn; ++b) {
            const float r = T[j * NIn + b];
            if (r != 0.0f) acc = acc + t[i][b] * r;
          }
          store_lanes<W>(out + i * out_i + j * out_j + c, acc, lanes);
        }
    }
  }
};

// Bᵀ d B (input patch → V) and Aᵀ M A (M → output tile) for F(m,3), on C channels.
void input_transform(int m, const float* in, int64_t in_a, int64_t in_b, float* out, int64_t out_i, int64_t out_j,
                     int64_t C) {
  if (m == 2) simd_dispatch<FixedTwoSided<4, 4, kBT2>>(in, in_a, in_b, out, out_i, out_j, C);
  else simd_dispatch<FixedTwoSided<6, 6, kBT4>>(in, in_a, in_b, out, out_i, out_j, C);
}

void output_transform(int m, const float* in, int64_t in_a, int64_t in_b, float* out, int64_t out_i, int64_t out_j,
                      int64_t C) {
  if (m == 2) simd_dispatch<FixedTwoSided<2, 4, kAT2>>(in, in_a, in_b, out, out_i, out_j, C);
  else simd_dispatch<FixedTwoSided<4, 6, kAT4>>(in, in_a, in_b, out, out_i, out_j, C);
}

// G g Gᵀ (3×3 filter → U) for F(m,3), on C lanes, with G fixed at compile time like the tile
// transforms (the same bits as two_sided with G; CpuWinograd.FixedTransformsGiveTheGenericBits).
// winograd_prepare_weights runs it once over a whole panel of (input, output channel) lanes.
void filter_transform(int m, const float* in, int64_t in_a, int64_t in_b, float* out, int64_t out_i, int64_t out_j,
                      int64_t C) {
  if (m == 2) simd_dispatch<FixedTwoSided<4, 3, kG2>>(in, in_a, in_b, out, out_i, out_j, C);
  else simd_dispatch<FixedTwoSided<6, 3, kG4>>(in, in_a, in_b, out, out_i, out_j, C);
}


// SDMPI_CPU_CONV: auto (default: the speed rule below), winograd (every 3×3 stride-1 layer, for
// A/B runs and accuracy checks), direct (never).
enum class ConvMode { Auto, Winograd, Direct };

ConvMode conv_mode() {
  static const ConvMode mode = [] {
    const char* env = std::getenv("SDMPI_CPU_CONV");
    const std::string v = env ? env : "";
    if (v.empty() || v == "auto") return ConvMode::Auto;
    if (v == "winograd") return ConvMode::Winograd;
    if (v == "direct") return ConvMode::Direct;
    throw InputError("SDMPI_CPU_CONV=" + v + ": expected 'auto', 'winograd' or 'direct'");
  }();
  return mode;
}

}  // namespace

bool winograd_enabled() { return conv_mode() != ConvMode::Direct; }

const char* conv_mode_name() {
  switch (conv_mode()) {
    case ConvMode::Auto: return "Winograd F(4,3)/F(2,3) where faster";
    case ConvMode::Winograd: return "Winograd F(4,3) on every 3x3";
    case ConvMode::Direct: break;
  }
  return "direct convolutions";
}

int winograd_plan(int64_t Ho, int64_t Wo, int64_t Cin, int64_t Cout, int64_t kh, int64_t kw, int stride) {
  if (conv_mode() == ConvMode::Direct || kh != 3 || kw != 3 || stride != 1) return 0;
  if (conv_mode() == ConvMode::Winograd) return 4;
  // Few channels: the transforms cost as much as the products they save (conv_in, conv_out).
  if (Cin < 32 || Cout < 32) return 0;
  // Per item, never per batch (the path changes the bits), and never on whether the backend keeps
  // the transformed weights (the same image on a machine with less memory). F(4,3) from 16×16
  // outputs up (16 tiles an item); F(2,3), whose transformed weights are 16/9 of the weights
  // instead of 4×, from 8×8. cpu_ops_bench, 2 threads, CFG batch 2, kept weights: at 16×16 F(4,3)
  // against F(2,3) 6.6-7.5 against 10.2-12.1 ms (640 channels) and 22-24 against 37-40 ms (1280,
  // SD 1.5's at 512²), its 32-row products reading the weights in place; at 8×8 (1280 channels)
  // F(4,3) took 38-42 ms (8 rows against 236 MB of weights), F(2,3) 17-19, direct 26; at 4×4,
  // where the 105 MB of F(2,3)'s weights are read for 32 tiles, direct 9 ms against 10.5, so
  // smaller maps stay direct.
  if (Ho * Wo >= 16 * 16) return 4;
  if (Ho * Wo >= 8 * 8) return 2;
  return 0;
}

int64_t winograd_weight_floats(int m, int64_t Cout, int64_t Cin) {
  const int64_t alpha = m + 2;
  return alpha * alpha * Cout * Cin;
}

void winograd_transform_weights(int m, const float* w, int64_t Cout, int64_t Cin, float* U, int threads) {
  // U[ξ][cout][cin] = (G g Gᵀ)[ξ] for each (cout, cin); g is OHWI. Each output channel alone.
  const int64_t alpha = m + 2, position_stride = Cout * Cin;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && Cout > 1)
  for (int64_t o = 0; o < Cout; ++o)
    filter_transform(m, w + o * 9 * Cin, 3 * Cin, Cin, U + o * Cin, alpha * position_stride, position_stride, Cin);
}

namespace {

// Tiles in blocks of a size set by the channel counts only (V and M of a block ≈ 16 MB at most).
int64_t tile_block(int m, int64_t Cin, int64_t Cout) {
  const int64_t positions = (m + 2) * (m + 2), per_tile_floats = positions * std::max(Cin, Cout);
  return std::clamp<int64_t>((int64_t{4} << 20) / per_tile_floats, 64, 1024);
}

}  // namespace

// Kept weights are in the form the GEMM reads fastest: packed panels per position (our driver then
// packs nothing per call), except for products of at most 64 rows, which the driver reads in place
// (gemm_reads_weights_in_place) faster than packed: cpu_ops_bench, one thread, CFG batch 2, kept
// weights, 1280 channels at 8×8 (32 tiles) 18.6 ms against 21.5 packed; at 128 tiles packed was
// as fast or faster (640 channels at 16×16: 19.4 against 19.6; 320 at 32×32: 13.7 against 14.6).
// OpenBLAS reads the plain transform.
bool winograd_kept_packed(int m, int64_t B, int64_t Ho, int64_t Wo, int64_t Cin, int64_t Cout) {
  if (gemm_engine() != GemmEngine::Builtin) return false;
  constexpr int64_t kInPlaceRows = 64;
  const int64_t rows = std::min(tile_block(m, Cin, Cout), B * ((Ho + m - 1) / m) * ((Wo + m - 1) / m));
  return !(rows <= kInPlaceRows && gemm_reads_weights_in_place(rows, Cout, Cin));
}

int64_t winograd_kept_floats(int m, int64_t Cout, int64_t Cin, bool packed) {
  const int64_t positions = (m + 2) * (m + 2);
  return packed ? positions * gemm_packed_floats(Cout, Cin) : winograd_weight_floats(m, Cout, Cin);
}

void winograd_prepare_weights(int m, const float* w, int64_t Cout, int64_t Cin, bool packed, float* dst,
                              int threads) {
  if (!packed) {
    winograd_transform_weights(m, w, Cout, Cin, dst, threads);
    return;
  }
  if (gemm_engine() != GemmEngine::Builtin) throw Error("winograd_prepare_weights: packed weights need the built-in GEMM");
  // One panel of r output channels at a time, packed first: the panel's filters (r rows of 3·3·Cin
  // floats, OHWI) go through the GEMM's own packing into [tap][cin][j] (j < r, the panel's channels
  // fastest), then one transform runs over all Cin·r (cin, j) lanes and writes each position's
  // packed panel [cin][j] directly: the packed form is lane-for-lane the transform-then-pack one
  // (the same arithmetic on each lane; CpuWinogradCache.PackedFormEqualsTransformThenPack). The
  // panel's filters (1.5 MB at 1280 channels) stay in cache, and the kept copy is written once, in
  // order. Transforming per channel and packing each position after (a second pass over 4× or
  // 16/9 of the weights) took 1.6× as long warm: 1280 channels under F(2,3), one thread, 37-39 ms
  // against 22-24 (the whole 105 MB, Emerald Rapids VM).
  const WinogradMatrices& wm = matrices(m);
  const int64_t packed_floats = gemm_packed_floats(Cout, Cin);
  const int64_t r = gemm_pack_rows(Cout), panels = (Cout + r - 1) / r;
#pragma omp parallel num_threads(threads) if (threads > 1 && panels > 1)
  {
    thread_local FloatScratch taps_buf;  // kept by each thread: a fresh one was faulted in every time
    float* taps = taps_buf.get(static_cast<size_t>(9 * Cin * r));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t o0 = p * r, n = std::min(r, Cout - o0);
      gemm_pack_weight_panel(w + o0 * 9 * Cin, n, Cout, 9 * Cin, taps);  // taps[(tap·Cin + cin)·r + j]
      filter_transform(m, taps, 3 * Cin * r, Cin * r, dst + p * r * Cin, wm.alpha * packed_floats, packed_floats,
                       Cin * r);
    }
  }
}

void conv3x3_winograd_nhwc(int m, const float* x, int64_t B, int64_t H, int64_t W, int64_t Cin, const float* w,
                           int64_t Cout, int pad, const float* bias, const float* residual, float* y, int64_t Ho,
                           int64_t Wo, int threads, const float* kept_w) {
  const WinogradMatrices& wm = matrices(m);
  const int alpha = wm.alpha, positions = alpha * alpha;
  const int64_t th = (Ho + m - 1) / m, tw = (Wo + m - 1) / m, tiles_per_item = th * tw, T = B * tiles_per_item;
  if (T == 0 || Cout == 0) return;

  // Scratch kept by the calling thread between calls: fresh buffers of this size would be
  // faulted in and zeroed by the kernel on every call (measured: as much time as the GEMMs).
  thread_local FloatScratch u_buf, v_buf, m_buf;
  const bool prepacked = kept_w && winograd_kept_packed(m, B, Ho, Wo, Cin, Cout);
  const float* U = kept_w;
  if (!U) {
    float* u = u_buf.get(static_cast<size_t>(winograd_weight_floats(m, Cout, Cin)));
    winograd_transform_weights(m, w, Cout, Cin, u, threads);
    U = u;
  }

  const int64_t block = tile_block(m, Cin, Cout);
  float* V = v_buf.get(static_cast<size_t>(positions * std::min(block, T) * Cin));
  float* Mx = m_buf.get(static_cast<size_t>(positions * std::min(block, T) * Cout));

  // Our GEMM adds up every row alone, so blocks may span items; OpenBLAS's rows depend on the
  // number of rows in a call (cpu_gemm.h), so with it the blocks stay inside one item.
  const int64_t span = gemm_engine() == GemmEngine::Builtin ? T : tiles_per_item;
  for (int64_t t0 = 0; t0 < T;) {
    const int64_t span_end = (t0 / span + 1) * span, tn = std::min(block, span_end - t0);
    // Input transform: V[ξ][t][cin] = (Bᵀ d B)[ξ], d the zero-padded alpha×alpha patch of tile t.
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tn > 1)
    for (int64_t i = 0; i < tn; ++i) {
      const int64_t t = t0 + i, b = t / tiles_per_item, r = t % tiles_per_item;
      const int64_t iy0 = (r / tw) * m - pad, ix0 = (r % tw) * m - pad;
      const float* xb = x + b * H * W * Cin;
      const float* src;
      int64_t src_a, src_b;
      thread_local FloatScratch patch;
      if (iy0 >= 0 && ix0 >= 0 && iy0 + alpha <= H && ix0 + alpha <= W) {
        src = xb + (iy0 * W + ix0) * Cin;
        src_a = W * Cin;
        src_b = Cin;
      } else {  // a border tile: copy the patch with its zeros
        float* d = patch.get(static_cast<size_t>(positions * Cin));
        for (int a = 0; a < alpha; ++a)
          for (int c = 0; c < alpha; ++c) {
            const int64_t iy = iy0 + a, ix = ix0 + c;
            float* dst = d + (a * alpha + c) * Cin;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) std::memset(dst, 0, static_cast<size_t>(Cin) * sizeof(float));
            else std::memcpy(dst, xb + (iy * W + ix) * Cin, static_cast<size_t>(Cin) * sizeof(float));
          }
        src = d;
        src_a = alpha * Cin;
        src_b = Cin;
      }
      input_transform(m, src, src_a, src_b, V + i * Cin, alpha * tn * Cin, tn * Cin, Cin);
    }

    // The element-wise products summed over channels: positions² GEMMs M_ξ = V_ξ · U_ξᵀ.
    gemm_nt_parallel(GemmProblem{.items = positions, .M = tn, .N = Cout, .K = Cin, .A = V, .lda = Cin,
                                 .a_item_stride = tn * Cin, .W = prepacked ? nullptr : U,
                                 .w_item_stride = Cout * Cin, .C = Mx, .ldc = Cout, .c_item_stride = tn * Cout,
                                 .gather_a = {}, .epilogue = {}, .W_packed = prepacked ? U : nullptr},
                     threads);

    // Output transform: Y = Aᵀ M A per tile, then (+ bias) (+ residual) on the outputs inside the image.
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tn > 1)
    for (int64_t i = 0; i < tn; ++i) {
      const int64_t t = t0 + i, b = t / tiles_per_item, r = t % tiles_per_item;
      const int64_t oy0 = (r / tw) * m, ox0 = (r % tw) * m;
      const int64_t rows = std::min<int64_t>(m, Ho - oy0), cols = std::min<int64_t>(m, Wo - ox0);
      float* yb = y + b * Ho * Wo * Cout;
      thread_local FloatScratch out_tile;
      float* o = out_tile.get(static_cast<size_t>(m * m * Cout));
      output_transform(m, Mx + i * Cout, alpha * tn * Cout, tn * Cout, o, m * Cout, Cout, Cout);
      for (int64_t a = 0; a < rows; ++a)
        for (int64_t c = 0; c < cols; ++c) {
          const float* src = o + (a * m + c) * Cout;
          const int64_t pixel = (oy0 + a) * Wo + ox0 + c;
          float* dst = yb + pixel * Cout;
          const float* res = residual ? residual + b * Ho * Wo * Cout + pixel * Cout : nullptr;
          for (int64_t k = 0; k < Cout; ++k) {
            float v = src[k];
            if (bias) v = v + bias[k];
            if (res) v = v + res[k];
            dst[k] = v;
          }
        }
    }
    t0 += tn;
  }
}

void winograd_tile_transform(int m, WinogradTransform kind, bool generic, const float* in, int64_t in_a, int64_t in_b,
                             float* out, int64_t out_i, int64_t out_j, int64_t C) {
  const WinogradMatrices& wm = matrices(m);
  switch (kind) {
    case WinogradTransform::Input:
      if (generic) two_sided(wm.BT, wm.BT, wm.alpha, wm.alpha, in, in_a, in_b, out, out_i, out_j, C);
      else input_transform(m, in, in_a, in_b, out, out_i, out_j, C);
      return;
    case WinogradTransform::Output:
      if (generic) two_sided(wm.AT, wm.AT, m, wm.alpha, in, in_a, in_b, out, out_i, out_j, C);
      else output_transform(m, in, in_a, in_b, out, out_i, out_j, C);
      return;
    case WinogradTransform::Filter:
      if (generic) two_sided(wm.G, wm.G, wm.alpha, 3, in, in_a, in_b, out, out_i, out_j, C);
      else filter_transform(m, in, in_a, in_b, out, out_i, out_j, C);
      return;
  }
}

}  // namespace sdmpi::cpu
