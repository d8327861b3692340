// Attention for Hopper (sm_90a): a FlashAttention-3-style forward kernel for head dims 64 and 40.
//
// Idea. One thread block owns 128 query rows of one (batch, head) and is split by role (warp
// specialisation): one producer warp issues TMA copies (cp.async.bulk.tensor) of the Q tile and
// of K/V tiles of 128 keys into a 2-stage ring of shared memory, and two consumer warpgroups (64
// query rows each) compute. Stages are handed over with mbarriers: "full" (the TMA's byte count
// arrived) and "empty" (all 8 consumer warps are done reading). Per K/V tile a consumer warpgroup
// computes S = Q·Kᵀ with wgmma.mma_async (both operands in shared memory), the online softmax in
// fp32 registers (log2(e) folded into the scale, exp2 on the special-function unit, as in
// attention_flash.cu), and O += P·V with wgmma (P from registers, V transposed by the instruction).
// The epilogue writes O/l from registers.
//
// Layout. TMA writes every tile as 16-byte column chunks: chunk c (channels 8c..8c+7) of all 128
// rows is one contiguous 2 KiB block. That is wgmma's no-swizzle canonical layout for K-major Q and
// K (core matrix = 8 rows × 16 bytes) and for MN-major V (8 keys × 8 channels), so no shared-memory
// shuffling is needed: each chunk is one TMA box of 8 channels × the tile's rows, so a tile is
// D/8 box loads (the tensor map is plain [batch][token][channel], its strides in memory order). Head dim 40 runs as 48 in Q·Kᵀ (the sixth chunk of Q and K is zeroed
// once and never written by TMA) and as N = 40 in P·V (wgmma takes N in steps of 8), so 40 costs
// 48/64 and 40/64 of the d = 64 arithmetic, not the full padding to 64.
//
// Not yet (bench/gpu/ATTENTION_NOTES.md): FA3's intra-warpgroup overlap of softmax with the next
// Q·Kᵀ, the ping-pong schedule between the two consumer warpgroups, setmaxnreg, swizzled layouts
// (the no-swizzle layout may cost shared-memory bank conflicts), a TMA store epilogue, causal
// masking. The kernel is compiled for sm_90a only; the sm_80 build holds an empty stub that is
// never launched (the variant runs only on compute capability 9.0 with the sm_90a image loaded, see
// can_run in attention.cu and hopper_kernel_available below).
//
// The tensor maps are encoded per call with cuTensorMapEncodeTiled, found through the runtime
// (cudaGetDriverEntryPointByVersion), so nothing links libcuda.

#include <cuda.h>
#include <cudaTypedefs.h>

#include <type_traits>

#include "attention_detail.cuh"

namespace sdmpi::cuda::detail {

// Outside the anonymous namespace: the sm_80 stub uses none of these members, and nvcc warns
// about unreferenced members of internal-linkage classes.
constexpr int kHopperConsumerWarpgroups = 2;
constexpr int kHopperConsumerWarps = kHopperConsumerWarpgroups * 4;
constexpr int kHopperThreads = kHopperConsumerWarps * 32 + 32;  // + one producer warp

template <typename T, int D_>
struct HopperConfig {
  using Elem = T;
  static constexpr int D = D_;
  static constexpr int BQ = 64 * kHopperConsumerWarpgroups;  // query rows per block
  static constexpr int BK = 128;                              // keys per tile (wgmma N of Q·Kᵀ)
  static constexpr int STAGES = 2;                            // K/V tiles in flight
  static constexpr int CHUNKS = D / 8;             // 16-byte chunks of a row in global memory
  static constexpr int KSTEPS = (D + 15) / 16;     // k16 steps of Q·Kᵀ (40 → 3)
  static constexpr int CHUNKS_PAD = 2 * KSTEPS;    // chunks of Q and K in shared memory
  static constexpr int PV_STEPS = BK / 16;         // k16 steps of P·V
  static constexpr int O_REGS = D / 2;             // fp32 accumulator registers of O per thread
  static constexpr size_t CHUNK_Q = size_t{BQ} * 16;  // bytes of one chunk of the Q tile
  static constexpr size_t CHUNK_K = size_t{BK} * 16;  // ... of a K or V tile
  static constexpr size_t Q_BYTES = CHUNKS_PAD * CHUNK_Q;
  static constexpr size_t K_BYTES = CHUNKS_PAD * CHUNK_K;
  static constexpr size_t V_BYTES = CHUNKS * CHUNK_K;
  static constexpr size_t STAGE_BYTES = K_BYTES + V_BYTES;
  static constexpr size_t BAR_OFFSET = Q_BYTES + STAGES * STAGE_BYTES;
  static constexpr int BARRIERS = 1 + 2 * STAGES;  // q_full, full[STAGES], empty[STAGES]
  static constexpr size_t SMEM_ALIGN = 1024;
  static constexpr size_t SMEM = BAR_OFFSET + BARRIERS * sizeof(uint64_t) + SMEM_ALIGN;
  static constexpr uint32_t Q_TX_BYTES = CHUNKS * CHUNK_Q;       // what one Q load delivers
  static constexpr uint32_t KV_TX_BYTES = 2 * CHUNKS * CHUNK_K;  // ... one K and one V load
  static_assert(D == 40 || D == 64, "the Hopper kernel covers head dims 40 and 64");
  static_assert(O_REGS == 20 || O_REGS == 32, "wgmma wrappers exist for N = 40 and 64");
};

namespace {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SDMPI_HOPPER_DEVICE_CODE 1

// ---- mbarriers and TMA --------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return done != 0;
}
// Blocks until the phase of `bar` with parity `parity` has completed. A fresh barrier counts its
// (nonexistent) previous phase, parity 1, as completed: the producer's first wait on "empty".
// A wait of ~4 s (2^33 cycles) means a pipeline bug: trap (the launch fails with an error) rather
// than hang a test process or a GPU window until its timeout.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  if (mbar_try_wait(bar, parity)) return;
  const long long start = clock64();
  while (!mbar_try_wait(bar, parity)) {
    if (clock64() - start > (1ll << 33)) __trap();
  }
}
// One box of a 3-d tensor map (channel, token, batch) into shared memory; completion is counted
// on `bar` in bytes.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar,
                                            int channel, int token, int batch) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes "
      "[%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(channel), "r"(token), "r"(batch),
      "r"(smem_u32(bar))
      : "memory");
}

// ---- wgmma --------------------------------------------------------------------------------------
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Pins registers that an in-flight wgmma reads or writes: the empty asm "redefines" them, and, being
// volatile, stays ordered with the wgmma/wait asm around it, so the compiler can neither read an
// accumulator before wgmma.wait_group nor touch an operand between issue and wait.
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+r"(r[i][0]), "+r"(r[i][1]), "+r"(r[i][2]), "+r"(r[i][3])::"memory");
}

// Shared-memory matrix descriptor, no swizzle: start address, LBO = bytes between core matrices
// adjacent along K, SBO = bytes between core matrices adjacent along M/N (both in 16-byte units).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr >> 4) & 0x3FFF) |
         (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32);
}

// D (m64nN, fp32) [+]= A · B. _ss: A and B from descriptors, both K-major. _rs: A from registers
// (the m16n8k16 A layout per warp, warp w of the warpgroup holding rows 16w..16w+15), B MN-major
// (transposed by the instruction). D per warp w: register 4i+e holds row 16w + g + 8(e/2),
// column 8i + 2t + e%2 (g = lane/4, t = lane%4), the mma.sync C layout repeated over N/8 tiles.
// Generated wrappers, one per shape and type (operand lists spelled out for the PTX).
__device__ __forceinline__ void wgmma_ss_m64n128k16_f16(float (&d)[64], uint64_t desc_a,
                                                 uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "," "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
      "," "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47"
      "," "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63" "}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_rs_m64n64k16_f16(float (&d)[32], const uint32_t (&a)[4],
                                                uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "," "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31" "}, "
      "{%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}
__device__ __forceinline__ void wgmma_rs_m64n40k16_f16(float (&d)[20], const uint32_t (&a)[4],
                                                uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n40k16.f32.f16.f16 "
      "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "," "%16,%17,%18,%19" "}, "
      "{%20,%21,%22,%23}, %24, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}
__device__ __forceinline__ void wgmma_ss_m64n128k16_bf16(float (&d)[64], uint64_t desc_a,
                                                 uint64_t desc_b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "," "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
      "," "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47"
      "," "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63" "}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_rs_m64n64k16_bf16(float (&d)[32], const uint32_t (&a)[4],
                                                uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "," "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31" "}, "
      "{%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}
__device__ __forceinline__ void wgmma_rs_m64n40k16_bf16(float (&d)[20], const uint32_t (&a)[4],
                                                uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n40k16.f32.bf16.bf16 "
      "{" "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15"
      "," "%16,%17,%18,%19" "}, "
      "{%20,%21,%22,%23}, %24, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

template <typename T>
struct Wgmma;
template <>
struct Wgmma<__half> {
  static __device__ __forceinline__ void qk(float (&d)[64], uint64_t a, uint64_t b, int acc) {
    wgmma_ss_m64n128k16_f16(d, a, b, acc);
  }
  static __device__ __forceinline__ void pv(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    wgmma_rs_m64n64k16_f16(d, a, b);
  }
  static __device__ __forceinline__ void pv(float (&d)[20], const uint32_t (&a)[4], uint64_t b) {
    wgmma_rs_m64n40k16_f16(d, a, b);
  }
};
template <>
struct Wgmma<__nv_bfloat16> {
  static __device__ __forceinline__ void qk(float (&d)[64], uint64_t a, uint64_t b, int acc) {
    wgmma_ss_m64n128k16_bf16(d, a, b, acc);
  }
  static __device__ __forceinline__ void pv(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    wgmma_rs_m64n64k16_bf16(d, a, b);
  }
  static __device__ __forceinline__ void pv(float (&d)[20], const uint32_t (&a)[4], uint64_t b) {
    wgmma_rs_m64n40k16_bf16(d, a, b);
  }
};

#endif  // sm_90a device code

template <class C>
__global__ void __launch_bounds__(kHopperThreads, 1)
    hopper_attention_kernel(const __grid_constant__ CUtensorMap map_q,
                            const __grid_constant__ CUtensorMap map_k,
                            const __grid_constant__ CUtensorMap map_v, const LaunchArgs a) {
#ifdef SDMPI_HOPPER_DEVICE_CODE
  using T = typename C::Elem;
  extern __shared__ unsigned char hopper_smem_raw[];
  unsigned char* const smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(hopper_smem_raw) + C::SMEM_ALIGN - 1) & ~(C::SMEM_ALIGN - 1));
  unsigned char* const sQ = smem;
  auto sK = [&](int stage) { return smem + C::Q_BYTES + stage * C::STAGE_BYTES; };
  auto sV = [&](int stage) { return sK(stage) + C::K_BYTES; };
  uint64_t* const q_full = reinterpret_cast<uint64_t*>(smem + C::BAR_OFFSET);
  uint64_t* const full = q_full + 1;
  uint64_t* const empty = full + C::STAGES;

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int q0 = blockIdx.x * C::BQ;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  const int n_tiles = (a.seq_kv + C::BK - 1) / C::BK;

  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < C::STAGES; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], kHopperConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (C::CHUNKS_PAD > C::CHUNKS) {
    // The chunks past the head dim take part in Q·Kᵀ as zeros; TMA never writes them.
    constexpr int kPadQ = (C::CHUNKS_PAD - C::CHUNKS) * C::BQ;  // 16-byte words
    constexpr int kPadK = (C::CHUNKS_PAD - C::CHUNKS) * C::BK;
    for (int i = tid; i < kPadQ; i += kHopperThreads)
      reinterpret_cast<uint4*>(sQ + C::CHUNKS * C::CHUNK_Q)[i] = make_uint4(0, 0, 0, 0);
    for (int s = 0; s < C::STAGES; ++s)
      for (int i = tid; i < kPadK; i += kHopperThreads)
        reinterpret_cast<uint4*>(sK(s) + C::CHUNKS * C::CHUNK_K)[i] = make_uint4(0, 0, 0, 0);
    // Generic-proxy writes become visible to wgmma (async proxy) after this fence + the barrier.
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();

  if (warp == kHopperConsumerWarps) {
    // Producer: Q once, then K/V tiles through the ring. Rows past seq_q / seq_kv arrive as zeros
    // (TMA's out-of-bounds fill); the consumers mask such keys.
    if (lane == 0) {
      mbar_arrive_expect_tx(q_full, C::Q_TX_BYTES);
#pragma unroll
      for (int c = 0; c < C::CHUNKS; ++c)
        tma_load_3d(sQ + c * C::CHUNK_Q, &map_q, q_full, head * C::D + 8 * c, q0, b);
      for (int j = 0; j < n_tiles; ++j) {
        const int s = j % C::STAGES;
        mbar_wait(&empty[s], ((j / C::STAGES) & 1) ^ 1);
        mbar_arrive_expect_tx(&full[s], C::KV_TX_BYTES);
#pragma unroll
        for (int c = 0; c < C::CHUNKS; ++c) {
          tma_load_3d(sK(s) + c * C::CHUNK_K, &map_k, &full[s], head * C::D + 8 * c, j * C::BK, b);
          tma_load_3d(sV(s) + c * C::CHUNK_K, &map_v, &full[s], head * C::D + 8 * c, j * C::BK, b);
        }
      }
    }
    return;  // no block-wide barrier follows
  }

  // Consumers: warpgroup wg owns query rows 64wg..64wg+63 of the block.
  const int wg = warp >> 2;
  const int g = lane >> 2;
  const int t = lane & 3;
  const uint32_t q_base = smem_u32(sQ) + wg * 64 * 16;

  float s_acc[64];  // S tile: 64 rows × 128 keys per warpgroup
  float o[C::O_REGS];
#pragma unroll
  for (int i = 0; i < 64; ++i) s_acc[i] = 0.0f;
#pragma unroll
  for (int i = 0; i < C::O_REGS; ++i) o[i] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // log2-scaled, rows g and g+8 of this warp
  float row_sum[2] = {0.0f, 0.0f};            // this lane's columns only; reduced at the end

  mbar_wait(q_full, 0);
  for (int j = 0; j < n_tiles; ++j) {
    const int s = j % C::STAGES;
    mbar_wait(&full[s], (j / C::STAGES) & 1);
    const uint32_t k_base = smem_u32(sK(s));
    const uint32_t v_base = smem_u32(sV(s));

    fence_registers(s_acc);
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < C::KSTEPS; ++k) {
      const uint64_t da = smem_desc(q_base + k * 2 * C::CHUNK_Q, C::CHUNK_Q, 128);
      const uint64_t db = smem_desc(k_base + k * 2 * C::CHUNK_K, C::CHUNK_K, 128);
      Wgmma<T>::qk(s_acc, da, db, k > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait_all();
    fence_registers(s_acc);

    // Online softmax over this tile's 128 keys (keys past seq_kv: -inf, weight 0).
    const int keys_left = a.seq_kv - j * C::BK;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const int col = 8 * (i >> 2) + 2 * t + (i & 1);
      const float x = col < keys_left ? s_acc[i] * a.scale_log2 : -INFINITY;
      s_acc[i] = x;
      tile_max[(i >> 1) & 1] = fmaxf(tile_max[(i >> 1) & 1], x);
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(row_max[r], tile_max[r]);  // finite: every tile has a valid key
      alpha[r] = fast_exp2(row_max[r] - m_new);            // 0 on the first tile
      row_max[r] = m_new;
      row_sum[r] *= alpha[r];
    }
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      const int r = (i >> 1) & 1;
      s_acc[i] = fast_exp2(s_acc[i] - row_max[r]);
      row_sum[r] += s_acc[i];
    }
#pragma unroll
    for (int i = 0; i < C::O_REGS; ++i) o[i] *= alpha[(i >> 1) & 1];

    // P as wgmma's register A operand: key step kk covers the n8 tiles 2kk and 2kk+1 of S.
    uint32_t p_frag[C::PV_STEPS][4];
#pragma unroll
    for (int kk = 0; kk < C::PV_STEPS; ++kk) {
      p_frag[kk][0] = pack2<T>(s_acc[8 * kk + 0], s_acc[8 * kk + 1]);
      p_frag[kk][1] = pack2<T>(s_acc[8 * kk + 2], s_acc[8 * kk + 3]);
      p_frag[kk][2] = pack2<T>(s_acc[8 * kk + 4], s_acc[8 * kk + 5]);
      p_frag[kk][3] = pack2<T>(s_acc[8 * kk + 6], s_acc[8 * kk + 7]);
    }
    fence_registers(o);
    fence_registers(p_frag);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < C::PV_STEPS; ++kk) {
      // V is MN-major: 8 keys × 8 channels per core matrix; next 8 keys +128 B (LBO), next 8
      // channels one chunk on (SBO).
      const uint64_t db = smem_desc(v_base + kk * 2 * 128, 128, C::CHUNK_K);
      Wgmma<T>::pv(o, p_frag[kk], db);
    }
    wgmma_commit();
    wgmma_wait_all();
    fence_registers(o);
    fence_registers(p_frag);
    __syncwarp();
    if (lane == 0) mbar_arrive(&empty[s]);  // this warp is done with stage s
  }

  // Epilogue: O / l straight from registers, 4-byte stores of two channels.
  float inv_l[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv_l[r] = 1.0f / l;  // l >= 1: the row maximum contributes exp2(0)
  }
  const int row0 = q0 + wg * 64 + (warp & 3) * 16 + g;
  T* const gO = static_cast<T*>(a.out) + b * a.out_batch + head * C::D;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= a.seq_q) continue;
    T* const out_row = gO + row * a.out_row;
#pragma unroll
    for (int n = 0; n < C::D / 8; ++n) {
      *reinterpret_cast<uint32_t*>(out_row + 8 * n + 2 * t) =
          pack2<T>(o[4 * n + 2 * r] * inv_l[r], o[4 * n + 2 * r + 1] * inv_l[r]);
    }
  }
#else
  (void)map_q;
  (void)map_k;
  (void)map_v;
  (void)a;
#endif
}

// ---- host side ----------------------------------------------------------------------------------

PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                             cudaEnableDefault, &found);
    return err == cudaSuccess && found == cudaDriverEntryPointSuccess
               ? reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn)
               : nullptr;
  }();
  return encode;
}

// The tensor map of q, k or v: dims (channel of all heads, token, batch); a box is 8 channels of
// `box_rows` tokens, one 16-byte chunk of a tile (see the layout note at the top). Tokens past the
// end arrive as zeros.
template <class C>
cudaError_t encode_map(CUtensorMap* map, const void* base, int64_t row_stride,
                       int64_t batch_stride, int tokens, int box_rows, const LaunchArgs& a) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (encode == nullptr) return cudaErrorNotSupported;
  constexpr cuuint64_t kElem = sizeof(typename C::Elem);
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(a.heads) * C::D,
                              static_cast<cuuint64_t>(tokens), static_cast<cuuint64_t>(a.batch)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(row_stride) * kElem,
                                 static_cast<cuuint64_t>(batch_stride) * kElem};
  const cuuint32_t box[3] = {8, static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUtensorMapDataType type = std::is_same_v<typename C::Elem, __half>
                                       ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                       : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const CUresult res = encode(map, type, 3, const_cast<void*>(base), dims, strides, box,
                              element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return res == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

template <class C>
cudaError_t launch_hopper(const LaunchArgs& a, cudaStream_t stream) {
  CUtensorMap map_q, map_k, map_v;
  cudaError_t err = encode_map<C>(&map_q, a.q, a.q_row, a.q_batch, a.seq_q, C::BQ, a);
  if (err == cudaSuccess) err = encode_map<C>(&map_k, a.k, a.k_row, a.k_batch, a.seq_kv, C::BK, a);
  if (err == cudaSuccess) err = encode_map<C>(&map_v, a.v, a.v_row, a.v_batch, a.seq_kv, C::BK, a);
  if (err != cudaSuccess) return err;
  static std::atomic<unsigned long long> smem_set{0};
  const void* kernel = reinterpret_cast<const void*>(&hopper_attention_kernel<C>);
  err = allow_dynamic_smem(kernel, C::SMEM, &smem_set);
  if (err != cudaSuccess) return err;
  const dim3 grid((a.seq_q + C::BQ - 1) / C::BQ, a.heads, a.batch);
  hopper_attention_kernel<C><<<grid, kHopperThreads, C::SMEM, stream>>>(map_q, map_k, map_v, a);
  return cudaGetLastError();
}

template <class C>
constexpr VariantDesc hopper_desc(DType dtype, const char* name) {
  return VariantDesc{AttentionKernel::FlashHopper,
                     dtype,
                     C::D,
                     0,
                     90,
                     90,
                     90,
                     C::BQ,
                     kHopperThreads,
                     C::SMEM,
                     name,
                     &launch_hopper<C>};
}

const VariantDesc kHopperVariants[] = {
    hopper_desc<HopperConfig<__half, 40>>(DType::F16, "hopper_f16_d40_q128_k128_s2"),
    hopper_desc<HopperConfig<__half, 64>>(DType::F16, "hopper_f16_d64_q128_k128_s2"),
    hopper_desc<HopperConfig<__nv_bfloat16, 40>>(DType::BF16, "hopper_bf16_d40_q128_k128_s2"),
    hopper_desc<HopperConfig<__nv_bfloat16, 64>>(DType::BF16, "hopper_bf16_d64_q128_k128_s2"),
};

}  // namespace

// Whether the device loaded the sm_90a image of the kernel rather than the stub that every other
// image holds: a build whose sm_90 code is plain compute_90 (CMAKE_CUDA_ARCHITECTURES=native or
// 90, no "a") must never offer the stub. The stub uses a handful of registers, the kernel ~170;
// cudaFuncGetAttributes reports the loaded image's count and, unlike a memory copy, is safe while
// a CUDA graph is being captured (attention_forward runs inside the UNet step's capture).
bool hopper_kernel_available() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device >= 64) return false;
  static std::atomic<unsigned long long> checked{0}, available{0};
  const unsigned long long bit = 1ull << device;
  if (!(checked.load(std::memory_order_acquire) & bit)) {
    cudaFuncAttributes attr{};
    const cudaError_t err = cudaFuncGetAttributes(
        &attr, reinterpret_cast<const void*>(&hopper_attention_kernel<HopperConfig<__half, 64>>));
    constexpr int kStubRegisterCeiling = 32;
    if (err == cudaSuccess && attr.numRegs > kStubRegisterCeiling)
      available.fetch_or(bit, std::memory_order_acq_rel);
    checked.fetch_or(bit, std::memory_order_acq_rel);
  }
  return (available.load(std::memory_order_acquire) & bit) != 0;
}

VariantTable hopper_variants() {
  return {kHopperVariants, static_cast<int>(sizeof(kHopperVariants) / sizeof(VariantDesc))};
}

}  // namespace sdmpi::cuda::detail
