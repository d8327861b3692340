// Internals shared by the attention kernels (kernels/attention*.cu); not part of the entry point.
//
// Each kernel file contributes a table of compiled variants (VariantDesc); attention.cu validates
// a call, resolves its strides into LaunchArgs and picks one variant from the tables. The device
// helpers below wrap the few PTX instructions the tensor-core kernels use (ldmatrix, mma.sync,
// cp.async, ex2); their register layouts are spelled out where the kernels use them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "attention.cuh"

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif

namespace sdmpi::cuda::detail {

// AttentionParams with every stride resolved, in elements.
struct LaunchArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  int64_t q_row, k_row, v_row, out_row;
  int64_t q_batch, k_batch, v_batch, out_batch;
  int batch, heads, seq_q, seq_kv, head_dim;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e): the kernels compute exp(x) as exp2(x * log2 e)
  int causal;
};

// One compiled kernel configuration.
// Within a table, the order is the order of preference (see choose_variant in attention.cu).
struct VariantDesc {
  AttentionKernel kernel;
  DType dtype;
  int head_dim;        // the head dim it computes (0: any)
  int max_seq_kv;      // longest key sequence it takes (0: any)
  int min_sm;          // lowest compute capability (major*10 + minor) it runs on
  int pick_min_sm;     // attention_forward picks it only on devices with
  int pick_max_sm;     //   pick_min_sm <= compute capability <= pick_max_sm
  int rows_per_block;  // query rows per thread block
  int threads;         // per block
  size_t smem_bytes;   // dynamic shared memory per block
  const char* name;
  cudaError_t (*launch)(const LaunchArgs&, cudaStream_t);
};

struct VariantTable {
  const VariantDesc* begin;
  int count;
};

VariantTable reference_variants();
VariantTable flash_variants();
VariantTable wide_variants();
VariantTable hopper_variants();  // kernels/attention_hopper.cu (sm_90a)
// Whether the current device loaded the Hopper kernel's sm_90a machine code (not the stub every
// other architecture gets). Only asked on compute capability 9.0.
bool hopper_kernel_available();

// Raises a kernel's dynamic shared memory limit to `bytes` on the current device, once per device
// (`done` remembers which devices; thread-safe, idempotent).
cudaError_t allow_dynamic_smem(const void* kernel, size_t bytes,
                               std::atomic<unsigned long long>* done);

#ifdef __CUDACC__

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global → shared, asynchronously; zero-fills the destination when !valid (src unread).
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ldmatrix: lanes 8i..8i+7 give the row addresses of 8×8 matrix i (16 bytes per row); register i
// receives matrix i, lane l holding row l/4, columns 2(l%4) and 2(l%4)+1. With .trans, lane l holds
// rows 2(l%4) and 2(l%4)+1 of column l/4 instead.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x2(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x2_trans(uint32_t (&r)[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(p))
               : "memory");
}

// D (16×8, fp32) += A (16×16) · B (16×8). Per lane (g = lane/4, t = lane%4):
//   a[0]: A[g][2t..2t+1]   a[1]: A[g+8][2t..2t+1]   a[2]: A[g][2t+8..]   a[3]: A[g+8][2t+8..]
//   b0: B[2t..2t+1][g]     b1: B[2t+8..2t+9][g]
//   c[0], c[1]: D[g][2t], D[g][2t+1]                 c[2], c[3]: D[g+8][2t], D[g+8][2t+1]
// The lower 16 bits of each register hold the lower column (A) or row (B) index.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D (16×8) += A (16×8) · B (8×8): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], b = B[2t..2t+1][g].
// Used for the last 8 channels of head dim 40 and 80·k+8, so no k-step is padded.
template <typename T>
__device__ __forceinline__ void mma_1688(float (&c)[4], const uint32_t (&a)[2], uint32_t b);
template <>
__device__ __forceinline__ void mma_1688<__half>(float (&c)[4], const uint32_t (&a)[2],
                                                 uint32_t b) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(b));
}
template <>
__device__ __forceinline__ void mma_1688<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[2],
                                                        uint32_t b) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(b));
}

// Two floats → one register of two 16-bit values, `lo` in the lower half (round to nearest even).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// 2^x on the special-function unit (relative error ~2^-22; 2^-inf = +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Shared-memory row stride (elements) for rows of d 16-bit values: an odd number of 16-byte
// chunks, so the 8 row addresses of one ldmatrix hit 8 different 16-byte bank groups.
__host__ __device__ constexpr int smem_row_stride(int d) { return (d / 8) % 2 == 0 ? d + 8 : d; }

// Copies `ROWS` rows of CHUNKS×16 bytes from global (row stride g_stride elements) into shared
// memory (row stride LDS elements) with cp.async; rows >= rows_valid are zero-filled, so padded
// keys and values are finite zeros, never stale data.
template <int ROWS, int CHUNKS, int LDS, int THREADS, typename T>
__device__ __forceinline__ void copy_rows_async(T* smem, const T* gmem, int64_t g_stride,
                                                int rows_valid, int tid) {
  constexpr int kTotal = ROWS * CHUNKS;
#pragma unroll
  for (int i = 0; i < (kTotal + THREADS - 1) / THREADS; ++i) {
    const int c = tid + i * THREADS;
    if (kTotal % THREADS == 0 || c < kTotal) {
      const int r = c / CHUNKS;
      const int ch = c - r * CHUNKS;
      const bool valid = r < rows_valid;
      const T* src = gmem + (valid ? r * g_stride : int64_t{0}) + ch * 8;
      cp_async_16(smem + r * LDS + ch * 8, src, valid);
    }
  }
}

#endif  // __CUDACC__

}  // namespace sdmpi::cuda::detail
