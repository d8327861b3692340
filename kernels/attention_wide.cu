// Flash attention for wide heads (head dim 512: the VAE mid-block's single head over 4096 tokens).
//
// Idea. A 16×512 fp32 output tile is 256 registers per lane, too many for one warp, so the head
// dim is split: a block has RG row groups of 16 query rows and CS = 4 warps per row group; warp
// (rg, cs) owns output columns [cs·D/4, (cs+1)·D/4) of its 16 rows (64 fp32 registers per lane).
// Per tile of BK keys:
//   1. each warp computes a partial S = q·kᵀ over its quarter of the channels (16 × BK, mma.sync
//      m16n8k16) and stores it to shared memory;
//   2. each warp sums the 4 partials of its rows (in a fixed order, so the 4 warps of a row group
//      see bit-identical scores and agree on max and sum), runs the online softmax in fp32 and
//      packs P into A fragments;
//   3. O[:, quarter] += P·V[:, quarter].
// K and V have separate buffers and commit groups, so V's load overlaps steps 1-2 and the next
// K's load overlaps steps 2-3. Everything else (masking, exp2 with log2(e) folded into the scale,
// zero-filled padding rows, odd-chunk row strides against bank conflicts, the epilogue through
// shared memory) is as in attention_flash.cu.

#include "attention_detail.cuh"

namespace sdmpi::cuda::detail {
namespace {

template <typename T, int D_, int RG_, int BK_>
struct WideConfig {
  using Elem = T;
  static constexpr int D = D_;
  static constexpr int RG = RG_;  // row groups of 16 query rows
  static constexpr int CS = 4;    // warps per row group, each owning D/CS output columns
  static constexpr int BK = BK_;
  static constexpr int WARPS = RG * CS;
  static constexpr int THREADS = WARPS * 32;
  static constexpr int BQ = 16 * RG;
  static constexpr int DW = D / CS;      // output columns per warp
  static constexpr int DW16 = DW / 16;   // k16 steps of a partial q·kᵀ
  static constexpr int DWN8 = DW / 8;    // n8 tiles of a warp's O
  static constexpr int KN8 = BK / 8;
  static constexpr int KK16 = BK / 16;
  static constexpr int LDS = smem_row_stride(D);
  static constexpr int CHUNKS = D / 8;
  static constexpr int SLD = BK + 8;     // fp32 row stride of the partial scores
  static constexpr size_t SMEM_Q = size_t{BQ} * LDS * sizeof(T);
  static constexpr size_t SMEM_TILE = size_t{BK} * LDS * sizeof(T);
  static constexpr size_t SMEM_S = size_t{CS} * BQ * SLD * sizeof(float);
  static constexpr size_t SMEM = SMEM_Q + 2 * SMEM_TILE + SMEM_S;
  static_assert(DW % 16 == 0 && BK % 16 == 0, "tile shape");
};

template <class C>
__global__ void __launch_bounds__(C::THREADS, 1) wide_attention_kernel(const LaunchArgs a) {
  using T = typename C::Elem;
  extern __shared__ __align__(16) unsigned char wide_smem[];
  T* const sQ = reinterpret_cast<T*>(wide_smem);
  T* const sK = sQ + C::BQ * C::LDS;
  T* const sV = sK + C::BK * C::LDS;
  float* const sS = reinterpret_cast<float*>(sV + C::BK * C::LDS);  // [CS][BQ][SLD]

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;
  const int t = lane & 3;
  const int rg = warp / C::CS;
  const int cs = warp % C::CS;
  const int row0 = rg * 16;     // this warp's first row within the block
  const int col0 = cs * C::DW;  // its first channel (partial scores) and output column
  const int q0 = blockIdx.x * C::BQ;
  const int head = blockIdx.y;
  const int b = blockIdx.z;

  const T* gQ = static_cast<const T*>(a.q) + b * a.q_batch + q0 * a.q_row + head * C::D;
  const T* gK = static_cast<const T*>(a.k) + b * a.k_batch + head * C::D;
  const T* gV = static_cast<const T*>(a.v) + b * a.v_batch + head * C::D;
  const int q_rows = min(C::BQ, a.seq_q - q0);
  const int kv_end = a.causal ? min(a.seq_kv, q0 + q_rows) : a.seq_kv;
  const int n_tiles = (kv_end + C::BK - 1) / C::BK;

  auto load_k = [&](int tile) {
    const int k0 = tile * C::BK;
    copy_rows_async<C::BK, C::CHUNKS, C::LDS, C::THREADS>(sK, gK + k0 * a.k_row, a.k_row,
                                                          min(C::BK, a.seq_kv - k0), tid);
  };
  auto load_v = [&](int tile) {
    const int k0 = tile * C::BK;
    copy_rows_async<C::BK, C::CHUNKS, C::LDS, C::THREADS>(sV, gV + k0 * a.v_row, a.v_row,
                                                          min(C::BK, a.seq_kv - k0), tid);
  };
  // Commit groups, oldest first: {q, K0}, {V0}, then per tile j: {K(j+1)}, {V(j+1)}.
  copy_rows_async<C::BQ, C::CHUNKS, C::LDS, C::THREADS>(sQ, gQ, a.q_row, q_rows, tid);
  load_k(0);
  cp_async_commit();
  load_v(0);
  cp_async_commit();

  const int ld_row16 = (lane & 7) + (((lane >> 3) & 1) << 3);
  const int ld_col8 = (lane >> 4) << 3;
  const int kb_row16 = (lane & 7) + ((lane >> 4) << 3);
  const int kb_col8 = ((lane >> 3) & 1) << 3;

  float o[C::DWN8][4];
#pragma unroll
  for (int n = 0; n < C::DWN8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};

  for (int j = 0; j < n_tiles; ++j) {
    const int k0 = j * C::BK;
    cp_async_wait<1>();  // K(j) (and q) landed; V(j) may still be in flight
    __syncthreads();

    // 1. partial scores over channels [col0, col0 + DW)
    float s[C::KN8][4];
#pragma unroll
    for (int n = 0; n < C::KN8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < C::DW16; ++kk) {
      uint32_t qa[4];
      ldsm_x4(qa, sQ + (row0 + ld_row16) * C::LDS + col0 + kk * 16 + ld_col8);
#pragma unroll
      for (int p = 0; p < C::KN8 / 2; ++p) {
        uint32_t kb[4];
        ldsm_x4(kb, sK + (p * 16 + kb_row16) * C::LDS + col0 + kk * 16 + kb_col8);
        mma_16816<T>(s[2 * p], qa, kb[0], kb[1]);
        mma_16816<T>(s[2 * p + 1], qa, kb[2], kb[3]);
      }
    }
    {
      float* mine = sS + (cs * C::BQ + row0 + g) * C::SLD + 2 * t;
#pragma unroll
      for (int n = 0; n < C::KN8; ++n) {
        *reinterpret_cast<float2*>(mine + n * 8) = make_float2(s[n][0], s[n][1]);
        *reinterpret_cast<float2*>(mine + 8 * C::SLD + n * 8) = make_float2(s[n][2], s[n][3]);
      }
    }
    __syncthreads();  // partials complete; every warp is done reading K(j)
    if (j + 1 < n_tiles) load_k(j + 1);
    cp_async_commit();

    // 2. full scores of this warp's rows (sum of the partials, cs = 0..3 in order), softmax
#pragma unroll
    for (int n = 0; n < C::KN8; ++n) {
      float2 lo = make_float2(0.0f, 0.0f), hi = make_float2(0.0f, 0.0f);
#pragma unroll
      for (int c = 0; c < C::CS; ++c) {
        const float* part = sS + (c * C::BQ + row0 + g) * C::SLD + n * 8 + 2 * t;
        const float2 x = *reinterpret_cast<const float2*>(part);
        const float2 y = *reinterpret_cast<const float2*>(part + 8 * C::SLD);
        lo.x += x.x;
        lo.y += x.y;
        hi.x += y.x;
        hi.y += y.y;
      }
      s[n][0] = lo.x;
      s[n][1] = lo.y;
      s[n][2] = hi.x;
      s[n][3] = hi.y;
    }
    if (k0 + C::BK > a.seq_kv || (a.causal && k0 + C::BK - 1 > q0 + row0)) {
#pragma unroll
      for (int n = 0; n < C::KN8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = k0 + n * 8 + 2 * t + (e & 1);
          const int row = q0 + row0 + g + (e >> 1) * 8;
          if (key >= a.seq_kv || (a.causal && key > row)) s[n][e] = -INFINITY;
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < C::KN8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_max[h], mx * a.scale_log2);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = fast_exp2(row_max[h] - m_use);
      row_max[h] = m_new;
      row_sum[h] *= alpha;
#pragma unroll
      for (int n = 0; n < C::DWN8; ++n) {
        o[n][2 * h] *= alpha;
        o[n][2 * h + 1] *= alpha;
      }
      float sum = 0.0f;
#pragma unroll
      for (int n = 0; n < C::KN8; ++n) {
        const float p0 = fast_exp2(fmaf(s[n][2 * h], a.scale_log2, -m_use));
        const float p1 = fast_exp2(fmaf(s[n][2 * h + 1], a.scale_log2, -m_use));
        s[n][2 * h] = p0;
        s[n][2 * h + 1] = p1;
        sum += p0 + p1;
      }
      row_sum[h] += sum;
    }

    cp_async_wait<1>();  // V(j) landed; K(j+1) may still be in flight
    __syncthreads();     // ... for every thread's copies; also: all partials have been read

    // 3. O[:, col0:col0+DW] += P·V[:, col0:col0+DW]
#pragma unroll
    for (int kk = 0; kk < C::KK16; ++kk) {
      uint32_t pa[4];
      pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      const T* v_rows = sV + (kk * 16 + ld_row16) * C::LDS + col0;
#pragma unroll
      for (int p = 0; p < C::DWN8 / 2; ++p) {
        uint32_t vb[4];
        ldsm_x4_trans(vb, v_rows + p * 16 + ld_col8);
        mma_16816<T>(o[2 * p], pa, vb[0], vb[1]);
        mma_16816<T>(o[2 * p + 1], pa, vb[2], vb[3]);
      }
    }
    __syncthreads();  // every warp is done reading V(j)
    if (j + 1 < n_tiles) load_v(j + 1);
    cp_async_commit();
  }

  // Epilogue: O / l into sQ (every warp finished reading q: the loop ends with a barrier), then
  // 16-byte stores of the block's rows.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float l = row_sum[h];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = 1.0f / l;
    T* dst = sQ + (row0 + g + 8 * h) * C::LDS + col0 + 2 * t;
#pragma unroll
    for (int n = 0; n < C::DWN8; ++n)
      *reinterpret_cast<uint32_t*>(dst + n * 8) = pack2<T>(o[n][2 * h] * inv, o[n][2 * h + 1] * inv);
  }
  __syncthreads();
  T* gO = static_cast<T*>(a.out) + b * a.out_batch + head * C::D;
  for (int c = tid; c < C::BQ * C::CHUNKS; c += C::THREADS) {
    const int r = c / C::CHUNKS;
    const int ch = c - r * C::CHUNKS;
    if (q0 + r < a.seq_q)
      *reinterpret_cast<uint4*>(gO + (q0 + r) * a.out_row + ch * 8) =
          *reinterpret_cast<const uint4*>(sQ + r * C::LDS + ch * 8);
  }
}

template <class C>
cudaError_t launch_wide(const LaunchArgs& a, cudaStream_t stream) {
  static std::atomic<unsigned long long> smem_set{0};
  const void* kernel = reinterpret_cast<const void*>(&wide_attention_kernel<C>);
  cudaError_t err = allow_dynamic_smem(kernel, C::SMEM, &smem_set);
  if (err != cudaSuccess) return err;
  const dim3 grid((a.seq_q + C::BQ - 1) / C::BQ, a.heads, a.batch);
  wide_attention_kernel<C><<<grid, C::THREADS, C::SMEM, stream>>>(a);
  return cudaGetLastError();
}

template <class C>
constexpr VariantDesc wide_desc(DType dtype, const char* name) {
  return VariantDesc{AttentionKernel::FlashWideHead, dtype, C::D, 0, 80, 0, 1000, C::BQ,
                     C::THREADS, C::SMEM, name, &launch_wide<C>};
}

// In order of preference: 32 rows per block with tiles of 32 keys (120 KB of shared memory, so
// A100 too; one image's 4096 rows make 128 blocks, one per H100 multiprocessor), then tiles of 64
// keys (half the barriers per key; 203 KB, Hopper only). 64 rows per block would need 512 threads
// at <= 128 registers for a 64-register accumulator each, which spills.
const VariantDesc kWideVariants[] = {
    wide_desc<WideConfig<__half, 512, 2, 32>>(DType::F16, "wide_f16_d512_r2_k32"),
    wide_desc<WideConfig<__half, 512, 2, 64>>(DType::F16, "wide_f16_d512_r2_k64"),
    wide_desc<WideConfig<__nv_bfloat16, 512, 2, 32>>(DType::BF16, "wide_bf16_d512_r2_k32"),
    wide_desc<WideConfig<__nv_bfloat16, 512, 2, 64>>(DType::BF16, "wide_bf16_d512_r2_k64"),
};

}  // namespace

VariantTable wide_variants() {
  return {kWideVariants, static_cast<int>(sizeof(kWideVariants) / sizeof(VariantDesc))};
}

}  // namespace sdmpi::cuda::detail
