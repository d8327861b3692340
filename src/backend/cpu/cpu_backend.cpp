// The CPU backend: float32 on the host, the reference every other backend is checked against and
// the fallback for CPU-only partitions.
//
// This file owns memory and dispatches each op, whose contract the shared code has checked
// (src/core/backend.cpp); the arithmetic lives in the kernels (cpu_kernels.h, cpu_gemm.h).
//
// Batch invariance (product contract, docs/design.md §3): the result for batch item i is bit-identical
// whatever the batch size, the other items and the thread count. The kernels get it by
//   - never mixing items: every product is per item (linear on [B, N, K] is B products of N rows;
//     on a rank-2 [M, K] input every row is its own item), norms gather statistics per item;
//   - cutting each item's work by rules that read the shapes only, with single-threaded BLAS
//     calls per tile (cpu_gemm.h explains why OpenBLAS's own splitting cannot be trusted);
//   - reductions (norm statistics, softmax sums) added in a fixed order inside one thread.
// tests/unit/cpu_backend_test.cpp checks it op by op against batches of 1 and 3 and 1/2/3 threads.
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_memory.h"
#include "backend/cpu/cpu_simd.h"
#include "sdmpi/backend.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace {

// The contracts (shapes, devices, matching dtypes) were checked before dispatch
// (src/core/backend.cpp); what is the CPU's own is that it computes in F32 only.
const float* input(const Tensor& t, const char* op, const char* arg) {
  if (t.dtype() != DType::F32)
    throw Error(std::string("cpu backend: ") + op + ": " + arg + " must be F32, got " + t.describe());
  return t.f32();
}

const float* optional_input(const Tensor* t, const char* op, const char* arg) {
  return t ? input(*t, op, arg) : nullptr;
}

// Freed op outputs kept for reuse: an eighth of the machine's memory, at most 4 GiB.
size_t pool_cap_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  size_t phys = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  return std::min<size_t>(phys / 8, size_t{4} << 30);
}

// The kept derived weights (cpu_memory.h: Winograd's transforms, the GEMM's packed panels): what
// the caller allows (-1: a quarter of the memory available now), at most 8 GiB or
// SDMPI_CPU_WINOGRAD_CACHE_MB. (SD 1.5 at 256×256 keeps about
// 2.9 GB, UNet and VAE; at 512×512 about 5 GB by the layers' sizes.)
int64_t kept_weights_budget(int64_t requested) {
  int64_t cap = int64_t{8} << 30;
  if (const char* env = std::getenv("SDMPI_CPU_WINOGRAD_CACHE_MB")) {
    char* end = nullptr;
    const long long mb = std::strtoll(env, &end, 10);
    if (!*env || *end || mb < 0)
      throw InputError(std::string("SDMPI_CPU_WINOGRAD_CACHE_MB=") + env + ": expected a number of MiB (0: keep none)");
    cap = std::min<int64_t>(mb, int64_t{1} << 40) << 20;
  }
  if (requested < 0) {
    const int64_t available = host_memory_available();
    requested = available > 0 ? available / 4 : 0;
  }
  return std::min(requested, cap);
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, int64_t winograd_cache_bytes)
      : threads_(threads > 0 ? threads : std::max(1, omp_get_max_threads())),
        pool_(std::make_shared<cpu::HostBlockPool>(pool_cap_bytes())),
        kept_weights_(kept_weights_budget(winograd_cache_bytes)) {
    cpu::set_blas_single_threaded();
    // A bad SDMPI_CPU_GEMM / SDMPI_CPU_CONV is reported here, once, before any work.
    cpu::gemm_engine();
    cpu::conv_mode_name();
  }

  std::string name() const override {
    return "cpu (" + std::to_string(threads_) + (threads_ == 1 ? " thread, " : " threads, ") +
           cpu::gemm_library_name() + ", " + cpu::conv_mode_name() + kept_weights_note() + ", " +
           cpu::simd_isa_name() +
           bf16_note() + ")";
  }
  Device device() const override { return Device::CPU; }
  // "; AVX512-BF16 unused (float32)" where the CPU has bfloat16 matrix units (cpu_simd.h).
  static std::string bf16_note() {
    const std::string units = cpu::bf16_units_name();
    return units.empty() ? "" : "; " + units + " unused (float32)";
  }
  // " (transformed and packed weights kept up to 2.0 GiB)" when the budget allows any
  // (KeptWeightCache: Winograd's transforms, the GEMM's packed panels on our engine).
  std::string kept_weights_note() const {
    const bool transformed = cpu::winograd_enabled(), packed = cpu::gemm_engine() == cpu::GemmEngine::Builtin;
    if (kept_weights_.budget() <= 0 || (!transformed && !packed)) return "";
    char buf[96];
    std::snprintf(buf, sizeof buf, " (%s weights kept up to %.1f GiB)",
                  transformed && packed ? "transformed and packed" : transformed ? "transformed" : "packed",
                  static_cast<double>(kept_weights_.budget()) / (1 << 30));
    return buf;
  }
  DType compute_dtype() const override { return DType::F32; }

  // ---- memory ---------------------------------------------------------------------------------
 protected:
  Tensor do_empty(const Shape& shape, DType dtype) override { return pool_->tensor(shape, dtype); }

  Tensor do_from_host(const float* data, const Shape& shape) override {
    Tensor t = pool_->tensor(shape);
    if (t.numel() > 0) std::memcpy(t.raw(), data, t.nbytes());
    return t;
  }

  std::vector<float> do_to_host(const Tensor& t) override {
    std::vector<float> out(static_cast<size_t>(t.numel()));
    if (!out.empty()) convert_to_f32(t.dtype(), t.raw(), out.data(), out.size());
    return out;
  }

  Tensor do_cast(const Tensor& x, DType dtype) override {
    Tensor y = pool_->tensor(x.shape(), dtype);
    const size_t n = static_cast<size_t>(x.numel());
    if (n == 0) return y;
    if (dtype == DType::F32) {
      convert_to_f32(x.dtype(), x.raw(), y.f32(), n);
    } else {  // through float32, which holds every F16 and BF16 value exactly
      std::vector<float> wide(n);
      convert_to_f32(x.dtype(), x.raw(), wide.data(), n);
      convert_from_f32(dtype, wide.data(), y.raw(), n);
    }
    return y;
  }

  Tensor do_upload_weight(const WeightView& w, WeightKind, const Shape& layout, DType) override {  // always F32
    const size_t n = static_cast<size_t>(shape_numel(layout));
    // In place, no copy: float32 bytes already in our layout (anything but a k×k convolution in
    // PyTorch's order) whose owner vouches that they stay unchanged (a node's shared weights; a
    // file mapped with --map-weights). The tensor's storage keeps the owner alive.
    const bool same_layout = w.backend_layout || w.shape.size() != 4 || w.shape[2] * w.shape[3] == 1;
    if (n > 0 && w.dtype == DType::F32 && same_layout && w.keep_alive &&
        reinterpret_cast<uintptr_t>(w.data) % alignof(float) == 0)
      return Tensor(std::make_shared<cpu::BorrowedWeightStorage>(w.data, n * sizeof(float), w.keep_alive), layout,
                    DType::F32);
    Tensor t(std::make_shared<cpu::OwnedWeightStorage>(n * sizeof(float)), layout, DType::F32);
    if (n == 0) return t;
    // Rows of the first dimension in parallel chunks of about 1 Mi elements: the F16/BF16 → F32
    // conversion (and the OIHW → OHWI permutation) dominate model load. Each thread first-touches
    // the pages it writes.
    const int64_t rows = w.shape.empty() ? 1 : w.shape[0];
    const size_t per_row = n / static_cast<size_t>(rows);
    const int64_t rows_per_chunk = std::max<int64_t>(1, static_cast<int64_t>((size_t{1} << 20) / std::max<size_t>(per_row, 1)));
    const int64_t chunks = (rows + rows_per_chunk - 1) / rows_per_chunk;
#pragma omp parallel for num_threads(threads_) schedule(dynamic, 1) if (threads_ > 1 && chunks > 1)
    for (int64_t c = 0; c < chunks; ++c)
      convert_weight_rows(w, DType::F32, t.raw(), c * rows_per_chunk, std::min(rows, (c + 1) * rows_per_chunk));
    return t;
  }

  // ---- matrix products and convolutions -------------------------------------------------------
  // The kept packed panels of weight w ([parts·N, K]) for a product of `rows` (merged) rows that would
  // pack W on the call, else null (also past the budget): the same bits either way. Alternating
  // call by call on the Emerald Rapids VM (2 threads, W from DRAM), packed in advance against per
  // call: the UNet's 2048-row products at 256² 1-2% faster, its 512-row ones 3-5%.
  const float* kept_panels(const Tensor& w, int64_t rows, int64_t N, int64_t K, int parts) {
    if (!cpu::gemm_packs_weights_per_call(rows, N, K)) return nullptr;
    return kept_weights_.gemm_panels(w, parts);
  }

  Tensor do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual,
                   const Shape& out_shape) override {
    const char* op = "linear";
    const float* xp = input(x, op, "x");
    const float* wp = input(w, op, "weight");
    const float* bp = optional_input(bias, op, "bias");
    const float* rp = optional_input(residual, op, "residual");
    const int64_t K = w.dim(1), N = w.dim(0);
    // Items: the first dimension of a rank ≥ 3 input; each row of a rank-2 input.
    const int64_t rows_total = K > 0 ? x.numel() / K : shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    const int64_t items = x.rank() >= 3 ? x.dim(0) : rows_total;
    const int64_t rows = items > 0 ? rows_total / items : 0;
    Tensor y = pool_->tensor(out_shape);
    cpu::linear_rows(xp, items, rows, K, wp, N, bp, rp, y.f32(), threads_, kept_panels(w, items * rows, N, K, 1));
    return y;
  }

  Tensor do_linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias, const Shape& linear_shape,
                         const Shape& out_shape) override {
    // Fused on our GEMM only: its bits do not depend on the columns a call covers, so the fused op
    // gives linear-then-geglu's bits; OpenBLAS's may (here N = C instead of 2C), so with it the two
    // ops run as before and every path keeps the same bits (PipelineGraphPath's tests).
    if (cpu::gemm_engine() != cpu::GemmEngine::Builtin)
      return Backend::do_linear_geglu(x, w, bias, linear_shape, out_shape);
    const char* op = "linear_geglu";
    const float* xp = input(x, op, "x");
    const float* wp = input(w, op, "weight");
    const float* bp = optional_input(bias, op, "bias");
    const int64_t K = w.dim(1), C = w.dim(0) / 2;
    const int64_t rows_total = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    const int64_t items = x.rank() >= 3 ? x.dim(0) : rows_total;
    const int64_t rows = items > 0 ? rows_total / items : 0;
    Tensor y = pool_->tensor(out_shape);
    if (y.numel() == 0) return y;
    Tensor gate = pool_->tensor(out_shape);
    cpu::linear_geglu_rows(xp, items, rows, K, wp, C, bp, gate.f32(), y.f32(), threads_,
                           kept_panels(w, items * rows, C, K, 2));
    return y;
  }

  Tensor do_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                   const Tensor* residual, const Shape& out_shape) override {
    const char* op = "conv2d";
    const float* xp = input(x, op, "x");
    const float* wp = input(w, op, "weight");
    const float* bp = optional_input(bias, op, "bias");
    const float* rp = optional_input(residual, op, "residual");
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3);
    const int64_t Cout = w.dim(0), KH = w.dim(1), KW = w.dim(2);
    Tensor y = pool_->tensor(out_shape);
    const int m = cpu::winograd_plan(out_shape[1], out_shape[2], Cin, Cout, KH, KW, stride);
    const float* winograd_w =
        m ? kept_weights_.winograd(w, m, cpu::winograd_kept_packed(m, B, out_shape[1], out_shape[2], Cin, Cout), threads_)
          : nullptr;
    const float* w_packed = m ? nullptr : kept_panels(w, B * out_shape[1] * out_shape[2], Cout, KH * KW * Cin, 1);
    cpu::conv2d_nhwc(xp, B, H, W, Cin, wp, Cout, KH, KW, stride, pad, bp, rp, y.f32(), out_shape[1], out_shape[2],
                     threads_, winograd_w, w_packed);
    return y;
  }

  // ---- normalisation ----------------------------------------------------------------------------
  Tensor do_group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                       bool silu) override {
    const char* op = "group_norm";
    const float* xp = input(x, op, "x");
    const float* gp = input(gamma, op, "gamma");
    const float* bp = input(beta, op, "beta");
    const int64_t B = x.dim(0), C = x.dim(-1);
    const int64_t HW = B * C > 0 ? x.numel() / (B * C) : 0;
    Tensor y = pool_->tensor(x.shape());
    if (x.numel() > 0) cpu::group_norm_nhwc(xp, B, HW, C, groups, gp, bp, eps, silu, y.f32(), threads_);
    return y;
  }

  Tensor do_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override {
    const char* op = "layer_norm";
    const float* xp = input(x, op, "x");
    const float* gp = input(gamma, op, "gamma");
    const float* bp = input(beta, op, "beta");
    const int64_t C = x.dim(-1);
    Tensor y = pool_->tensor(x.shape());
    if (x.numel() > 0) cpu::layer_norm_rows(xp, x.numel() / C, C, gp, bp, eps, y.f32(), threads_);
    return y;
  }

  // ---- attention --------------------------------------------------------------------------------
  Tensor do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override {
    const char* op = "attention";
    const float* qp = input(q, op, "q");
    const float* kp = input(k, op, "k");
    const float* vp = input(v, op, "v");
    const int64_t B = q.dim(0), Nq = q.dim(1), C = q.dim(2), Nk = k.dim(1);
    Tensor y = pool_->tensor(q.shape());
    if (y.numel() > 0) cpu::attention_mh(qp, kp, vp, B, Nq, Nk, heads, C / heads, causal, y.f32(), threads_);
    return y;
  }

  // ---- activations and elementwise glue -----------------------------------------------------------
  Tensor do_activation(const Tensor& x, Activation act) override {
    const float* xp = input(x, "activation", "x");
    Tensor y = pool_->tensor(x.shape());
    cpu::activation_inplace(act, xp, y.f32(), x.numel(), threads_);
    return y;
  }

  Tensor do_geglu(const Tensor& x, const Shape& out_shape) override {
    const float* xp = input(x, "geglu", "x");
    const int64_t C = out_shape.back();
    Tensor y = pool_->tensor(out_shape);
    if (y.numel() > 0) cpu::geglu_rows(xp, y.f32(), y.numel() / C, C, threads_);
    return y;
  }

  Tensor do_binary(BinaryOp bop, const Tensor& a, const Tensor& b) override {
    const float* ap = input(a, "binary", "a");
    const float* bp = input(b, "binary", "b");
    Tensor y = pool_->tensor(a.shape());
    cpu::binary_op(bop, ap, bp, y.f32(), a.numel(), threads_);
    return y;
  }

  Tensor do_binary_scalar(BinaryOp bop, const Tensor& a, float s, bool scalar_first) override {
    const float* ap = input(a, "binary_scalar", "a");
    Tensor y = pool_->tensor(a.shape());
    cpu::binary_scalar_op(bop, ap, s, scalar_first, y.f32(), a.numel(), threads_);
    return y;
  }

  Tensor do_add_batch_channel(const Tensor& x, const Tensor& t) override {
    const float* xp = input(x, "add_batch_channel", "x");
    const float* tp = input(t, "add_batch_channel", "t");
    const int64_t B = x.dim(0), C = x.dim(-1);
    Tensor y = pool_->tensor(x.shape());
    if (y.numel() > 0) cpu::add_batch_channel_op(xp, tp, y.f32(), B, x.numel() / (B * C), C, threads_);
    return y;
  }

  Tensor do_clamp(const Tensor& x, float lo, float hi) override {
    const float* xp = input(x, "clamp", "x");
    Tensor y = pool_->tensor(x.shape());
    cpu::clamp_op(xp, y.f32(), x.numel(), lo, hi, threads_);
    return y;
  }

  // ---- shape ops ------------------------------------------------------------------------------------
  Tensor do_upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) override {
    const float* xp = input(x, "upsample_nearest", "x");
    Tensor y = pool_->tensor({x.dim(0), out_h, out_w, x.dim(3)});
    cpu::upsample_nearest_nhwc(xp, x.dim(0), x.dim(1), x.dim(2), x.dim(3), out_h, out_w, y.f32(), threads_);
    return y;
  }

  Tensor do_pad2d(const Tensor& x, int top, int bottom, int left, int right, const Shape& out_shape) override {
    const float* xp = input(x, "pad2d", "x");
    Tensor y = pool_->tensor(out_shape);
    if (y.numel() > 0)
      cpu::pad2d_nhwc(xp, x.dim(0), x.dim(1), x.dim(2), x.dim(3), top, bottom, left, right, y.f32(), threads_);
    return y;
  }

  Tensor do_concat_channels(const Tensor& a, const Tensor& b, const Shape& out_shape) override {
    const float* ap = input(a, "concat_channels", "a");
    const float* bp = input(b, "concat_channels", "b");
    Tensor y = pool_->tensor(out_shape);
    const int64_t rows = shape_numel(Shape(a.shape().begin(), a.shape().end() - 1));
    if (y.numel() > 0) cpu::concat_rows(ap, a.dim(-1), bp, b.dim(-1), y.f32(), rows, threads_);
    return y;
  }

  Tensor do_concat_batch(const std::vector<Tensor>& parts, const Shape& out_shape) override {
    Tensor y = pool_->tensor(out_shape);
    float* dst = y.f32();
    for (const Tensor& p : parts) {
      cpu::copy_floats(input(p, "concat_batch", "part"), dst, p.numel(), threads_);
      dst += p.numel();
    }
    return y;
  }

  Tensor do_embedding(const std::vector<int32_t>& ids, const Tensor& table) override {
    const float* tp = input(table, "embedding", "table");
    const int64_t C = table.dim(1);
    Tensor y = pool_->tensor({static_cast<int64_t>(ids.size()), C});
    for (size_t i = 0; i < ids.size(); ++i)
      std::memcpy(y.f32() + static_cast<int64_t>(i) * C, tp + ids[i] * C, static_cast<size_t>(C) * sizeof(float));
    return y;
  }

  Tensor do_copy(const Tensor& x) override {
    Tensor y = pool_->tensor(x.shape(), x.dtype());
    if (x.dtype() == DType::F32) cpu::copy_floats(x.f32(), y.f32(), x.numel(), threads_);
    else std::memcpy(y.raw(), x.raw(), x.nbytes());
    return y;
  }

 private:
  int threads_;
  std::shared_ptr<cpu::HostBlockPool> pool_;
  cpu::KeptWeightCache kept_weights_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads, int64_t winograd_cache_bytes) {
  return std::make_unique<CpuBackend>(threads, winograd_cache_bytes);
}

}  // namespace sdmpi
