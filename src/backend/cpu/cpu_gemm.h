// Matrix products for the CPU backend: one single-threaded product, and a parallel driver that
// cuts a product into tiles whose sizes depend only on the problem's shape.
//
// Why tiles of a fixed shape: OpenBLAS does not add up an output element in the same order for
// every problem size. Measured with 0.3.21 (Cooperlake kernels): row r of A·Wᵀ computed with M rows
// differs in the last bits from the same row computed with M' rows whenever one of the two calls
// falls under its "small matrix" threshold (e.g. N = 40, K = 40: every M ≤ 30 differs from M = 300)
// and, for N = 1, sporadically (a GEMV path). Thread count (1 vs 2 OpenBLAS threads) and operand
// alignment changed nothing in the shapes tried, but nothing documents that either. So every
// product here is split by a rule that looks at (M, N, K) only, each tile runs as one
// single-threaded call, and threads only decide who computes which tile: the bits then cannot
// depend on the batch or the thread count, whatever OpenBLAS does inside a call. OpenBLAS itself is
// kept at one thread (set_blas_single_threaded) so its pool never competes with the OpenMP threads.
//
// Our own packed, cache-blocked GEMM (AVX-512 12×32 / AVX2 6×16 / portable 4×8 micro-kernels,
// picked at run time by simd_isa(), which SDMPI_CPU_ISA can cap) is the default wherever the CPU
// has AVX-512 or AVX2: its speed does not depend on
// which core type OpenBLAS was built or pinned for (OPENBLAS_CORETYPE=Haswell on AVX-512 machines
// ran our UNet at 0.68× diffusers). It adds each output element up as one FMA chain k = 0 … K-1 whatever
// the tile, so it is batch-invariant on its own, gives the same bits with every micro-kernel, and
// may merge the items of a product into one (the weights are then read once per call). Products of
// at most 256 rows run transposed on AVX-512 and AVX2, W read in place (gemm_small_rows, cpu_gemm.cpp).
// SDMPI_CPU_GEMM=openblas|builtin overrides the choice; CPUs with neither use OpenBLAS if built.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace sdmpi::cpu {

enum class GemmEngine { Builtin, OpenBlas };
// The engine behind gemm() and gemm_nt_parallel(), chosen once (SDMPI_CPU_GEMM, then the CPU).
// Throws sdmpi::Error on an unknown value, or on "openblas" in a build without it.
GemmEngine gemm_engine();

// C[M, N] = alpha * A[M, K] · op(B) + beta * C, all row-major with leading dimensions lda/ldb/ldc.
// op(B) = Bᵀ for B stored [N, K] when b_transposed, else B stored [K, N]. beta == 0 ignores C's
// old contents (NaN-safe). Single-threaded.
void gemm(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// gemm() on a given engine (OpenBlas falls back to ours in a build without it).
void gemm_on(GemmEngine engine, bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
             int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Our own implementation of gemm(), always compiled (tests compare it with the naive product).
void gemm_builtin(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// One tile of a parallel product: rows [m0, m0 + mn) and columns [n0, n0 + nn) of item `item`.
struct GemmTile {
  int64_t item, m0, mn, n0, nn;
};

// The tile grid for an M×N×K product (a pure function of the shape).
struct TileGrid {
  int64_t mc, nc;  // tile size (the last tile in each direction may be smaller)
  int64_t mt, nt;  // tile counts
};
TileGrid gemm_tile_grid(int64_t M, int64_t N, int64_t K);        // OpenBLAS tiles (per item)
// Built-in tiles for `products` products of M×N×K each (products with their own W).
TileGrid builtin_tile_grid(int64_t M, int64_t N, int64_t K, int64_t products = 1);

// For each of `items` independent products C_i[M, N] = A_i[M, K] · W_iᵀ (W_i stored [N, K]; one
// W for all items when w_item_stride is 0): runs the tiles over `threads` OpenMP threads.
// `gather_a` (optional) writes rows [m0, m0 + rows) × columns [k0, k0 + kc) of item `item`'s A
// row-major (row stride kc) into dst, for A that is not in memory (im2col). `epilogue` (optional)
// runs on each finished piece of a tile (bias, residual) while it is still in cache; a piece never
// spans two items.
struct GemmProblem {
  int64_t items = 1, M = 0, N = 0, K = 0;
  const float* A = nullptr;  // used when gather_a is empty
  int64_t lda = 0, a_item_stride = 0;
  const float* W = nullptr;  // [N, K], row stride K
  int64_t w_item_stride = 0;
  float* C = nullptr;
  int64_t ldc = 0, c_item_stride = 0;
  std::function<void(int64_t item, int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst)> gather_a;
  std::function<void(const GemmTile&, float* c_tile)> epilogue;
  // W as gemm_pack_weights wrote it (item i's at W_packed + i · gemm_packed_floats(N, K) when
  // w_item_stride is not 0), for weights packed once and kept; W is then not read. Built-in
  // engine only (gemm_engine()); 64-byte aligned (the micro-kernels' aligned panel loads).
  const float* W_packed = nullptr;
};
void gemm_nt_parallel(const GemmProblem& p, int threads);

// The transposed micro-kernel of the instruction set in use (AVX-512 12×32, AVX2 6×16, portable
// 4×8): ct[i][m] (row stride ldt) = (accumulate ? ct[i][m] : 0) + Σ_k w[i·ldw + k] · a[k·panel + m]
// for i < group, m < panel, one FMA chain k = 0 … kc-1 per output, so every kernel gives the same
// bits. `a` is 64-byte aligned (panels of Aᵀ, or of any k-major operand); w is read in place. Used
// by products of few rows (gemm_nt_parallel) and by the attention (cpu_attention.cpp).
using TransposedKernelFn = void (*)(int64_t kc, const float* w, int64_t ldw, const float* a, float* ct, int64_t ldt,
                                    bool accumulate);
struct TransposedKernel {
  int64_t group, panel;  // rows of w per call, columns of the k-major operand a
  TransposedKernelFn fn;
  int64_t narrow_group;   // a second kernel with fewer rows of w (AVX-512: 8), for sizes 12 would pad
  TransposedKernelFn narrow_fn;
  // `fn` for w streamed from memory (the few-rows products' weights): while it computes, it also
  // prefetches into L2 the rows the next call will read, `next` (`group` rows of row stride
  // next_ld, kc floats each; null: none). AVX-512 and AVX2; the portable one only computes. Same
  // bits as fn.
  using StreamingFn = void (*)(int64_t kc, const float* w, int64_t ldw, const float* a, float* ct, int64_t ldt,
                               bool accumulate, const float* next, int64_t next_ld);
  StreamingFn streaming_fn;
};
const TransposedKernel& transposed_kernel();

// dst[j·ldd + i] = src[i·lds + j] for i < rows, j < cols: a transposing copy, in 16×16 register
// transposes with masked edges on AVX-512 (the few-rows products' Cᵀ back into C, where a scalar
// strided copy had cost 15-20% of those products, session 10; the attention's Vᵀ and Qᵀ panels).
void transpose_copy(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd);

// Whether gemm_nt_parallel computes a product of `rows` rows (per W) by N columns transposed, reading
// a plain W in place: then packing W in advance (W_packed) would only make it take the packed path,
// which is slower there (gemm_small_rows, cpu_gemm.cpp). The same bits either way.
bool gemm_reads_weights_in_place(int64_t rows, int64_t N, int64_t K);

// Whether gemm_nt_parallel, for a product of `rows` (merged) rows, N columns and depth K with a
// plain W, packs all of W into panels on the call: then W packed in advance (W_packed, e.g. kept by
// the backend, cpu_memory.h) spares it that pass and gives the same bits. False where it reads W in
// place (few rows, N ≤ 4) or OpenBLAS is the engine.
bool gemm_packs_weights_per_call(int64_t rows, int64_t N, int64_t K);

// The built-in driver's panel layout of a weight W [N, K] (what it would pack on every call); dst
// 64-byte aligned.
int64_t gemm_packed_floats(int64_t N, int64_t K);
void gemm_pack_weights(const float* W, int64_t N, int64_t K, float* dst);
// The same layout one panel at a time, for callers that make W in pieces: panels hold
// gemm_pack_rows(N) rows of W each, and panel p (rows p·r … p·r+r-1, r = gemm_pack_rows(N)) is
// written from its `rows` ≤ r rows (row stride K, zeros past them) to dst + p·r·K.
int64_t gemm_pack_rows(int64_t N);
void gemm_pack_weight_panel(const float* panel_rows, int64_t rows, int64_t N, int64_t K, float* panel_dst);

// Keeps OpenBLAS on one thread (see above). Idempotent; a no-op without OpenBLAS.
void set_blas_single_threaded();

// "built-in GEMM (AVX-512 12x32/24x16)" or "OpenBLAS 0.3.21 (Cooperlake)".
std::string gemm_library_name();
// "0.3.21 (Cooperlake)" for the OpenBLAS linked in, "(not built)" without.
std::string blas_name();

}  // namespace sdmpi::cpu
