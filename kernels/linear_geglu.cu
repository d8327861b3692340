// The feed-forward's first product with its GEGLU gate in the epilogue: out = a * GELU(g) where
// [a | g] = x · wᵀ + bias (diffusers' GEGLU: proj, then chunk(2, dim=-1), then a * gelu(g)).
//
// Idea: cuBLASLt's epilogues act on one output element at a time, but the gate pairs column j of
// the product with column c + j. So each block computes both halves of its output columns itself:
// a tile of 128 rows of x against 64 rows of w's first half and the matching 64 rows of its second
// half, on tensor cores (WMMA 16x16x16, float32 accumulation), with a two-stage cp.async pipeline
// over k. The accumulators go through shared memory (a WMMA fragment's element order is opaque),
// where each warp adds the bias, rounds a and g to the storage type (the values the unfused product
// would have stored) and writes a * GELU(g), rounded once as the geglu kernel rounds it. The
// [m, 2c] product never reaches memory: one launch and a third of the traffic of product + gate.
//
// Shapes that are not multiples of the tile are zero-filled at the edges; k not a multiple of 8 (or
// operands not 16-byte aligned) loads element by element instead of with 16-byte copies.
#include <mma.h>

#include <string>

#include "common.cuh"
#include "linear_geglu.cuh"
#include "sdmpi/error.h"

namespace sdmpi::kernels {
namespace {

constexpr int kTileM = 128;      // rows of x per block
constexpr int kTileN = 64;       // output columns per block (128 product columns: 64 of a, 64 of g)
constexpr int kTileK = 32;       // k per pipeline stage
constexpr int kRowPitch = kTileK + 8;  // shared-memory row in elements: 80 bytes, staggers the banks
constexpr int kWarps = 8;        // 4 along m (32 rows each) x 2 along n (32 columns each)
constexpr int kBlockThreads = kWarps * 32;
constexpr int kMaxGridY = 65535;

// One pipeline stage: x's tile [kTileM][kTileK] and w's [2 * kTileN][kTileK] (a's rows, then g's).
template <typename T>
struct Stage {
  T x[kTileM][kRowPitch];
  T w[2 * kTileN][kRowPitch];
};
// The epilogue's per-warp scratch: one 16x16 accumulator of a and one of g, in float.
constexpr int kScratchFloats = 2 * 16 * 16;
template <typename T>
constexpr size_t kSharedBytes = 2 * sizeof(Stage<T>) > kWarps * kScratchFloats * sizeof(float)
                                    ? 2 * sizeof(Stage<T>)
                                    : kWarps * kScratchFloats * sizeof(float);

__device__ __forceinline__ void copy16_async(void* shared, const void* global, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  const int bytes = valid ? 16 : 0;  // 0: nothing is read, the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global), "r"(bytes));
#else
  (void)shared;
  (void)global;
  (void)valid;
#endif
}

__device__ __forceinline__ void commit_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most `pending` committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void wait_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
#endif
}

// Row `r` of the block's weight tile: a's row n0 + r for r < kTileN, else g's row c + n0 + r - kTileN.
__device__ __forceinline__ bool weight_row(int r, int64_t n0, int64_t c, int64_t* row) {
  const int64_t col = n0 + (r < kTileN ? r : r - kTileN);
  *row = r < kTileN ? col : c + col;
  return col < c;
}

// Fills one stage with k columns [k0, k0 + kTileK): 16-byte asynchronous copies when kVector (k a
// multiple of 8, operands 16-byte aligned), element loads otherwise; zeros outside the problem.
template <typename T, bool kVector>
__device__ __forceinline__ void load_stage(Stage<T>& st, const T* x, const T* w, int64_t m0, int64_t n0, int64_t m,
                                           int64_t c, int64_t k, int64_t k0) {
  if constexpr (kVector) {
    constexpr int kChunksPerRow = kTileK / 8;
    for (int chunk = threadIdx.x; chunk < kTileM * kChunksPerRow; chunk += kBlockThreads) {
      const int r = chunk / kChunksPerRow, kc = (chunk % kChunksPerRow) * 8;
      const bool valid = m0 + r < m && k0 + kc < k;
      copy16_async(&st.x[r][kc], valid ? x + (m0 + r) * k + k0 + kc : x, valid);
    }
    for (int chunk = threadIdx.x; chunk < 2 * kTileN * kChunksPerRow; chunk += kBlockThreads) {
      const int r = chunk / kChunksPerRow, kc = (chunk % kChunksPerRow) * 8;
      int64_t row = 0;
      const bool valid = weight_row(r, n0, c, &row) && k0 + kc < k;
      copy16_async(&st.w[r][kc], valid ? w + row * k + k0 + kc : w, valid);
    }
  } else {
    const T zero = from_float<T>(0.0f);
    for (int i = threadIdx.x; i < kTileM * kTileK; i += kBlockThreads) {
      const int r = i / kTileK, kc = i % kTileK;
      st.x[r][kc] = m0 + r < m && k0 + kc < k ? x[(m0 + r) * k + k0 + kc] : zero;
    }
    for (int i = threadIdx.x; i < 2 * kTileN * kTileK; i += kBlockThreads) {
      const int r = i / kTileK, kc = i % kTileK;
      int64_t row = 0;
      st.w[r][kc] = weight_row(r, n0, c, &row) && k0 + kc < k ? w[row * k + k0 + kc] : zero;
    }
  }
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kBlockThreads) linear_geglu_kernel(const T* __restrict__ x, const T* __restrict__ w,
                                                                     const T* __restrict__ bias, T* __restrict__ out,
                                                                     int64_t m, int64_t c, int64_t k) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(128) unsigned char shared[kSharedBytes<T>];
  Stage<T>* stages = reinterpret_cast<Stage<T>*>(shared);
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM, n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / 2, warp_n = warp % 2;  // the warp's 32x32 piece of the block's output

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc_a[2][2], acc_g[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(acc_a[i][j], 0.0f);
      wmma::fill_fragment(acc_g[i][j], 0.0f);
    }

  const int64_t k_tiles = (k + kTileK - 1) / kTileK;
  load_stage<T, kVector>(stages[0], x, w, m0, n0, m, c, k, 0);
  commit_copies();
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    if (kt + 1 < k_tiles) load_stage<T, kVector>(stages[(kt + 1) % 2], x, w, m0, n0, m, c, k, (kt + 1) * kTileK);
    commit_copies();  // possibly empty: keeps "all but the newest group" meaning this stage
    wait_copies<1>();
    __syncthreads();
    const Stage<T>& st = stages[kt % 2];
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> xa[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(xa[i], &st.x[warp_m * 32 + i * 16][kk], kRowPitch);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        // w [n][k] row-major is the product's right operand [k][n] in column-major order.
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> wb;
        wmma::load_matrix_sync(wb, &st.w[warp_n * 32 + j * 16][kk], kRowPitch);
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::mma_sync(acc_a[i][j], xa[i], wb, acc_a[i][j]);
        wmma::load_matrix_sync(wb, &st.w[kTileN + warp_n * 32 + j * 16][kk], kRowPitch);
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::mma_sync(acc_g[i][j], xa[i], wb, acc_g[i][j]);
      }
    }
    __syncthreads();  // the stage is refilled by the next iteration's load
  }
  wait_copies<0>();
  __syncthreads();

  // Epilogue: the stages' memory becomes each warp's scratch for one pair of accumulators at a time.
  float* scratch = reinterpret_cast<float*>(shared) + warp * kScratchFloats;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(scratch, acc_a[i][j], 16, wmma::mem_row_major);
      wmma::store_matrix_sync(scratch + 256, acc_g[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int64_t row = m0 + warp_m * 32 + i * 16 + e / 16;
        const int64_t col = n0 + warp_n * 32 + j * 16 + e % 16;
        if (row < m && col < c) {
          float a = scratch[e], g = scratch[256 + e];
          if (bias) {
            a = __fadd_rn(a, to_float(bias[col]));
            g = __fadd_rn(g, to_float(bias[c + col]));
          }
          a = round_to<T>(a);  // what the product would have stored
          g = round_to<T>(g);
          out[row * c + col] = from_float<T>(a * gelu_erf(g));
        }
      }
      __syncwarp();
    }
#else
  __trap();  // built for an architecture without cp.async and bf16 tensor cores; the host never launches it there
#endif
}

template <typename T>
void launch(cudaStream_t stream, const void* x, const void* w, const void* bias, void* out, int64_t m, int64_t c,
            int64_t k) {
  const dim3 grid(static_cast<unsigned>((m + kTileM - 1) / kTileM), static_cast<unsigned>((c + kTileN - 1) / kTileN));
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool vector = k % 8 == 0 && aligned(x) && aligned(w);
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(w);
  const T* bt = static_cast<const T*>(bias);
  T* ot = static_cast<T*>(out);
  if (vector)
    linear_geglu_kernel<T, true><<<grid, kBlockThreads, 0, stream>>>(xt, wt, bt, ot, m, c, k);
  else
    linear_geglu_kernel<T, false><<<grid, kBlockThreads, 0, stream>>>(xt, wt, bt, ot, m, c, k);
}

}  // namespace

void linear_geglu(cudaStream_t stream, DType t, const void* x, const void* w, const void* bias, void* out, int64_t m,
                  int64_t c, int64_t k) {
  static_assert(kLinearGegluMaxC == int64_t{kMaxGridY} * kTileN, "the header states the grid limit");
  const bool fits = m > 0 && c > 0 && k > 0 && c <= kLinearGegluMaxC && (m + kTileM - 1) / kTileM <= 0x7fffffff;
  if (t == DType::F32 || !fits)
    throw Error("internal: linear_geglu on " + std::string(dtype_name(t)) + " [" + std::to_string(m) + ", " +
                std::to_string(k) + "] x [" + std::to_string(k) + ", " + std::to_string(2 * c) + "]");
  if (t == DType::F16)
    launch<__half>(stream, x, w, bias, out, m, c, k);
  else
    launch<__nv_bfloat16>(stream, x, w, bias, out, m, c, k);
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
