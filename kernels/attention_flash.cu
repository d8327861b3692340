// Flash attention on tensor cores (mma.sync, sm_80 and sm_90) for Stable Diffusion's head dims.
//
// Idea. A thread block owns BQ query rows of one (batch, head); each warp owns 16·MT of them and
// keeps, in registers, its q fragments, its fp32 output accumulator O and the running row max m and
// row sum l. K and V stream through shared memory in tiles of BK keys (cp.async, STAGES deep).
// Per tile a warp computes S = q·kᵀ with mma.sync m16n8k16, updates m and l (online softmax, fp32,
// exp2 on the special-function unit, log2(e) folded into the scale), rescales O, and accumulates
// O += P·V, reusing the fp32 score fragments as the A operand of the second product (the m16n8 C
// layout of two adjacent n8 tiles is the m16k16 A layout). At the end O/l goes through shared
// memory to 16-byte stores.
//
// No padding waste. The contraction q·kᵀ runs over d in k16 steps plus one m16n8k8 step when
// d % 16 == 8 (d = 40 = 16+16+8, not 48 or 64); P·V produces d in n8 tiles (40 = 5×8). So head
// dims 40, 80 and 160 do exactly the arithmetic of the problem, where kernels that round d up to
// 64/96/192 do 60%/20%/20% more (bench/gpu/ATTENTION_NOTES.md).
//
// FlashShortKV is the same kernel with one tile of BK = 80 keys and no pipeline: cross-attention
// to 77 text tokens (and CLIP's 77) pads keys to 80, not to two tiles of 64.
//
// Shared-memory rows are padded to an odd number of 16-byte chunks (d = 40: 80 bytes, none;
// 64 → 72, 80 → 88, 160 → 168 elements), which makes every ldmatrix and the epilogue's stores free
// of bank conflicts without a swizzle.

#include "attention_detail.cuh"

namespace sdmpi::cuda::detail {
namespace {

template <typename T, int D_, int MT_, int WARPS_, int BK_, int STAGES_, bool Q_IN_REGS_,
          int MIN_BLOCKS_>
struct FlashConfig {
  using Elem = T;
  static constexpr int D = D_;                  // head dim
  static constexpr int MT = MT_;                // m16 tiles (16 query rows each) per warp
  static constexpr int WARPS = WARPS_;
  static constexpr int BK = BK_;                // keys per tile
  static constexpr int STAGES = STAGES_;        // K/V tiles in flight (1: single tile, no overlap)
  static constexpr bool Q_IN_REGS = Q_IN_REGS_;  // q fragments in registers, else ldmatrix per tile
  static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int THREADS = WARPS * 32;
  static constexpr int WARP_ROWS = 16 * MT;
  static constexpr int BQ = WARP_ROWS * WARPS;  // query rows per block
  static constexpr int D16 = D / 16;            // k16 steps of q·kᵀ
  static constexpr bool D_TAIL8 = D % 16 != 0;  // plus one k8 step
  static constexpr int DN8 = D / 8;             // n8 tiles of O
  static constexpr int KN8 = BK / 8;            // n8 tiles of S
  static constexpr int KK16 = BK / 16;          // k16 steps of P·V
  static constexpr int LDS = smem_row_stride(D);
  static constexpr int CHUNKS = D / 8;          // 16-byte chunks per row
  static constexpr size_t SMEM_Q = size_t{BQ} * LDS * sizeof(T);
  static constexpr size_t SMEM_STAGE = size_t{2} * BK * LDS * sizeof(T);  // K tile + V tile
  static constexpr size_t SMEM = SMEM_Q + STAGES * SMEM_STAGE;
  static_assert(D % 8 == 0 && BK % 16 == 0 && STAGES >= 1, "tile shape");
};

template <class C>
__global__ void __launch_bounds__(C::THREADS, C::MIN_BLOCKS)
    flash_attention_kernel(const LaunchArgs a) {
  using T = typename C::Elem;
  extern __shared__ __align__(16) unsigned char flash_smem[];
  T* const sQ = reinterpret_cast<T*>(flash_smem);
  T* const sKV = sQ + C::BQ * C::LDS;  // stage s: K at s*2*BK*LDS, V right after it

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int g = lane >> 2;  // row within an m16 tile (and +8)
  const int t = lane & 3;   // column pair within an n8 tile
  const int q0 = blockIdx.x * C::BQ;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const int warp_row0 = warp * C::WARP_ROWS;  // first row of this warp within the block

  const T* gQ = static_cast<const T*>(a.q) + b * a.q_batch + q0 * a.q_row + head * C::D;
  const T* gK = static_cast<const T*>(a.k) + b * a.k_batch + head * C::D;
  const T* gV = static_cast<const T*>(a.v) + b * a.v_batch + head * C::D;
  const int q_rows = min(C::BQ, a.seq_q - q0);
  // Keys some row of this block can see (causal: query i sees keys 0..i).
  const int kv_end = a.causal ? min(a.seq_kv, q0 + q_rows) : a.seq_kv;
  const int n_tiles = (kv_end + C::BK - 1) / C::BK;

  auto load_kv = [&](int tile, int stage) {
    const int k0 = tile * C::BK;
    const int rows = min(C::BK, a.seq_kv - k0);
    T* sK = sKV + stage * 2 * C::BK * C::LDS;
    T* sV = sK + C::BK * C::LDS;
    copy_rows_async<C::BK, C::CHUNKS, C::LDS, C::THREADS>(sK, gK + k0 * a.k_row, a.k_row, rows,
                                                          tid);
    copy_rows_async<C::BK, C::CHUNKS, C::LDS, C::THREADS>(sV, gV + k0 * a.v_row, a.v_row, rows,
                                                          tid);
  };

  // Prologue: q (rows past seq_q are zeros) and the first STAGES-1 tiles, one commit group each;
  // q rides in the first group.
  copy_rows_async<C::BQ, C::CHUNKS, C::LDS, C::THREADS>(sQ, gQ, a.q_row, q_rows, tid);
  if constexpr (C::STAGES == 1) {
    cp_async_commit();
  } else {
#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
      if (s < n_tiles) load_kv(s, s);
      cp_async_commit();
    }
  }

  // ldmatrix.x4 row/column of this lane for a 16×16 block stored row-major: matrices 0..3 are
  // (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15).
  const int ld_row16 = (lane & 7) + (((lane >> 3) & 1) << 3);
  const int ld_col8 = (lane >> 4) << 3;
  // For K as the B operand (keys are B's columns): matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15),
  // (keys 8-15, d 0-7), (keys 8-15, d 8-15) = b0, b1 of key tile 2p, then b0, b1 of tile 2p+1.
  const int kb_row16 = (lane & 7) + ((lane >> 4) << 3);
  const int kb_col8 = ((lane >> 3) & 1) << 3;

  uint32_t q_frag[C::Q_IN_REGS ? C::MT : 1][C::Q_IN_REGS ? C::D16 : 1][4];
  uint32_t q_tail[C::Q_IN_REGS && C::D_TAIL8 ? C::MT : 1][2];
  float o[C::MT][C::DN8][4];
  float row_max[C::MT][2];  // log2-scaled; rows g and g+8 of each m16 tile
  float row_sum[C::MT][2];  // this lane's partial sums (its columns only), reduced at the end
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
    for (int n = 0; n < C::DN8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }

  for (int j = 0; j < n_tiles; ++j) {
    int stage;
    if constexpr (C::STAGES == 1) {
      if (j > 0) __syncthreads();  // every warp is done with the previous tile
      load_kv(j, 0);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      stage = 0;
    } else {
      // Tile j has landed once at most STAGES-2 younger groups are in flight; the barrier makes
      // it visible to all warps and proves every warp is done with tile j-1, whose stage the
      // next load reuses.
      cp_async_wait<C::STAGES - 2>();
      __syncthreads();
      const int next = j + C::STAGES - 1;
      if (next < n_tiles) load_kv(next, next % C::STAGES);
      cp_async_commit();  // possibly empty, keeps the group count uniform
      stage = j % C::STAGES;
    }
    if constexpr (C::Q_IN_REGS) {
      if (j == 0) {
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt) {
          const T* q_base = sQ + (warp_row0 + mt * 16) * C::LDS;
#pragma unroll
          for (int kk = 0; kk < C::D16; ++kk)
            ldsm_x4(q_frag[mt][kk], q_base + ld_row16 * C::LDS + kk * 16 + ld_col8);
          if constexpr (C::D_TAIL8) ldsm_x2(q_tail[mt], q_base + ld_row16 * C::LDS + C::D16 * 16);
        }
      }
    }
    const int k0 = j * C::BK;
    // Causal: a warp whose rows all precede this tile's first key has nothing to add.
    if (a.causal && k0 > q0 + warp_row0 + C::WARP_ROWS - 1) continue;

    const T* sK = sKV + stage * 2 * C::BK * C::LDS;
    const T* sV = sK + C::BK * C::LDS;

    // ---- S = q·kᵀ (16·MT × BK per warp) ----
    float s[C::MT][C::KN8][4];
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
      for (int n = 0; n < C::KN8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < C::D16; ++kk) {
      uint32_t qa[C::MT][4];
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt) {
        if constexpr (C::Q_IN_REGS) {
#pragma unroll
          for (int r = 0; r < 4; ++r) qa[mt][r] = q_frag[mt][kk][r];
        } else {
          ldsm_x4(qa[mt], sQ + (warp_row0 + mt * 16 + ld_row16) * C::LDS + kk * 16 + ld_col8);
        }
      }
#pragma unroll
      for (int p = 0; p < C::KN8 / 2; ++p) {
        uint32_t kb[4];
        ldsm_x4(kb, sK + (p * 16 + kb_row16) * C::LDS + kk * 16 + kb_col8);
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt) {
          mma_16816<T>(s[mt][2 * p], qa[mt], kb[0], kb[1]);
          mma_16816<T>(s[mt][2 * p + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }
    if constexpr (C::D_TAIL8) {
      // The last 8 channels: m16n8k8. A from rows 0-7 / 8-15 at column 16·D16; B for four key
      // tiles per ldmatrix.x4 (lane l addresses key 8i + l%8 of matrix i = l/8).
      uint32_t qa[C::MT][2];
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt) {
        if constexpr (C::Q_IN_REGS) {
          qa[mt][0] = q_tail[mt][0];
          qa[mt][1] = q_tail[mt][1];
        } else {
          ldsm_x2(qa[mt], sQ + (warp_row0 + mt * 16 + ld_row16) * C::LDS + C::D16 * 16);
        }
      }
#pragma unroll
      for (int p = 0; p < C::KN8 / 4; ++p) {
        uint32_t kb[4];
        ldsm_x4(kb, sK + (p * 32 + lane) * C::LDS + C::D16 * 16);
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
          for (int i = 0; i < 4; ++i) mma_1688<T>(s[mt][4 * p + i], qa[mt], kb[i]);
      }
      if constexpr (C::KN8 % 4 != 0) {  // KN8 is even: two key tiles left
        constexpr int n0 = C::KN8 / 4 * 4;
        uint32_t kb[2];
        ldsm_x2(kb, sK + (n0 * 8 + (lane & 15)) * C::LDS + C::D16 * 16);
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt) {
          mma_1688<T>(s[mt][n0], qa[mt], kb[0]);
          mma_1688<T>(s[mt][n0 + 1], qa[mt], kb[1]);
        }
      }
    }

    // ---- mask: keys past seq_kv (zero-filled rows) and, if causal, keys after the query ----
    const bool tail_tile = k0 + C::BK > a.seq_kv;
    const bool diagonal = a.causal && k0 + C::BK - 1 > q0 + warp_row0;
    if (tail_tile || diagonal) {
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
        for (int n = 0; n < C::KN8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = k0 + n * 8 + 2 * t + (e & 1);
            const int row = q0 + warp_row0 + mt * 16 + g + (e >> 1) * 8;
            if (key >= a.seq_kv || (a.causal && key > row)) s[mt][n][e] = -INFINITY;
          }
    }

    // ---- online softmax: new max, rescale, P = exp2(S·scale·log2e - max) ----
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {  // h = 0: row g, h = 1: row g+8
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < C::KN8; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * h], s[mt][n][2 * h + 1]));
        // The four lanes of a quad hold one row's columns.
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_max[mt][h], mx * a.scale_log2);
        // A row with nothing visible yet keeps max -inf; subtracting 0 keeps exp2(-inf) = 0.
        const float m_use = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = fast_exp2(row_max[mt][h] - m_use);
        row_max[mt][h] = m_new;
        row_sum[mt][h] *= alpha;
#pragma unroll
        for (int n = 0; n < C::DN8; ++n) {
          o[mt][n][2 * h] *= alpha;
          o[mt][n][2 * h + 1] *= alpha;
        }
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < C::KN8; ++n) {
          const float p0 = fast_exp2(fmaf(s[mt][n][2 * h], a.scale_log2, -m_use));
          const float p1 = fast_exp2(fmaf(s[mt][n][2 * h + 1], a.scale_log2, -m_use));
          s[mt][n][2 * h] = p0;
          s[mt][n][2 * h + 1] = p1;
          sum += p0 + p1;
        }
        row_sum[mt][h] += sum;
      }
    }

    // ---- O += P·V: P from the score registers, V (keys × d) via ldmatrix.trans ----
#pragma unroll
    for (int kk = 0; kk < C::KK16; ++kk) {
      uint32_t pa[C::MT][4];
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt) {
        pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
      // Matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15),
      // transposed: b0, b1 of output tile 2p, then b0, b1 of tile 2p+1.
      const T* v_rows = sV + (kk * 16 + ld_row16) * C::LDS;
#pragma unroll
      for (int p = 0; p < C::DN8 / 2; ++p) {
        uint32_t vb[4];
        ldsm_x4_trans(vb, v_rows + p * 16 + ld_col8);
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt) {
          mma_16816<T>(o[mt][2 * p], pa[mt], vb[0], vb[1]);
          mma_16816<T>(o[mt][2 * p + 1], pa[mt], vb[2], vb[3]);
        }
      }
      if constexpr (C::DN8 % 2 != 0) {  // d = 40: the fifth n8 tile
        uint32_t vb[2];
        ldsm_x2_trans(vb, v_rows + (C::DN8 - 1) * 8);
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt) mma_16816<T>(o[mt][C::DN8 - 1], pa[mt], vb[0], vb[1]);
      }
    }
  }

  // ---- epilogue: O / l → this warp's rows of sQ (only this warp ever reads them) → global ----
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[mt][h];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = 1.0f / l;  // l >= 1 for every row with a visible key
      T* dst = sQ + (warp_row0 + mt * 16 + g + 8 * h) * C::LDS + 2 * t;
#pragma unroll
      for (int n = 0; n < C::DN8; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8) =
            pack2<T>(o[mt][n][2 * h] * inv, o[mt][n][2 * h + 1] * inv);
    }
  }
  __syncwarp();
  T* gO = static_cast<T*>(a.out) + b * a.out_batch + head * C::D;
  constexpr int kWarpChunks = C::WARP_ROWS * C::CHUNKS;
#pragma unroll
  for (int i = 0; i < (kWarpChunks + 31) / 32; ++i) {
    const int c = lane + 32 * i;
    if (kWarpChunks % 32 == 0 || c < kWarpChunks) {
      const int r = c / C::CHUNKS;
      const int ch = c - r * C::CHUNKS;
      const int row = q0 + warp_row0 + r;
      if (row < a.seq_q)
        *reinterpret_cast<uint4*>(gO + row * a.out_row + ch * 8) =
            *reinterpret_cast<const uint4*>(sQ + (warp_row0 + r) * C::LDS + ch * 8);
    }
  }
}

template <class C>
cudaError_t launch_flash(const LaunchArgs& a, cudaStream_t stream) {
  static std::atomic<unsigned long long> smem_set{0};
  const void* kernel = reinterpret_cast<const void*>(&flash_attention_kernel<C>);
  cudaError_t err = allow_dynamic_smem(kernel, C::SMEM, &smem_set);
  if (err != cudaSuccess) return err;
  const dim3 grid((a.seq_q + C::BQ - 1) / C::BQ, a.heads, a.batch);
  flash_attention_kernel<C><<<grid, C::THREADS, C::SMEM, stream>>>(a);
  return cudaGetLastError();
}

template <class C>
constexpr VariantDesc flash_desc(AttentionKernel kind, DType dtype, const char* name,
                                 int pick_min_sm = 0, int pick_max_sm = 1000) {
  return VariantDesc{kind,
                     dtype,
                     C::D,
                     kind == AttentionKernel::FlashShortKV ? C::BK : 0,
                     80,
                     pick_min_sm,
                     pick_max_sm,
                     C::BQ,
                     C::THREADS,
                     C::SMEM,
                     name,
                     &launch_flash<C>};
}

// The compiled configurations: FlashConfig<T, d, MT, warps, BK, stages, q in registers, min
// blocks per SM>, per kind and head dim in order of preference. choose_variant takes the first
// whose grid fills the device, so a smaller-block variant listed after a larger one serves the
// short sequences (32×32 and 16×16 latents); the benchmark times them all.
#define SDMPI_FLASH(T, DT, SFX, KIND, PREFIX, D, MT, W, BK, ST, QREG, MINB)            \
  flash_desc<FlashConfig<T, D, MT, W, BK, ST, QREG, MINB>>(AttentionKernel::KIND, DT, \
                                                          PREFIX "_" SFX "_d" #D "_m" #MT "w" #W \
                                                                 "_k" #BK "_s" #ST)
#define SDMPI_FLASH_TABLE(T, DT, SFX)                                             \
  SDMPI_FLASH(T, DT, SFX, Flash, "flash", 40, 2, 4, 64, 2, true, 2),              \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 40, 2, 4, 32, 2, true, 3),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 40, 1, 8, 64, 2, true, 2),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 40, 1, 4, 64, 2, true, 4),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 64, 2, 4, 32, 2, true, 2),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 64, 1, 8, 64, 2, true, 2),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 64, 1, 4, 64, 2, true, 4),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 80, 1, 8, 32, 2, true, 2),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 80, 1, 4, 64, 2, true, 3),          \
      SDMPI_FLASH(T, DT, SFX, Flash, "flash", 160, 1, 4, 64, 2, false, 2),        \
      SDMPI_FLASH(T, DT, SFX, FlashShortKV, "shortkv", 40, 2, 4, 80, 1, true, 2), \
      SDMPI_FLASH(T, DT, SFX, FlashShortKV, "shortkv", 40, 1, 4, 80, 1, true, 4), \
      SDMPI_FLASH(T, DT, SFX, FlashShortKV, "shortkv", 64, 1, 4, 80, 1, true, 4), \
      SDMPI_FLASH(T, DT, SFX, FlashShortKV, "shortkv", 80, 1, 4, 80, 1, true, 3), \
      SDMPI_FLASH(T, DT, SFX, FlashShortKV, "shortkv", 160, 1, 4, 80, 1, false, 2)

const VariantDesc kFlashVariants[] = {
    SDMPI_FLASH_TABLE(__half, DType::F16, "f16"),
    SDMPI_FLASH_TABLE(__nv_bfloat16, DType::BF16, "bf16"),
};

#undef SDMPI_FLASH_TABLE
#undef SDMPI_FLASH

}  // namespace

VariantTable flash_variants() {
  return {kFlashVariants, static_cast<int>(sizeof(kFlashVariants) / sizeof(VariantDesc))};
}

}  // namespace sdmpi::cuda::detail
