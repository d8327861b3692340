// The CPU backend: float32 on the host, the reference every other backend is checked against and
// the fallback for CPU-only partitions.
//
// This file owns memory and checks every op's arguments (one-line sdmpi::Error naming the op, the
// argument and the shapes); the arithmetic lives in the kernels (cpu_kernels.h, cpu_gemm.h).
//
// Batch invariance (product contract, DESIGN.md §3): the result for batch item i is bit-identical
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
#include <cstring>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_memory.h"
#include "backend/cpu/cpu_simd.h"
#include "sdmpi/backend.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace {

[[noreturn]] void op_error(const char* op, const std::string& message) {
  throw Error(std::string("cpu backend: ") + op + ": " + message);
}

void require(bool ok, const char* op, const std::string& message) {
  if (!ok) op_error(op, message);
}

// Host float32 data of an argument, or an error naming it.
const float* input(const Tensor& t, const char* op, const char* arg) {
  require(t.defined(), op, std::string(arg) + " is undefined");
  require(t.device() == Device::CPU, op, std::string(arg) + " is not on the cpu: " + t.describe());
  require(t.dtype() == DType::F32, op, std::string(arg) + " must be F32, got " + t.describe());
  return t.f32();
}

const float* optional_input(const Tensor* t, const char* op, const char* arg) {
  return t ? input(*t, op, arg) : nullptr;
}

void require_shape(const Tensor& t, const Shape& expected, const char* op, const char* arg) {
  require(t.shape() == expected, op,
          std::string(arg) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(expected));
}

// Freed op outputs kept for reuse: an eighth of the machine's memory, at most 4 GiB.
size_t pool_cap_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  size_t phys = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  return std::min<size_t>(phys / 8, size_t{4} << 30);
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads)
      : threads_(threads > 0 ? threads : std::max(1, omp_get_max_threads())),
        pool_(std::make_shared<cpu::HostBlockPool>(pool_cap_bytes())) {
    cpu::set_blas_single_threaded();
  }

  std::string name() const override {
    return "cpu (" + std::to_string(threads_) + (threads_ == 1 ? " thread, " : " threads, ") +
           cpu::gemm_library_name() + ", " + cpu::simd_isa_name() + ")";
  }
  Device device() const override { return Device::CPU; }
  DType compute_dtype() const override { return DType::F32; }

  // ---- memory ---------------------------------------------------------------------------------
  Tensor empty(const Shape& shape, DType dtype) override { return pool_->tensor(shape, dtype); }

  Tensor from_host(const float* data, const Shape& shape) override {
    Tensor t = pool_->tensor(shape);
    if (t.numel() > 0) {
      require(data != nullptr, "from_host", "null data for " + shape_str(shape));
      std::memcpy(t.raw(), data, t.nbytes());
    }
    return t;
  }

  std::vector<float> to_host(const Tensor& t) override {
    require(t.defined(), "to_host", "tensor is undefined");
    require(t.device() == Device::CPU, "to_host", "tensor is not on the cpu: " + t.describe());
    std::vector<float> out(static_cast<size_t>(t.numel()));
    if (!out.empty()) convert_to_f32(t.dtype(), t.raw(), out.data(), out.size());
    return out;
  }

  Tensor upload_weight(const WeightView& w, WeightKind kind) override {
    const Shape& s = w.shape;
    auto bad = [&](const std::string& what) {
      throw InputError("weight '" + w.name + "': " + what + ", got shape " + shape_str(s));
    };
    Shape out_shape = s;
    switch (kind) {
      case WeightKind::Linear:
        // 1×1 convolution weights [out, in, 1, 1] also serve as linear weights (old VAE attention).
        if (s.size() == 4 && s[2] == 1 && s[3] == 1) out_shape = {s[0], s[1]};
        else if (s.size() != 2) bad("expected a linear weight [out, in]");
        break;
      case WeightKind::Conv:
        if (s.size() != 4) bad("expected a convolution weight [out, in, kh, kw]");
        out_shape = {s[0], s[2], s[3], s[1]};
        break;
      case WeightKind::Vector:
        if (s.size() != 1) bad("expected a vector [C]");
        break;
      case WeightKind::Embedding:
        if (s.size() != 2) bad("expected an embedding table [rows, C]");
        break;
    }
    Tensor t = Tensor::host(out_shape, DType::F32);
    const size_t n = static_cast<size_t>(t.numel());
    if (n == 0) return t;
    if (!w.data) throw InputError("weight '" + w.name + "': no data");
    if (kind != WeightKind::Conv) {
      // Large tables (GEGLU, embeddings) in parallel chunks: F16/BF16 → F32 dominates model load.
      const size_t chunk = size_t{1} << 20, chunks = (n + chunk - 1) / chunk;
      const size_t esize = dtype_size(w.dtype);
      float* dst = t.f32();
#pragma omp parallel for num_threads(threads_) schedule(static) if (threads_ > 1 && chunks > 1)
      for (size_t c = 0; c < chunks; ++c) {
        const size_t begin = c * chunk, count = std::min(chunk, n - begin);
        convert_to_f32(w.dtype, static_cast<const uint8_t*>(w.data) + begin * esize, dst + begin, count);
      }
      return t;
    }
    // PyTorch OIHW → our OHWI, one output channel at a time.
    const int64_t O = s[0], I = s[1], KH = s[2], KW = s[3];
    const size_t per_out = static_cast<size_t>(I * KH * KW);
    const size_t esize = dtype_size(w.dtype);
    float* dst = t.f32();
#pragma omp parallel num_threads(threads_) if (threads_ > 1 && n > 65536)
    {
      std::vector<float> src(per_out);
#pragma omp for schedule(static)
      for (int64_t o = 0; o < O; ++o) {
        convert_to_f32(w.dtype, static_cast<const char*>(w.data) + static_cast<size_t>(o) * per_out * esize,
                       src.data(), per_out);
        float* d = dst + static_cast<size_t>(o) * per_out;
        for (int64_t i = 0; i < I; ++i)
          for (int64_t y = 0; y < KH; ++y)
            for (int64_t x = 0; x < KW; ++x)
              d[(y * KW + x) * I + i] = src[static_cast<size_t>((i * KH + y) * KW + x)];
      }
    }
    return t;
  }

  // ---- matrix products and convolutions -------------------------------------------------------
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual) override {
    const char* op = "linear";
    const float* xp = input(x, op, "x");
    const float* wp = input(w, op, "weight");
    require(w.rank() == 2, op, "weight must be [out, in], got " + shape_str(w.shape()));
    require(x.rank() >= 1 && x.dim(-1) == w.dim(1), op,
            "x " + shape_str(x.shape()) + " does not match weight " + shape_str(w.shape()));
    const int64_t K = w.dim(1), N = w.dim(0);
    Shape out_shape = x.shape();
    out_shape.back() = N;
    const float* bp = optional_input(bias, op, "bias");
    if (bias) require_shape(*bias, {N}, op, "bias");
    const float* rp = optional_input(residual, op, "residual");
    if (residual) require_shape(*residual, out_shape, op, "residual");
    // Items: the first dimension of a rank ≥ 3 input; each row of a rank-2 input.
    const int64_t rows_total = K > 0 ? x.numel() / K : shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
    const int64_t items = x.rank() >= 3 ? x.dim(0) : rows_total;
    const int64_t rows = items > 0 ? rows_total / items : 0;
    Tensor y = pool_->tensor(out_shape);
    cpu::linear_rows(xp, items, rows, K, wp, N, bp, rp, y.f32(), threads_);
    return y;
  }

  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                const Tensor* residual) override {
    const char* op = "conv2d";
    const float* xp = input(x, op, "x");
    const float* wp = input(w, op, "weight");
    require(x.rank() == 4, op, "x must be [B, H, W, C], got " + shape_str(x.shape()));
    require(w.rank() == 4, op, "weight must be [out, kh, kw, in], got " + shape_str(w.shape()));
    require(x.dim(3) == w.dim(3), op,
            "x " + shape_str(x.shape()) + " has other input channels than weight " + shape_str(w.shape()));
    require(stride >= 1 && pad >= 0, op,
            "stride " + std::to_string(stride) + " / pad " + std::to_string(pad) + " out of range");
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Cin = x.dim(3);
    const int64_t Cout = w.dim(0), KH = w.dim(1), KW = w.dim(2);
    require(H + 2 * pad >= KH && W + 2 * pad >= KW, op,
            "kernel " + std::to_string(KH) + "x" + std::to_string(KW) + " larger than padded input " +
                shape_str(x.shape()));
    const int64_t Ho = (H + 2 * pad - KH) / stride + 1, Wo = (W + 2 * pad - KW) / stride + 1;
    const Shape out_shape{B, Ho, Wo, Cout};
    const float* bp = optional_input(bias, op, "bias");
    if (bias) require_shape(*bias, {Cout}, op, "bias");
    const float* rp = optional_input(residual, op, "residual");
    if (residual) require_shape(*residual, out_shape, op, "residual");
    Tensor y = pool_->tensor(out_shape);
    cpu::conv2d_nhwc(xp, B, H, W, Cin, wp, Cout, KH, KW, stride, pad, bp, rp, y.f32(), Ho, Wo, threads_);
    return y;
  }

  // ---- normalisation ----------------------------------------------------------------------------
  Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                    bool silu) override {
    const char* op = "group_norm";
    const float* xp = input(x, op, "x");
    require(x.rank() >= 2, op, "x must be [B, ..., C], got " + shape_str(x.shape()));
    const int64_t B = x.dim(0), C = x.dim(-1);
    require(groups >= 1 && C % groups == 0, op,
            std::to_string(C) + " channels do not split into " + std::to_string(groups) + " groups");
    const float* gp = input(gamma, op, "gamma");
    const float* bp = input(beta, op, "beta");
    require_shape(gamma, {C}, op, "gamma");
    require_shape(beta, {C}, op, "beta");
    const int64_t HW = B * C > 0 ? x.numel() / (B * C) : 0;
    Tensor y = pool_->tensor(x.shape());
    if (x.numel() > 0) cpu::group_norm_nhwc(xp, B, HW, C, groups, gp, bp, eps, silu, y.f32(), threads_);
    return y;
  }

  Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override {
    const char* op = "layer_norm";
    const float* xp = input(x, op, "x");
    require(x.rank() >= 1, op, "x is a scalar");
    const int64_t C = x.dim(-1);
    const float* gp = input(gamma, op, "gamma");
    const float* bp = input(beta, op, "beta");
    require_shape(gamma, {C}, op, "gamma");
    require_shape(beta, {C}, op, "beta");
    Tensor y = pool_->tensor(x.shape());
    if (x.numel() > 0) cpu::layer_norm_rows(xp, x.numel() / C, C, gp, bp, eps, y.f32(), threads_);
    return y;
  }

  // ---- attention --------------------------------------------------------------------------------
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override {
    const char* op = "attention";
    const float* qp = input(q, op, "q");
    const float* kp = input(k, op, "k");
    const float* vp = input(v, op, "v");
    require(q.rank() == 3 && k.rank() == 3 && v.rank() == 3, op,
            "q, k, v must be [B, N, C], got " + shape_str(q.shape()) + ", " + shape_str(k.shape()) +
                ", " + shape_str(v.shape()));
    const int64_t B = q.dim(0), Nq = q.dim(1), C = q.dim(2), Nk = k.dim(1);
    require(k.dim(0) == B && k.dim(2) == C && v.shape() == k.shape(), op,
            "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape()) +
                " do not match");
    require(heads >= 1 && C % heads == 0, op,
            std::to_string(C) + " channels do not split into " + std::to_string(heads) + " heads");
    Tensor y = pool_->tensor(q.shape());
    if (y.numel() > 0)
      cpu::attention_mh(qp, kp, vp, B, Nq, Nk, heads, C / heads, causal, y.f32(), threads_);
    return y;
  }

  // ---- activations and elementwise glue -----------------------------------------------------------
  Tensor activation(const Tensor& x, Activation act) override {
    const float* xp = input(x, "activation", "x");
    Tensor y = pool_->tensor(x.shape());
    cpu::activation_inplace(act, xp, y.f32(), x.numel(), threads_);
    return y;
  }

  Tensor geglu(const Tensor& x) override {
    const char* op = "geglu";
    const float* xp = input(x, op, "x");
    require(x.rank() >= 1 && x.dim(-1) % 2 == 0, op, "last dimension of " + shape_str(x.shape()) + " is odd");
    Shape out_shape = x.shape();
    out_shape.back() /= 2;
    const int64_t C = out_shape.back();
    Tensor y = pool_->tensor(out_shape);
    if (y.numel() > 0) cpu::geglu_rows(xp, y.f32(), y.numel() / C, C, threads_);
    return y;
  }

  Tensor binary(BinaryOp bop, const Tensor& a, const Tensor& b) override {
    const float* ap = input(a, "binary", "a");
    const float* bp = input(b, "binary", "b");
    require_shape(b, a.shape(), "binary", "b");
    Tensor y = pool_->tensor(a.shape());
    cpu::binary_op(bop, ap, bp, y.f32(), a.numel(), threads_);
    return y;
  }

  Tensor binary_scalar(BinaryOp bop, const Tensor& a, float s, bool scalar_first) override {
    const float* ap = input(a, "binary_scalar", "a");
    Tensor y = pool_->tensor(a.shape());
    cpu::binary_scalar_op(bop, ap, s, scalar_first, y.f32(), a.numel(), threads_);
    return y;
  }

  Tensor add_batch_channel(const Tensor& x, const Tensor& t) override {
    const char* op = "add_batch_channel";
    const float* xp = input(x, op, "x");
    const float* tp = input(t, op, "t");
    require(x.rank() >= 2, op, "x must be [B, ..., C], got " + shape_str(x.shape()));
    const int64_t B = x.dim(0), C = x.dim(-1);
    require_shape(t, {B, C}, op, "t");
    Tensor y = pool_->tensor(x.shape());
    if (y.numel() > 0) cpu::add_batch_channel_op(xp, tp, y.f32(), B, x.numel() / (B * C), C, threads_);
    return y;
  }

  Tensor clamp(const Tensor& x, float lo, float hi) override {
    const float* xp = input(x, "clamp", "x");
    require(!(lo > hi), "clamp", "lower bound " + std::to_string(lo) + " above upper bound " + std::to_string(hi));
    Tensor y = pool_->tensor(x.shape());
    cpu::clamp_op(xp, y.f32(), x.numel(), lo, hi, threads_);
    return y;
  }

  // ---- shape ops ------------------------------------------------------------------------------------
  Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) override {
    const char* op = "upsample_nearest";
    const float* xp = input(x, op, "x");
    require(x.rank() == 4, op, "x must be [B, H, W, C], got " + shape_str(x.shape()));
    require(out_h >= 1 && out_w >= 1, op,
            "output size " + std::to_string(out_h) + "x" + std::to_string(out_w) + " is empty");
    require(x.dim(1) >= 1 && x.dim(2) >= 1, op, "input " + shape_str(x.shape()) + " is empty");
    Tensor y = pool_->tensor({x.dim(0), out_h, out_w, x.dim(3)});
    cpu::upsample_nearest_nhwc(xp, x.dim(0), x.dim(1), x.dim(2), x.dim(3), out_h, out_w, y.f32(), threads_);
    return y;
  }

  Tensor concat_channels(const Tensor& a, const Tensor& b) override {
    const char* op = "concat_channels";
    const float* ap = input(a, op, "a");
    const float* bp = input(b, op, "b");
    require(a.rank() >= 1 && a.rank() == b.rank() &&
                std::equal(a.shape().begin(), a.shape().end() - 1, b.shape().begin()),
            op, "cannot join " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " along channels");
    Shape out_shape = a.shape();
    out_shape.back() = a.dim(-1) + b.dim(-1);
    Tensor y = pool_->tensor(out_shape);
    const int64_t rows = shape_numel(Shape(a.shape().begin(), a.shape().end() - 1));
    if (y.numel() > 0) cpu::concat_rows(ap, a.dim(-1), bp, b.dim(-1), y.f32(), rows, threads_);
    return y;
  }

  Tensor concat_batch(const std::vector<Tensor>& parts) override {
    const char* op = "concat_batch";
    require(!parts.empty(), op, "no tensors to join");
    Shape out_shape = parts[0].shape();
    require(!out_shape.empty(), op, "cannot join scalars");
    out_shape[0] = 0;
    for (const Tensor& p : parts) {
      input(p, op, "part");
      require(p.rank() == parts[0].rank() &&
                  std::equal(p.shape().begin() + 1, p.shape().end(), parts[0].shape().begin() + 1),
              op, "cannot join " + shape_str(parts[0].shape()) + " and " + shape_str(p.shape()) + " along the batch");
      out_shape[0] += p.dim(0);
    }
    Tensor y = pool_->tensor(out_shape);
    float* dst = y.f32();
    for (const Tensor& p : parts) {
      cpu::copy_floats(p.f32(), dst, p.numel(), threads_);
      dst += p.numel();
    }
    return y;
  }

  Tensor embedding(const std::vector<int32_t>& ids, const Tensor& table) override {
    const char* op = "embedding";
    const float* tp = input(table, op, "table");
    require(table.rank() == 2, op, "table must be [rows, C], got " + shape_str(table.shape()));
    const int64_t V = table.dim(0), C = table.dim(1);
    Tensor y = pool_->tensor({static_cast<int64_t>(ids.size()), C});
    for (size_t i = 0; i < ids.size(); ++i) {
      require(ids[i] >= 0 && ids[i] < V, op,
              "id " + std::to_string(ids[i]) + " at position " + std::to_string(i) + " is outside the table's " +
                  std::to_string(V) + " rows");
      std::memcpy(y.f32() + static_cast<int64_t>(i) * C, tp + ids[i] * C, static_cast<size_t>(C) * sizeof(float));
    }
    return y;
  }

  Tensor copy(const Tensor& x) override {
    require(x.defined() && x.device() == Device::CPU, "copy", "x is undefined or not on the cpu");
    Tensor y = pool_->tensor(x.shape(), x.dtype());
    if (x.dtype() == DType::F32) cpu::copy_floats(x.f32(), y.f32(), x.numel(), threads_);
    else std::memcpy(y.raw(), x.raw(), x.nbytes());
    return y;
  }

 private:
  int threads_;
  std::shared_ptr<cpu::HostBlockPool> pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace sdmpi
