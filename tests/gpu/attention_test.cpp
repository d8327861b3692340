// Attention kernels (kernels/attention*.cu) against a double-precision CPU reference.
//
// Every shape Stable Diffusion uses (UNet self-attention at 64²…8² latents with head dims 40/80/160
// and 64, cross-attention to 77 tokens, the VAE's 512-wide single head, CLIP's causal 77 tokens) and
// odd ones (sequences off the tile sizes, one query or one key, batch×heads = 1, huge logits,
// causal with Nq != Nk, fused-QKV strides, padded output rows, misaligned pointers, head dims no
// tensor-core variant takes) run through every compiled variant that accepts them, on fresh random
// inputs. Each run: the output is poisoned with NaN first; afterwards every element must be
// written and finite, padding between output rows untouched, and the rows match the reference
// within 1e-2 relative (fp16/bf16; whole output and each row). Large shapes are referenced on a
// sample of rows (tile boundaries, the last rows, random ones) on the CPU, and in full against the
// GPU Reference kernel, which is itself checked against the CPU on the same rows. The automatic
// choice must be a tensor-core variant where one applies, and bitwise repeatable.
//
// Without a GPU (this machine, CI) the GPU tests skip with a message; the parameter validation
// tests run everywhere.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "attention.cuh"
#include "gpu/attention_reference.h"
#include "sdmpi/dtype.h"

namespace {

using sdmpi::DType;
using sdmpi::cuda::AttentionKernel;
using sdmpi::cuda::AttentionParams;
using sdmpi::cuda::AttentionVariant;

const std::string& gpu_unavailable_reason() {
  static const std::string reason = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    if (count == 0) return std::string("cudaGetDeviceCount found 0 devices");
    return std::string();
  }();
  return reason;
}

#define SKIP_WITHOUT_GPU()                                                           \
  do {                                                                               \
    if (!gpu_unavailable_reason().empty())                                           \
      GTEST_SKIP() << "attention GPU test skipped, no usable CUDA GPU ("             \
                   << gpu_unavailable_reason() << ")";                               \
  } while (0)

#define ASSERT_CUDA(expr)                                                            \
  do {                                                                               \
    const cudaError_t err_ = (expr);                                                 \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_);       \
  } while (0)

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr, bytes) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr != nullptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

float round_to(DType t, float x) {
  switch (t) {
    case DType::F16: return sdmpi::half_to_float(sdmpi::float_to_half(x));
    case DType::BF16: return sdmpi::bf16_to_float(sdmpi::float_to_bf16(x));
    case DType::F32: return x;
  }
  return x;
}

struct Shape {
  std::string name;
  int batch, heads, seq_q, seq_kv, head_dim;
  bool causal = false;
  float q_amp = 1.0f;      // q ~ N(0, q_amp²): large values give huge logits
  bool fused_qkv = false;  // q, k, v are slices of one [B, N, 3·heads·d] buffer (seq_q == seq_kv)
  int out_pad = 0;         // extra elements after each output row, which must stay untouched
  int misalign = 0;        // q starts this many elements past an aligned address
};

Shape make(std::string name, int b, int h, int nq, int nk, int d) {
  return Shape{std::move(name), b, h, nq, nk, d};
}

std::vector<Shape> all_shapes() {
  std::vector<Shape> s;
  // SD 1.5 UNet, CFG batch 2, 8 heads: self-attention per latent size, cross-attention to 77.
  s.push_back(make("sd15_self_64x64_d40", 2, 8, 4096, 4096, 40));
  s.push_back(make("sd15_self_32x32_d80", 2, 8, 1024, 1024, 80));
  s.push_back(make("sd15_self_16x16_d160", 2, 8, 256, 256, 160));
  s.push_back(make("sd15_self_8x8_d160", 2, 8, 64, 64, 160));
  s.push_back(make("sd15_cross_64x64_d40", 2, 8, 4096, 77, 40));
  s.push_back(make("sd15_cross_32x32_d80", 2, 8, 1024, 77, 80));
  s.push_back(make("sd15_cross_16x16_d160", 2, 8, 256, 77, 160));
  s.push_back(make("sd15_cross_8x8_d160", 2, 8, 64, 77, 160));
  // SD 2.x / SDXL: head dim 64.
  s.push_back(make("sdxl_self_64x64_d64", 2, 10, 4096, 4096, 64));
  s.push_back(make("sdxl_self_32x32_d64", 2, 20, 1024, 1024, 64));
  s.push_back(make("sdxl_cross_64x64_d64", 2, 10, 4096, 77, 64));
  // VAE mid-block: one head of 512 channels over 64×64 positions.
  s.push_back(make("vae_mid_d512", 1, 1, 4096, 4096, 512));
  // CLIP text encoder: causal, 77 tokens, 12 heads of 64, cond + uncond.
  Shape clip = make("clip_causal_77_d64", 2, 12, 77, 77, 64);
  clip.causal = true;
  s.push_back(clip);
  // Odd sequences, batch×heads = 1, single rows and keys.
  s.push_back(make("one_query_one_key_d40", 1, 1, 1, 1, 40));
  s.push_back(make("odd_100x333_d40", 1, 1, 100, 333, 40));
  s.push_back(make("odd_333x100_d80", 1, 1, 333, 100, 80));
  s.push_back(make("odd_257x129_d160", 1, 1, 257, 129, 160));
  s.push_back(make("odd_129x1000_d64", 1, 3, 129, 1000, 64));
  s.push_back(make("short_kv_80_d40", 2, 2, 200, 80, 40));   // the longest one-tile key sequence
  s.push_back(make("short_kv_81_d40", 2, 2, 200, 81, 40));   // one key more: streamed tiles
  s.push_back(make("short_kv_1_d80", 1, 2, 150, 1, 80));
  s.push_back(make("short_kv_17_d160", 1, 2, 70, 17, 160));
  s.push_back(make("wide_odd_100x77_d512", 2, 1, 100, 77, 512));
  s.push_back(make("wide_odd_33x300_d512", 1, 2, 33, 300, 512));
  // Huge logits: softmax must subtract the max (no overflow, no NaN).
  Shape big = make("large_logits_d40", 1, 2, 300, 500, 40);
  big.q_amp = 300.0f;
  s.push_back(big);
  Shape big_short = make("large_logits_short_kv_d80", 1, 2, 130, 77, 80);
  big_short.q_amp = 100.0f;
  s.push_back(big_short);
  Shape big_wide = make("large_logits_d512", 1, 1, 70, 90, 512);
  big_wide.q_amp = 40.0f;
  s.push_back(big_wide);
  // Causal with Nq != Nk (top-left aligned), through streamed tiles, the short-KV and wide kernels.
  for (Shape c : {make("causal_300x200_d40", 2, 2, 300, 200, 40),
                  make("causal_100x300_d64", 1, 2, 100, 300, 64),
                  make("causal_150x150_d80", 1, 1, 150, 150, 80),
                  make("causal_90x77_d160", 1, 2, 90, 77, 160),
                  make("causal_100x100_d512", 1, 1, 100, 100, 512)}) {
    c.causal = true;
    s.push_back(c);
  }
  // Fused QKV projection buffer and padded output rows.
  Shape fused = make("fused_qkv_1000_d40", 2, 8, 1000, 1000, 40);
  fused.fused_qkv = true;
  fused.out_pad = 8;
  s.push_back(fused);
  Shape fused80 = make("fused_qkv_300_d80_causal", 1, 4, 300, 300, 80);
  fused80.fused_qkv = true;
  fused80.causal = true;
  s.push_back(fused80);
  // Misaligned q: only the Reference kernel may take it.
  Shape mis = make("misaligned_q_d40", 1, 2, 70, 90, 40);
  mis.misalign = 1;
  s.push_back(mis);
  // Head dims without a tensor-core variant (Reference), including ones not a multiple of 8.
  s.push_back(make("generic_d3", 1, 2, 40, 50, 3));
  s.push_back(make("generic_d20", 2, 1, 65, 33, 20));
  s.push_back(make("generic_d96", 1, 2, 130, 140, 96));
  s.push_back(make("generic_d128", 1, 1, 64, 300, 128));
  s.push_back(make("generic_d1000", 1, 1, 20, 40, 1000));
  return s;
}

// Rows referenced on the CPU: all of them when the shape is small, else tile boundaries, the
// last rows and random ones.
std::vector<int> rows_to_check(int seq_q, double work_per_row, std::mt19937& rng) {
  std::vector<int> rows;
  if (seq_q * work_per_row <= 2e8) {
    for (int i = 0; i < seq_q; ++i) rows.push_back(i);
    return rows;
  }
  std::set<int> picked;
  for (int i : {0, 1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 63, 64, 65, 79, 80, 95, 96, 127, 128,
                129, 255, 256, 511, 512, 1023, 1024})
    if (i < seq_q) picked.insert(i);
  for (int i : {seq_q - 1, seq_q - 2, seq_q - 17, seq_q - 64, seq_q - 65})
    if (i >= 0) picked.insert(i);
  std::uniform_int_distribution<int> any(0, seq_q - 1);
  while (picked.size() < 48 && static_cast<int>(picked.size()) < seq_q) picked.insert(any(rng));
  rows.assign(picked.begin(), picked.end());
  return rows;
}

// Errors of `got` against `want` over the checked rows: the whole (‖got − want‖ / ‖want‖) and the
// worst row, each row measured against max(its norm, a quarter of the mean row norm) so rows that
// average to near zero do not turn rounding into a large relative error.
struct ErrorStats {
  double total = 0.0;
  double worst_row = 0.0;
  int worst_row_index = -1;
};

struct OutputView {
  const std::vector<float>* data;
  int64_t row, batch;  // element strides
};

ErrorStats compare_rows(const OutputView& got, const std::vector<std::vector<double>>& want,
                        const std::vector<int>& rows, int b, int head, int d) {
  ErrorStats e;
  double err2 = 0.0, ref2 = 0.0, mean_norm = 0.0;
  std::vector<double> row_err(rows.size()), row_ref(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const float* g = got.data->data() + b * got.batch + rows[r] * got.row + int64_t{head} * d;
    double re = 0.0, rr = 0.0;
    for (int c = 0; c < d; ++c) {
      const double diff = static_cast<double>(g[c]) - want[r][c];
      re += diff * diff;
      rr += want[r][c] * want[r][c];
    }
    row_err[r] = re;
    row_ref[r] = rr;
    err2 += re;
    ref2 += rr;
    mean_norm += std::sqrt(rr);
  }
  mean_norm /= static_cast<double>(rows.size());
  e.total = std::sqrt(err2 / std::max(ref2, 1e-300));
  for (size_t r = 0; r < rows.size(); ++r) {
    const double denom = std::max(std::sqrt(row_ref[r]), 0.25 * mean_norm);
    const double rel = std::isnan(row_err[r]) ? INFINITY : std::sqrt(row_err[r]) / denom;
    if (rel > e.worst_row || std::isnan(rel)) {
      e.worst_row = rel;
      e.worst_row_index = rows[r];
    }
  }
  if (std::isnan(e.total)) e.total = INFINITY;
  return e;
}

// One shape in one dtype: inputs on host (float copies of the exact device values) and device.
class AttentionCase {
 public:
  AttentionCase(const Shape& s, DType dt, uint32_t seed) : s_(s), dt_(dt), rng_(seed) {}

  void run() {
    const int W = s_.heads * s_.head_dim;
    const size_t es = sdmpi::dtype_size(dt_);
    // Host layout, in elements.
    int64_t q_row, k_row, v_row, q_batch, k_batch, v_batch, q_off, k_off, v_off, in_elems;
    if (s_.fused_qkv) {
      ASSERT_EQ(s_.seq_q, s_.seq_kv);
      q_row = k_row = v_row = 3 * int64_t{W};
      q_batch = k_batch = v_batch = s_.seq_q * q_row;
      q_off = 0;
      k_off = W;
      v_off = 2 * int64_t{W};
      in_elems = s_.batch * q_batch;
    } else {
      q_row = k_row = v_row = W;
      q_batch = int64_t{s_.seq_q} * W;
      k_batch = v_batch = int64_t{s_.seq_kv} * W;
      q_off = s_.misalign;
      const int64_t q_elems = (s_.misalign + s_.batch * q_batch + 7) / 8 * 8;
      k_off = q_elems;
      v_off = k_off + s_.batch * k_batch;
      in_elems = v_off + s_.batch * v_batch;
    }
    host_in_.assign(in_elems, 0.0f);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    auto fill = [&](int64_t off, int64_t row, int64_t batch, int seq, float amp) {
      for (int b = 0; b < s_.batch; ++b)
        for (int i = 0; i < seq; ++i)
          for (int c = 0; c < W; ++c)
            host_in_[off + b * batch + i * row + c] = round_to(dt_, amp * normal(rng_));
    };
    fill(q_off, q_row, q_batch, s_.seq_q, s_.q_amp);
    fill(k_off, k_row, k_batch, s_.seq_kv, 1.0f);
    fill(v_off, v_row, v_batch, s_.seq_kv, 1.0f);

    out_row_ = W + s_.out_pad;
    out_batch_ = int64_t{s_.seq_q} * out_row_;
    out_elems_ = s_.batch * out_batch_;

    DeviceBuffer d_in(in_elems * es), d_out(out_elems_ * es);
    ASSERT_NE(d_in.ptr, nullptr) << "cudaMalloc of " << in_elems * es << " bytes";
    ASSERT_NE(d_out.ptr, nullptr) << "cudaMalloc of " << out_elems_ * es << " bytes";
    std::vector<uint8_t> encoded(in_elems * es);
    sdmpi::convert_from_f32(dt_, host_in_.data(), encoded.data(), in_elems);
    ASSERT_CUDA(cudaMemcpy(d_in.ptr, encoded.data(), encoded.size(), cudaMemcpyHostToDevice));
    d_out_ = d_out.ptr;

    char* base = static_cast<char*>(d_in.ptr);
    p_.q = base + q_off * es;
    p_.k = base + k_off * es;
    p_.v = base + v_off * es;
    p_.out = d_out.ptr;
    p_.dtype = dt_;
    p_.batch = s_.batch;
    p_.heads = s_.heads;
    p_.seq_q = s_.seq_q;
    p_.seq_kv = s_.seq_kv;
    p_.head_dim = s_.head_dim;
    p_.q_row_stride = q_row;
    p_.k_row_stride = k_row;
    p_.v_row_stride = v_row;
    p_.out_row_stride = out_row_;
    p_.q_batch_stride = q_batch;
    p_.k_batch_stride = k_batch;
    p_.v_batch_stride = v_batch;
    p_.out_batch_stride = out_batch_;
    p_.causal = s_.causal;
    ASSERT_EQ(sdmpi::cuda::attention_validate(p_), "");

    ref_in_.q = host_in_.data() + q_off;
    ref_in_.k = host_in_.data() + k_off;
    ref_in_.v = host_in_.data() + v_off;
    ref_in_.q_row = q_row;
    ref_in_.k_row = k_row;
    ref_in_.v_row = v_row;
    ref_in_.q_batch = q_batch;
    ref_in_.k_batch = k_batch;
    ref_in_.v_batch = v_batch;
    ref_in_.seq_q = s_.seq_q;
    ref_in_.seq_kv = s_.seq_kv;
    ref_in_.head_dim = s_.head_dim;
    ref_in_.scale = 1.0 / std::sqrt(static_cast<double>(s_.head_dim));
    ref_in_.causal = s_.causal;
    check_all_variants();
  }

 private:
  // Poisons the output (all bits set: NaN in f16, bf16 and f32), runs, returns it as floats.
  void run_variant(int id, std::vector<float>* out) {
    const size_t bytes = out_elems_ * sdmpi::dtype_size(dt_);
    ASSERT_CUDA(cudaMemset(d_out_, 0xff, bytes));
    if (id < 0) {
      ASSERT_CUDA(sdmpi::cuda::attention_forward(p_, nullptr));
    } else {
      ASSERT_CUDA(sdmpi::cuda::attention_forward_variant(p_, id, nullptr));
    }
    ASSERT_CUDA(cudaDeviceSynchronize());
    std::vector<uint8_t> raw(bytes);
    ASSERT_CUDA(cudaMemcpy(raw.data(), d_out_, bytes, cudaMemcpyDeviceToHost));
    out->resize(out_elems_);
    sdmpi::convert_to_f32(dt_, raw.data(), out->data(), out_elems_);
  }

  void check_written(const std::vector<float>& out, const std::string& what) {
    const int W = s_.heads * s_.head_dim;
    int64_t unwritten = 0, touched_pad = 0;
    for (int b = 0; b < s_.batch; ++b)
      for (int i = 0; i < s_.seq_q; ++i) {
        const float* row = out.data() + b * out_batch_ + i * out_row_;
        for (int c = 0; c < W; ++c) unwritten += !std::isfinite(row[c]);
        for (int c = W; c < out_row_; ++c) touched_pad += !std::isnan(row[c]);
      }
    EXPECT_EQ(unwritten, 0) << what << ": outputs left NaN/inf (unwritten or overflowed)";
    EXPECT_EQ(touched_pad, 0) << what << ": wrote into the padding between output rows";
  }

  double tolerance() const { return dt_ == DType::F32 ? 1e-5 : 1e-2; }

  void check_all_variants() {
    const std::vector<AttentionVariant> variants = sdmpi::cuda::attention_variants(p_);
    const AttentionVariant chosen = sdmpi::cuda::attention_chosen_variant(p_);
    ASSERT_GE(chosen.id, 0) << "no variant chosen";
    const AttentionVariant* reference = nullptr;
    bool chosen_listed = false;
    for (const AttentionVariant& v : variants) {
      if (v.kernel == AttentionKernel::Reference) reference = &v;
      chosen_listed |= v.id == chosen.id;
    }
    ASSERT_NE(reference, nullptr) << "the Reference kernel must accept every valid call";
    ASSERT_TRUE(chosen_listed) << "chosen variant " << chosen.name << " is not in the list";
    // The shapes the models use must reach the tensor cores (no silent slow path) on the GPUs we
    // target (A100/H100-class shared memory); smaller GPUs may lack the memory for some variants.
    const int d = s_.head_dim;
    const bool tensor_core_shape = dt_ != DType::F32 && s_.misalign == 0 &&
                                   (d == 40 || d == 64 || d == 80 || d == 160 || d == 512);
    bool any_tensor_core = false;
    for (const AttentionVariant& v : variants)
      any_tensor_core |= v.kernel != AttentionKernel::Reference;
    int device = 0, smem_optin = 0;
    ASSERT_CUDA(cudaGetDevice(&device));
    ASSERT_CUDA(
        cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    if (tensor_core_shape && smem_optin >= 160 * 1024) {
      EXPECT_TRUE(any_tensor_core) << "no tensor-core variant accepts this shape";
    }
    if (tensor_core_shape && any_tensor_core) {
      EXPECT_NE(chosen.kernel, AttentionKernel::Reference) << "chose " << chosen.name;
    }
    if (!tensor_core_shape) {
      EXPECT_EQ(chosen.kernel, AttentionKernel::Reference) << "chose " << chosen.name;
    }

    // CPU reference rows for every (batch, head).
    std::mt19937 row_rng(1234 + s_.seq_q);
    const std::vector<int> rows = rows_to_check(
        s_.seq_q, double(s_.batch) * s_.heads * s_.seq_kv * s_.head_dim, row_rng);
    std::vector<std::vector<std::vector<double>>> cpu(s_.batch * s_.heads);
    for (int b = 0; b < s_.batch; ++b)
      for (int h = 0; h < s_.heads; ++h) {
        auto& mine = cpu[b * s_.heads + h];
        mine.assign(rows.size(), std::vector<double>(d));
        for (size_t r = 0; r < rows.size(); ++r)
          sdmpi::test::attention_reference_row(ref_in_, b, h, rows[r], mine[r].data());
      }

    // The GPU Reference kernel: against the CPU, then the full-output yardstick for the others.
    std::vector<float> gpu_ref;
    run_variant(reference->id, &gpu_ref);
    if (::testing::Test::HasFatalFailure()) return;
    std::vector<int> all_rows(s_.seq_q);
    for (int i = 0; i < s_.seq_q; ++i) all_rows[i] = i;
    std::vector<std::vector<std::vector<double>>> gpu_ref_rows(s_.batch * s_.heads);
    for (int b = 0; b < s_.batch; ++b)
      for (int h = 0; h < s_.heads; ++h) {
        auto& mine = gpu_ref_rows[b * s_.heads + h];
        mine.assign(s_.seq_q, std::vector<double>(d));
        for (int i = 0; i < s_.seq_q; ++i)
          for (int c = 0; c < d; ++c)
            mine[i][c] = gpu_ref[b * out_batch_ + i * out_row_ + int64_t{h} * d + c];
      }

    for (const AttentionVariant& v : variants) {
      SCOPED_TRACE(std::string("variant ") + v.name);
      std::vector<float> out;
      if (v.id == reference->id) {
        out = gpu_ref;
      } else {
        run_variant(v.id, &out);
        if (::testing::Test::HasFatalFailure()) return;
      }
      check_written(out, v.name);
      const OutputView view{&out, out_row_, out_batch_};
      for (int b = 0; b < s_.batch; ++b)
        for (int h = 0; h < s_.heads; ++h) {
          const ErrorStats vs_cpu = compare_rows(view, cpu[b * s_.heads + h], rows, b, h, d);
          EXPECT_LE(vs_cpu.total, tolerance()) << "vs CPU, batch " << b << " head " << h;
          EXPECT_LE(vs_cpu.worst_row, 2 * tolerance())
              << "vs CPU, batch " << b << " head " << h << " row " << vs_cpu.worst_row_index;
          if (v.id == reference->id) continue;
          const ErrorStats vs_gpu =
              compare_rows(view, gpu_ref_rows[b * s_.heads + h], all_rows, b, h, d);
          EXPECT_LE(vs_gpu.total, tolerance()) << "vs GPU Reference, batch " << b << " head " << h;
          EXPECT_LE(vs_gpu.worst_row, 2 * tolerance())
              << "vs GPU Reference, batch " << b << " head " << h << " row "
              << vs_gpu.worst_row_index;
        }
    }

    // attention_forward runs the chosen variant, bit for bit, every time.
    std::vector<float> first, second, direct;
    run_variant(-1, &first);
    run_variant(-1, &second);
    run_variant(chosen.id, &direct);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0)
        << "attention_forward is not repeatable (" << chosen.name << ")";
    EXPECT_EQ(std::memcmp(first.data(), direct.data(), first.size() * sizeof(float)), 0)
        << "attention_forward differs from its chosen variant " << chosen.name;
  }

  Shape s_;
  DType dt_;
  std::mt19937 rng_;
  std::vector<float> host_in_;
  sdmpi::test::AttentionRefInput ref_in_;
  AttentionParams p_;
  void* d_out_ = nullptr;
  int64_t out_row_ = 0, out_batch_ = 0, out_elems_ = 0;
};

struct CaseParam {
  Shape shape;
  DType dtype;
};

// Readable test listings (ctest shows parameters).
void PrintTo(const CaseParam& c, std::ostream* os) {
  *os << c.shape.name << " " << sdmpi::dtype_name(c.dtype);
}

class AttentionShapes : public ::testing::TestWithParam<CaseParam> {};

TEST_P(AttentionShapes, MatchesReference) {
  SKIP_WITHOUT_GPU();
  const CaseParam& c = GetParam();
  // A fresh seed per run: the kernels must compute the same function on any valid input.
  std::random_device entropy;
  const uint32_t seed = entropy();
  SCOPED_TRACE("seed " + std::to_string(seed));
  AttentionCase(c.shape, c.dtype, seed).run();
}

std::vector<CaseParam> all_cases() {
  std::vector<CaseParam> cases;
  for (const Shape& s : all_shapes()) {
    cases.push_back({s, DType::F16});
    cases.push_back({s, DType::BF16});
  }
  for (const char* name : {"clip_causal_77_d64", "odd_100x333_d40", "causal_300x200_d40",
                           "generic_d20", "sd15_cross_8x8_d160"})
    for (const Shape& s : all_shapes())
      if (s.name == name) cases.push_back({s, DType::F32});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Attention, AttentionShapes, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<CaseParam>& info) {
                           return info.param.shape.name + "_" +
                                  sdmpi::dtype_name(info.param.dtype);
                         });

// The call the CUDA backend makes inside a captured UNet step must capture and replay.
TEST(AttentionGraph, CapturesAndReplays) {
  SKIP_WITHOUT_GPU();
  const int B = 2, H = 8, N = 4096, D = 40, W = H * D;
  const size_t elems = size_t{B} * N * W;
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> host(3 * elems);
  for (float& x : host) x = round_to(DType::F16, normal(rng));
  std::vector<uint16_t> bits(host.size());
  sdmpi::convert_from_f32(DType::F16, host.data(), bits.data(), host.size());
  DeviceBuffer in(bits.size() * 2), out_eager(elems * 2), out_graph(elems * 2);
  ASSERT_NE(in.ptr, nullptr);
  ASSERT_NE(out_eager.ptr, nullptr);
  ASSERT_NE(out_graph.ptr, nullptr);
  ASSERT_CUDA(cudaMemcpy(in.ptr, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice));
  AttentionParams p;
  p.q = in.ptr;
  p.k = static_cast<uint16_t*>(in.ptr) + elems;
  p.v = static_cast<uint16_t*>(in.ptr) + 2 * elems;
  p.dtype = DType::F16;
  p.batch = B;
  p.heads = H;
  p.seq_q = p.seq_kv = N;
  p.head_dim = D;
  p.out = out_eager.ptr;
  ASSERT_CUDA(sdmpi::cuda::attention_forward(p, nullptr));
  ASSERT_CUDA(cudaDeviceSynchronize());

  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  ASSERT_CUDA(cudaMemsetAsync(out_graph.ptr, 0xff, elems * 2, stream));
  p.out = out_graph.ptr;
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const cudaError_t launched = sdmpi::cuda::attention_forward(p, stream);
  ASSERT_CUDA(cudaStreamEndCapture(stream, &graph));
  ASSERT_CUDA(launched);
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  ASSERT_CUDA(cudaGraphLaunch(exec, stream));
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  std::vector<uint16_t> eager(elems), replay(elems);
  ASSERT_CUDA(cudaMemcpy(eager.data(), out_eager.ptr, elems * 2, cudaMemcpyDeviceToHost));
  ASSERT_CUDA(cudaMemcpy(replay.data(), out_graph.ptr, elems * 2, cudaMemcpyDeviceToHost));
  EXPECT_EQ(eager, replay) << "graph replay differs from the eager call";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// ---- parameter validation: host only, runs without a GPU ------------------------------------------

AttentionParams valid_params() {
  static uint16_t dummy[8];
  AttentionParams p;
  p.q = p.k = p.v = dummy;
  p.out = dummy;
  p.dtype = DType::F16;
  p.batch = 2;
  p.heads = 8;
  p.seq_q = 4096;
  p.seq_kv = 77;
  p.head_dim = 40;
  return p;
}

TEST(AttentionValidate, AcceptsTheModelsCalls) {
  EXPECT_EQ(sdmpi::cuda::attention_validate(valid_params()), "");
  AttentionParams fused = valid_params();
  fused.seq_kv = fused.seq_q;
  fused.q_row_stride = fused.k_row_stride = fused.v_row_stride = 3 * 8 * 40;
  EXPECT_EQ(sdmpi::cuda::attention_validate(fused), "");
}

TEST(AttentionValidate, RejectsBadParamsWithOneLine) {
  struct Bad {
    const char* what;
    void (*edit)(AttentionParams&);
    const char* mentions;
  };
  const Bad bad[] = {
      {"null q", [](AttentionParams& p) { p.q = nullptr; }, "null"},
      {"null out", [](AttentionParams& p) { p.out = nullptr; }, "null"},
      {"zero batch", [](AttentionParams& p) { p.batch = 0; }, "batch = 0"},
      {"negative heads", [](AttentionParams& p) { p.heads = -1; }, "heads = -1"},
      {"zero seq_q", [](AttentionParams& p) { p.seq_q = 0; }, "seq_q = 0"},
      {"zero seq_kv", [](AttentionParams& p) { p.seq_kv = 0; }, "seq_kv = 0"},
      {"zero head_dim", [](AttentionParams& p) { p.head_dim = 0; }, "head_dim = 0"},
      {"huge head_dim", [](AttentionParams& p) { p.head_dim = 4096; }, "head_dim = 4096"},
      {"negative scale", [](AttentionParams& p) { p.scale = -1.0f; }, "scale"},
      {"nan scale", [](AttentionParams& p) { p.scale = NAN; }, "scale"},
      {"short row stride", [](AttentionParams& p) { p.k_row_stride = 100; }, "k row stride 100"},
      {"overlapping batches", [](AttentionParams& p) { p.out_batch_stride = 320; },
       "out batch stride 320"},
  };
  for (const Bad& b : bad) {
    AttentionParams p = valid_params();
    b.edit(p);
    const std::string message = sdmpi::cuda::attention_validate(p);
    EXPECT_NE(message.find(b.mentions), std::string::npos) << b.what << ": \"" << message << "\"";
    EXPECT_EQ(message.find('\n'), std::string::npos) << b.what;
    // attention_forward refuses before touching the device, so this holds without a GPU too.
    EXPECT_EQ(sdmpi::cuda::attention_forward(p, nullptr), cudaErrorInvalidValue) << b.what;
  }
}

}  // namespace
