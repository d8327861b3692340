// The op contracts of include/sdmpi/backend.h, checked once for every backend before dispatch.
//
// A failed check is one Error line, "<op>: <argument> <what is wrong>", naming the shapes and
// dtypes involved; weights that do not fit their kind are InputErrors naming the weight, since
// they come from the user's files. What is checked here is what the op means (ranks, matching
// sizes, dtypes that must agree, tensors on this backend's device); a backend checks only what is
// its own (the CPU's F32-only arithmetic, a kernel's size limits). After the backend ran it, an
// outermost call is reported to the backend's op observer, if one is set (OpCall: shapes and
// flags), which is how the launch-count test counts a UNet step without running it on a GPU.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace {

[[noreturn]] void fail(const char* op, const std::string& message) { throw Error(std::string(op) + ": " + message); }

void require(bool ok, const char* op, const std::string& message) {
  if (!ok) fail(op, message);
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

void require_shape(const Tensor& t, const Shape& expected, const char* op, const char* arg) {
  require(t.shape() == expected, op,
          std::string(arg) + " has shape " + shape_str(t.shape()) + ", expected " + shape_str(expected));
}

void require_same_dtype(const Tensor& a, const Tensor& b, const char* op, const char* what) {
  require(a.dtype() == b.dtype(), op, std::string(what) + " have different dtypes: " + a.describe() + " and " + b.describe());
}

// An argument of a backend on `device`: defined and in that device's memory.
void check_arg(const Tensor& t, Device device, const char* op, const char* name) {
  require(t.defined(), op, std::string(name) + " is undefined");
  require(t.device() == device, op,
          std::string(name) + " " + t.describe() + " is not on this backend's device (" + device_name(device) + ")");
}

}  // namespace

// An op call in progress: counts the depth, so that only outermost calls reach the observer (a
// default composed of other ops, like guidance_combine's, is one call).
class OpScope {
 public:
  explicit OpScope(Backend& backend) : backend_(backend) { ++backend_.op_depth_; }
  ~OpScope() { --backend_.op_depth_; }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

  // Reports the call when it is outermost and someone listens. fill(call) adds the op's flags.
  template <typename Fill>
  Tensor report(const char* op, const Tensor& x, const Tensor* w, const Tensor& out, Fill&& fill) {
    if (backend_.op_depth_ == 1 && backend_.observer_) {
      OpCall call;
      call.op = op;
      call.x = x.shape();
      call.x_dtype = x.dtype();
      if (w) {
        call.w = w->shape();
        call.w_dtype = w->dtype();
      }
      call.out = out.shape();
      call.out_dtype = out.dtype();
      fill(call);
      backend_.observer_(call);
    }
    return out;
  }
  Tensor report(const char* op, const Tensor& x, const Tensor* w, const Tensor& out) {
    return report(op, x, w, out, [](OpCall&) {});
  }

 private:
  Backend& backend_;
};

// ---- memory ---------------------------------------------------------------------------------------

Tensor Backend::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) require(d >= 0, "empty", "negative dimension in " + shape_str(shape));
  return do_empty(shape, dtype);
}

Tensor Backend::from_host(const float* data, const Shape& shape) {
  for (int64_t d : shape) require(d >= 0, "from_host", "negative dimension in " + shape_str(shape));
  require(data != nullptr || shape_numel(shape) == 0, "from_host", "null data for " + shape_str(shape));
  OpScope scope(*this);
  Tensor out = do_from_host(data, shape);
  return scope.report("from_host", out, nullptr, out);
}

std::vector<float> Backend::to_host(const Tensor& t) {
  check_arg(t, device(), "to_host", "tensor");
  OpScope scope(*this);
  std::vector<float> out = do_to_host(t);
  scope.report("to_host", t, nullptr, t);
  return out;
}

Tensor Backend::upload_weight(const WeightView& w, WeightKind kind, std::optional<DType> model_dtype) {
  const Shape& s = w.shape;
  auto bad = [&](const std::string& what) {
    throw InputError("weight '" + w.name + "' " + dtype_name(w.dtype) + shape_str(s) + ": " + what);
  };
  const DType dtype = model_dtype.value_or(compute_dtype());
  // A model computes in the backend's dtype or, upcast, in float32: nothing narrower than that.
  SDMPI_CHECK(dtype == compute_dtype() || dtype == DType::F32,
              std::string("upload_weight: a model here computes in the compute dtype ") + dtype_name(compute_dtype()) + " or upcast in F32, not " + dtype_name(dtype));
  for (int64_t d : s)
    if (d < 0) bad("negative dimension");
  Shape layout = s;
  switch (kind) {
    case WeightKind::Linear:
      // 1×1 convolution weights [out, in, 1, 1] also serve as linear weights (old VAE attention).
      if (s.size() == 4 && s[2] == 1 && s[3] == 1) layout = {s[0], s[1]};
      else if (s.size() != 2) bad("expected a linear weight [out, in]");
      break;
    case WeightKind::Conv:
      if (s.size() != 4) bad("expected a convolution weight [out, in, kh, kw]");
      layout = {s[0], s[2], s[3], s[1]};
      break;
    case WeightKind::Vector:
      if (s.size() != 1) bad("expected a vector [C]");
      break;
    case WeightKind::Embedding:
      if (s.size() != 2) bad("expected an embedding table [rows, C]");
      break;
  }
  if (shape_numel(s) > 0 && !w.data) bad("no data");
  return do_upload_weight(w, kind, layout, dtype);
}

void convert_weight_rows(const WeightView& w, DType to, void* dst, int64_t row_begin, int64_t row_end) {
  const int64_t rows = w.shape.empty() ? 1 : w.shape[0];
  SDMPI_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= rows,
              "convert_weight_rows: rows [" + std::to_string(row_begin) + ", " + std::to_string(row_end) + ") of " + w.name);
  if (row_begin == row_end || rows == 0) return;
  const size_t per_row = static_cast<size_t>(shape_numel(w.shape) / rows);
  const size_t in_size = dtype_size(w.dtype), out_size = dtype_size(to);
  const char* src = static_cast<const char*>(w.data) + static_cast<size_t>(row_begin) * per_row * in_size;
  char* out = static_cast<char*>(dst) + static_cast<size_t>(row_begin) * per_row * out_size;
  const size_t count = static_cast<size_t>(row_end - row_begin) * per_row;
  const bool permute = !w.backend_layout && w.shape.size() == 4 && w.shape[2] * w.shape[3] != 1;
  if (!permute && w.dtype == to) {
    std::memcpy(out, src, count * in_size);
    return;
  }
  if (!permute && to == DType::F32) {
    convert_to_f32(w.dtype, src, reinterpret_cast<float*>(out), count);
    return;
  }
  if (!permute) {  // narrowing, in blocks through float32
    constexpr size_t kBlock = 4096;
    std::vector<float> wide(std::min(count, kBlock));
    for (size_t done = 0; done < count; done += kBlock) {
      const size_t c = std::min(kBlock, count - done);
      convert_to_f32(w.dtype, src + done * in_size, wide.data(), c);
      convert_from_f32(to, wide.data(), out + done * out_size, c);
    }
    return;
  }
  // One output row at a time through float32 (which holds every F16 and BF16 value exactly):
  // widen, permute [in][kh·kw] → [kh·kw][in] when needed, narrow.
  const int64_t in = permute ? w.shape[1] : 1, taps = permute ? w.shape[2] * w.shape[3] : 1;
  std::vector<float> wide(per_row), ordered(permute ? per_row : 0);
  for (int64_t r = row_begin; r < row_end; ++r, src += per_row * in_size, out += per_row * out_size) {
    convert_to_f32(w.dtype, src, wide.data(), per_row);
    const float* row = wide.data();
    if (permute) {
      float* o = to == DType::F32 ? reinterpret_cast<float*>(out) : ordered.data();
      for (int64_t i = 0; i < in; ++i)
        for (int64_t k = 0; k < taps; ++k) o[k * in + i] = row[i * taps + k];
      if (to == DType::F32) continue;
      row = ordered.data();
    }
    convert_from_f32(to, row, out, per_row);
  }
}

Tensor Backend::cast(const Tensor& x, DType dtype) {
  check_arg(x, device(), "cast", "x");
  if (x.dtype() == dtype) return x;
  OpScope scope(*this);
  return scope.report("cast", x, nullptr, do_cast(x, dtype));
}

// ---- matrix products and convolutions -------------------------------------------------------------

Tensor Backend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual) {
  const char* op = "linear";
  check_arg(x, device(), op, "x");
  check_arg(w, device(), op, "weight");
  require(w.rank() == 2, op, "weight must be [out, in], got " + shape_str(w.shape()));
  require(x.rank() >= 1 && x.dim(-1) == w.dim(1), op,
          "x " + shape_str(x.shape()) + " does not match weight " + shape_str(w.shape()));
  require_same_dtype(x, w, op, "x and weight");
  Shape out_shape = x.shape();
  out_shape.back() = w.dim(0);
  if (bias) {
    check_arg(*bias, device(), op, "bias");
    require_shape(*bias, {w.dim(0)}, op, "bias");
  }
  if (residual) {
    check_arg(*residual, device(), op, "residual");
    require_shape(*residual, out_shape, op, "residual");
    require_same_dtype(*residual, x, op, "residual and x");
  }
  OpScope scope(*this);
  return scope.report("linear", x, &w, do_linear(x, w, bias, residual, out_shape), [&](OpCall& c) {
    c.bias = bias != nullptr;
    c.residual = residual != nullptr;
  });
}

Backend::QkvProjections Backend::linear_qkv(const Tensor& x, const Tensor& wq, const Tensor& wk, const Tensor& wv,
                                            const Tensor* bq, const Tensor* bk, const Tensor* bv) {
  const char* op = "linear_qkv";
  check_arg(x, device(), op, "x");
  check_arg(wq, device(), op, "wq");
  check_arg(wk, device(), op, "wk");
  check_arg(wv, device(), op, "wv");
  require(wq.rank() == 2, op, "wq must be [out, in], got " + shape_str(wq.shape()));
  require(wk.shape() == wq.shape() && wv.shape() == wq.shape(), op,
          "wq " + shape_str(wq.shape()) + ", wk " + shape_str(wk.shape()) + ", wv " + shape_str(wv.shape()) +
              " must have one shape");
  require(x.rank() >= 1 && x.dim(-1) == wq.dim(1), op,
          "x " + shape_str(x.shape()) + " does not match weight " + shape_str(wq.shape()));
  require_same_dtype(x, wq, op, "x and wq");
  require_same_dtype(wq, wk, op, "wq and wk");
  require_same_dtype(wq, wv, op, "wq and wv");
  const bool bias = bq != nullptr;
  require((bk != nullptr) == bias && (bv != nullptr) == bias, op, "biases must be given for all of q, k, v or none");
  const Tensor* biases[] = {bq, bk, bv};
  const char* bias_names[] = {"bq", "bk", "bv"};
  for (int i = 0; i < 3 && bias; ++i) {
    check_arg(*biases[i], device(), op, bias_names[i]);
    require_shape(*biases[i], {wq.dim(0)}, op, bias_names[i]);
    require_same_dtype(*biases[i], *bq, op, "the biases");
  }
  Shape out_shape = x.shape();
  out_shape.back() = wq.dim(0);
  OpScope scope(*this);
  QkvProjections out = do_linear_qkv(x, wq, wk, wv, bq, bk, bv, out_shape);
  scope.report(op, x, &wq, out.q, [&](OpCall& c) { c.bias = bias; });
  return out;
}

Backend::QkvProjections Backend::do_linear_qkv(const Tensor& x, const Tensor& wq, const Tensor& wk, const Tensor& wv,
                                               const Tensor* bq, const Tensor* bk, const Tensor* bv,
                                               const Shape& out_shape) {
  return {do_linear(x, wq, bq, nullptr, out_shape), do_linear(x, wk, bk, nullptr, out_shape),
          do_linear(x, wv, bv, nullptr, out_shape)};
}

Tensor Backend::linear_stacked(const Tensor& x, const std::vector<const Tensor*>& weights,
                               const std::vector<const Tensor*>& biases) {
  const char* op = "linear_stacked";
  check_arg(x, device(), op, "x");
  require(!weights.empty(), op, "no weights");
  require(biases.empty() || biases.size() == weights.size(), op,
          std::to_string(biases.size()) + " biases for " + std::to_string(weights.size()) + " weights (all or none)");
  require(x.rank() >= 1, op, "x is a scalar");
  int64_t total = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string name = "weights[" + std::to_string(i) + "]";
    require(weights[i] != nullptr, op, name + " is null");
    const Tensor& w = *weights[i];
    check_arg(w, device(), op, name.c_str());
    require(w.rank() == 2 && w.dim(1) == x.dim(-1), op,
            name + " " + shape_str(w.shape()) + " does not match x " + shape_str(x.shape()));
    require_same_dtype(x, w, op, ("x and " + name).c_str());
    if (!biases.empty()) {
      const std::string bname = "biases[" + std::to_string(i) + "]";
      require(biases[i] != nullptr, op, bname + " is null (biases: all or none)");
      check_arg(*biases[i], device(), op, bname.c_str());
      require_shape(*biases[i], {w.dim(0)}, op, bname.c_str());
      require_same_dtype(*biases[i], *biases[0], op, "the biases");
    }
    total += w.dim(0);
  }
  Shape out_shape = x.shape();
  out_shape.back() = total;
  OpScope scope(*this);
  Tensor out = do_linear_stacked(x, weights, biases, out_shape);
  const Shape stacked{total, x.dim(-1)};
  return scope.report(op, x, nullptr, out, [&](OpCall& c) {
    c.w = stacked;
    c.w_dtype = x.dtype();
    c.bias = !biases.empty();
  });
}

Tensor Backend::do_linear_stacked(const Tensor& x, const std::vector<const Tensor*>& weights,
                                  const std::vector<const Tensor*>& biases, const Shape& out_shape) {
  Tensor joined;
  for (size_t i = 0; i < weights.size(); ++i) {
    Shape part = out_shape;
    part.back() = weights[i]->dim(0);
    Tensor y = do_linear(x, *weights[i], biases.empty() ? nullptr : biases[i], nullptr, part);
    if (!joined.defined()) {
      joined = y;
      continue;
    }
    Shape both = joined.shape();
    both.back() += y.dim(-1);
    joined = do_concat_channels(joined, y, both);
  }
  return joined;
}

Tensor Backend::conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                       const Tensor* residual) {
  const char* op = "conv2d";
  check_arg(x, device(), op, "x");
  check_arg(w, device(), op, "weight");
  require(x.rank() == 4, op, "x must be [B, H, W, C], got " + shape_str(x.shape()));
  require(w.rank() == 4, op, "weight must be [out, kh, kw, in], got " + shape_str(w.shape()));
  require(x.dim(3) == w.dim(3), op,
          "x " + shape_str(x.shape()) + " has other input channels than weight " + shape_str(w.shape()));
  require_same_dtype(x, w, op, "x and weight");
  require(stride >= 1 && pad >= 0, op, "stride " + std::to_string(stride) + " / pad " + std::to_string(pad) + " out of range");
  const int64_t H = x.dim(1), W = x.dim(2), KH = w.dim(1), KW = w.dim(2);
  require(H + 2 * pad >= KH && W + 2 * pad >= KW, op,
          "kernel " + std::to_string(KH) + "x" + std::to_string(KW) + " larger than padded input " + shape_str(x.shape()));
  const Shape out_shape{x.dim(0), (H + 2 * pad - KH) / stride + 1, (W + 2 * pad - KW) / stride + 1, w.dim(0)};
  if (bias) {
    check_arg(*bias, device(), op, "bias");
    require_shape(*bias, {w.dim(0)}, op, "bias");
  }
  if (residual) {
    check_arg(*residual, device(), op, "residual");
    require_shape(*residual, out_shape, op, "residual");
    require_same_dtype(*residual, x, op, "residual and x");
  }
  OpScope scope(*this);
  return scope.report("conv2d", x, &w, do_conv2d(x, w, bias, stride, pad, residual, out_shape), [&](OpCall& c) {
    c.bias = bias != nullptr;
    c.residual = residual != nullptr;
    c.stride = stride;
    c.pad = pad;
  });
}

// ---- normalisation --------------------------------------------------------------------------------

Tensor Backend::group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                           const Tensor* channel_offset, int64_t offset_column) {
  const char* op = "group_norm";
  check_arg(x, device(), op, "x");
  check_arg(gamma, device(), op, "gamma");
  check_arg(beta, device(), op, "beta");
  require(x.rank() >= 2, op, "x must be [B, ..., C], got " + shape_str(x.shape()));
  const int64_t C = x.dim(-1);
  require(groups >= 1 && C % groups == 0, op,
          std::to_string(C) + " channels do not split into " + std::to_string(groups) + " groups");
  require_shape(gamma, {C}, op, "gamma");
  require_shape(beta, {C}, op, "beta");
  if (channel_offset) {
    check_arg(*channel_offset, device(), op, "channel_offset");
    require(channel_offset->rank() == 2 && channel_offset->dim(0) == x.dim(0) && offset_column >= 0 &&
                offset_column + C <= channel_offset->dim(1),
            op, "channel_offset " + shape_str(channel_offset->shape()) + " has no columns [" +
                    std::to_string(offset_column) + ", " + std::to_string(offset_column + C) + ") for x " +
                    shape_str(x.shape()));
  } else {
    require(offset_column == 0, op, "offset_column " + std::to_string(offset_column) + " without a channel_offset");
  }
  OpScope scope(*this);
  Tensor out = channel_offset ? do_group_norm_offset(x, *channel_offset, offset_column, groups, gamma, beta, eps, silu)
                              : do_group_norm(x, groups, gamma, beta, eps, silu);
  return scope.report("group_norm", x, channel_offset, out, [&](OpCall& c) { c.silu = silu; });
}

Tensor Backend::do_group_norm_offset(const Tensor& x, const Tensor& channel_offset, int64_t offset_column, int groups,
                                     const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  const int64_t B = x.dim(0), C = x.dim(-1), Ct = channel_offset.dim(1);
  if (offset_column == 0 && Ct == C)
    return do_group_norm(do_add_batch_channel(x, channel_offset), groups, gamma, beta, eps, silu);
  // A column range: each item's columns are a dense run of the flat offset (a view), joined into
  // the [B, C] offset they stand for by one device copy per item: no kernel, no host traffic.
  Tensor slice;
  if (B == 0) {
    slice = channel_offset.reshape({0, C});  // nothing to copy
  } else {
    const Tensor flat = channel_offset.reshape({B * Ct});
    std::vector<Tensor> items;
    for (int64_t b = 0; b < B; ++b)
      items.push_back(flat.rows(b * Ct + offset_column, b * Ct + offset_column + C).reshape({1, C}));
    slice = B == 1 ? items[0] : do_concat_batch(items, {B, C});
  }
  return do_group_norm(do_add_batch_channel(x, slice), groups, gamma, beta, eps, silu);
}

Backend::JoinedNorm Backend::concat_group_norm(const Tensor& a, const Tensor& b, int groups, const Tensor& gamma,
                                               const Tensor& beta, float eps, bool silu) {
  const char* op = "concat_group_norm";
  check_arg(a, device(), op, "a");
  check_arg(b, device(), op, "b");
  check_arg(gamma, device(), op, "gamma");
  check_arg(beta, device(), op, "beta");
  require(a.rank() >= 2 && b.rank() == a.rank() && std::equal(a.shape().begin(), a.shape().end() - 1, b.shape().begin()),
          op, "a " + shape_str(a.shape()) + " and b " + shape_str(b.shape()) + " must be [B, ..., C] with the same leading dims");
  require_same_dtype(a, b, op, "a and b");
  Shape out_shape = a.shape();
  out_shape.back() += b.dim(-1);
  const int64_t C = out_shape.back();
  require(groups >= 1 && C % groups == 0, op,
          std::to_string(C) + " channels do not split into " + std::to_string(groups) + " groups");
  require_shape(gamma, {C}, op, "gamma");
  require_shape(beta, {C}, op, "beta");
  OpScope scope(*this);
  JoinedNorm out = do_concat_group_norm(a, b, groups, gamma, beta, eps, silu, out_shape);
  scope.report(op, a, &b, out.joined, [&](OpCall& c) { c.silu = silu; });
  return out;
}

Backend::JoinedNorm Backend::do_concat_group_norm(const Tensor& a, const Tensor& b, int groups, const Tensor& gamma,
                                                  const Tensor& beta, float eps, bool silu, const Shape& out_shape) {
  Tensor joined = do_concat_channels(a, b, out_shape);
  return {joined, do_group_norm(joined, groups, gamma, beta, eps, silu)};
}

Tensor Backend::layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const char* op = "layer_norm";
  check_arg(x, device(), op, "x");
  check_arg(gamma, device(), op, "gamma");
  check_arg(beta, device(), op, "beta");
  require(x.rank() >= 1, op, "x is a scalar");
  require_shape(gamma, {x.dim(-1)}, op, "gamma");
  require_shape(beta, {x.dim(-1)}, op, "beta");
  OpScope scope(*this);
  return scope.report("layer_norm", x, nullptr, do_layer_norm(x, gamma, beta, eps));
}

// ---- attention ------------------------------------------------------------------------------------

Tensor Backend::attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const char* op = "attention";
  check_arg(q, device(), op, "q");
  check_arg(k, device(), op, "k");
  check_arg(v, device(), op, "v");
  require(q.rank() == 3 && k.rank() == 3 && v.rank() == 3, op,
          "q, k, v must be [B, N, C], got " + shape_str(q.shape()) + ", " + shape_str(k.shape()) + ", " +
              shape_str(v.shape()));
  require(k.dim(0) == q.dim(0) && k.dim(2) == q.dim(2) && v.shape() == k.shape(), op,
          "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " + shape_str(v.shape()) + " do not match");
  require(q.dtype() == k.dtype() && q.dtype() == v.dtype(), op,
          "q, k, v have different dtypes (" + q.describe() + ", " + k.describe() + ", " + v.describe() + ")");
  require(heads >= 1 && q.dim(2) % heads == 0, op,
          std::to_string(q.dim(2)) + " channels do not split into " + std::to_string(heads) + " heads");
  OpScope scope(*this);
  return scope.report("attention", q, &k, do_attention(q, k, v, heads, causal), [&](OpCall& c) {
    c.heads = heads;
    c.causal = causal;
  });
}

// ---- activations and elementwise glue -------------------------------------------------------------

Tensor Backend::activation(const Tensor& x, Activation act) {
  check_arg(x, device(), "activation", "x");
  OpScope scope(*this);
  return scope.report("activation", x, nullptr, do_activation(x, act));
}

Tensor Backend::geglu(const Tensor& x) {
  check_arg(x, device(), "geglu", "x");
  require(x.rank() >= 1 && x.dim(-1) % 2 == 0, "geglu", "last dimension of " + shape_str(x.shape()) + " is odd");
  Shape out_shape = x.shape();
  out_shape.back() /= 2;
  OpScope scope(*this);
  return scope.report("geglu", x, nullptr, do_geglu(x, out_shape));
}

Tensor Backend::linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const char* op = "linear_geglu";
  check_arg(x, device(), op, "x");
  check_arg(w, device(), op, "weight");
  require(w.rank() == 2 && w.dim(0) % 2 == 0, op, "weight must be [2C, in], got " + shape_str(w.shape()));
  require(x.rank() >= 1 && x.dim(-1) == w.dim(1), op,
          "x " + shape_str(x.shape()) + " does not match weight " + shape_str(w.shape()));
  require_same_dtype(x, w, op, "x and weight");
  if (bias) {
    check_arg(*bias, device(), op, "bias");
    require_shape(*bias, {w.dim(0)}, op, "bias");
  }
  Shape linear_shape = x.shape(), out_shape = x.shape();
  linear_shape.back() = w.dim(0);
  out_shape.back() = w.dim(0) / 2;
  OpScope scope(*this);
  return scope.report("linear_geglu", x, &w, do_linear_geglu(x, w, bias, linear_shape, out_shape),
                      [&](OpCall& c) { c.bias = bias != nullptr; });
}

Tensor Backend::do_linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias, const Shape& linear_shape,
                                const Shape& out_shape) {
  return do_geglu(do_linear(x, w, bias, nullptr, linear_shape), out_shape);
}

Tensor Backend::binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  check_arg(a, device(), "binary", "a");
  check_arg(b, device(), "binary", "b");
  require_shape(b, a.shape(), "binary", "b");
  OpScope scope(*this);
  return scope.report("binary", a, &b, do_binary(op, a, b));
}

Tensor Backend::binary_scalar(BinaryOp op, const Tensor& a, float s, bool scalar_first) {
  check_arg(a, device(), "binary_scalar", "a");
  OpScope scope(*this);
  return scope.report("binary_scalar", a, nullptr, do_binary_scalar(op, a, s, scalar_first));
}

Tensor Backend::add_batch_channel(const Tensor& x, const Tensor& t) {
  const char* op = "add_batch_channel";
  check_arg(x, device(), op, "x");
  check_arg(t, device(), op, "t");
  require(x.rank() >= 2, op, "x must be [B, ..., C], got " + shape_str(x.shape()));
  require_shape(t, {x.dim(0), x.dim(-1)}, op, "t");
  OpScope scope(*this);
  return scope.report("add_batch_channel", x, &t, do_add_batch_channel(x, t));
}

Tensor Backend::clamp(const Tensor& x, float lo, float hi) {
  check_arg(x, device(), "clamp", "x");
  require(!(lo > hi), "clamp", "lower bound " + std::to_string(lo) + " above upper bound " + std::to_string(hi));
  OpScope scope(*this);
  return scope.report("clamp", x, nullptr, do_clamp(x, lo, hi));
}

Tensor Backend::guidance_combine(const Tensor& eps, float scale) {
  check_arg(eps, device(), "guidance_combine", "eps");
  require(eps.rank() >= 1 && eps.dim(0) % 2 == 0, "guidance_combine",
          "eps " + eps.describe() + " needs an even batch [uncond; cond]");
  OpScope scope(*this);
  return scope.report("guidance_combine", eps, nullptr, do_guidance_combine(eps, scale));
}

Tensor Backend::do_guidance_combine(const Tensor& eps, float scale) {
  // noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
  const int64_t b = eps.dim(0) / 2;
  const Tensor uncond = eps.rows(0, b), cond = eps.rows(b, 2 * b);
  const Tensor diff = binary(BinaryOp::Sub, cond, uncond);
  const Tensor scaled = binary_scalar(BinaryOp::Mul, diff, scale, /*scalar_first=*/true);
  return binary(BinaryOp::Add, uncond, scaled);
}

// ---- shape ops ------------------------------------------------------------------------------------

Tensor Backend::upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  const char* op = "upsample_nearest";
  check_arg(x, device(), op, "x");
  require(x.rank() == 4, op, "x must be [B, H, W, C], got " + shape_str(x.shape()));
  require(out_h >= 1 && out_w >= 1, op, "output size " + std::to_string(out_h) + "x" + std::to_string(out_w) + " is empty");
  require(x.dim(1) >= 1 && x.dim(2) >= 1, op, "input " + shape_str(x.shape()) + " is empty");
  OpScope scope(*this);
  return scope.report("upsample_nearest", x, nullptr, do_upsample_nearest(x, out_h, out_w));
}

Tensor Backend::pad2d(const Tensor& x, int top, int bottom, int left, int right) {
  const char* op = "pad2d";
  check_arg(x, device(), op, "x");
  require(x.rank() == 4, op, "x must be [B, H, W, C], got " + shape_str(x.shape()));
  require(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, op,
          "padding (top " + std::to_string(top) + ", bottom " + std::to_string(bottom) + ", left " +
              std::to_string(left) + ", right " + std::to_string(right) + ") must not be negative");
  const Shape out_shape{x.dim(0), x.dim(1) + top + bottom, x.dim(2) + left + right, x.dim(3)};
  OpScope scope(*this);
  return scope.report("pad2d", x, nullptr, do_pad2d(x, top, bottom, left, right, out_shape));
}

Tensor Backend::concat_channels(const Tensor& a, const Tensor& b) {
  const char* op = "concat_channels";
  check_arg(a, device(), op, "a");
  check_arg(b, device(), op, "b");
  require(a.rank() >= 1 && a.rank() == b.rank() && std::equal(a.shape().begin(), a.shape().end() - 1, b.shape().begin()),
          op, "cannot join " + shape_str(a.shape()) + " and " + shape_str(b.shape()) + " along channels");
  require_same_dtype(a, b, op, "a and b");
  Shape out_shape = a.shape();
  out_shape.back() = a.dim(-1) + b.dim(-1);
  OpScope scope(*this);
  return scope.report("concat_channels", a, &b, do_concat_channels(a, b, out_shape));
}

Tensor Backend::concat_batch(const std::vector<Tensor>& parts) {
  const char* op = "concat_batch";
  require(!parts.empty(), op, "no tensors to join");
  for (const Tensor& p : parts) check_arg(p, device(), op, "part");
  const Tensor& first = parts[0];
  require(first.rank() >= 1, op, "cannot join scalars");
  Shape out_shape = first.shape();
  out_shape[0] = 0;
  for (const Tensor& p : parts) {
    require(p.rank() == first.rank() && std::equal(p.shape().begin() + 1, p.shape().end(), first.shape().begin() + 1), op,
            "cannot join " + shape_str(first.shape()) + " and " + shape_str(p.shape()) + " along the batch");
    require_same_dtype(p, first, op, "parts");
    out_shape[0] += p.dim(0);
  }
  OpScope scope(*this);
  return scope.report("concat_batch", first, nullptr, do_concat_batch(parts, out_shape),
                      [&](OpCall& c) { c.parts = static_cast<int64_t>(parts.size()); });
}

Tensor Backend::embedding(const std::vector<int32_t>& ids, const Tensor& table) {
  const char* op = "embedding";
  check_arg(table, device(), op, "table");
  require(table.rank() == 2, op, "table must be [rows, C], got " + shape_str(table.shape()));
  for (size_t i = 0; i < ids.size(); ++i)
    require(ids[i] >= 0 && ids[i] < table.dim(0), op,
            "id " + std::to_string(ids[i]) + " at position " + std::to_string(i) + " is outside the table's " +
                std::to_string(table.dim(0)) + " rows");
  OpScope scope(*this);
  return scope.report("embedding", table, nullptr, do_embedding(ids, table),
                      [&](OpCall& c) { c.parts = static_cast<int64_t>(ids.size()); });
}

Tensor Backend::copy(const Tensor& x) {
  check_arg(x, device(), "copy", "x");
  OpScope scope(*this);
  return scope.report("copy", x, nullptr, do_copy(x));
}

// ---- captured steps: a backend without graphs runs the step as it is --------------------------------

std::vector<Tensor> Backend::run_graph(const GraphKey&, const std::vector<Tensor>& inputs, const GraphFn& fn) {
  return fn(inputs);
}

bool Backend::graph_captured(const GraphKey&) const { return false; }

std::vector<Tensor> Backend::graph_inputs(const GraphKey&) { return {}; }

// ---- memory this rank may still use (the resource plan) ----------------------------------------------

namespace {

// The first number in a file ("max" or an unreadable file: -1).
int64_t read_bytes_file(const char* path) {
  std::ifstream f(path);
  std::string word;
  if (!(f >> word) || word.empty() || word.find_first_not_of("0123456789") != std::string::npos) return -1;
  return static_cast<int64_t>(std::stoull(word));
}

// "MemAvailable:  123456 kB" of /proc/meminfo, in bytes; -1 when absent (kernels before 3.14).
int64_t meminfo_available() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (f >> key >> kib) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kib * 1024;
  }
  return -1;
}

// One "key value" line of a cgroup's memory.stat; 0 when absent.
int64_t memory_stat(const std::string& path, const std::string& wanted) {
  std::ifstream f(path);
  std::string key;
  int64_t value = 0;
  while (f >> key >> value)
    if (key == wanted) return value;
  return 0;
}

// Room left under the cgroup's limit: v2 (unified) first, then v1's memory controller. A limit
// of "max" or an absurd v1 "no limit" value (page-rounded INT64_MAX) means none. The usage counts
// the page cache, whose inactive part the kernel reclaims before it kills: it counts as room.
int64_t cgroup_room() {
  std::string dir = "/sys/fs/cgroup/", inactive_key = "inactive_file";
  int64_t limit = read_bytes_file("/sys/fs/cgroup/memory.max"), used = read_bytes_file("/sys/fs/cgroup/memory.current");
  if (limit < 0) {
    dir = "/sys/fs/cgroup/memory/";
    inactive_key = "total_inactive_file";
    limit = read_bytes_file("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    used = read_bytes_file("/sys/fs/cgroup/memory/memory.usage_in_bytes");
  }
  if (limit < 0 || limit >= (int64_t{1} << 60)) return -1;
  used -= memory_stat(dir + "memory.stat", inactive_key);
  return std::max<int64_t>(0, limit - std::max<int64_t>(0, used));
}

}  // namespace

int64_t host_memory_available() {
  int64_t available = meminfo_available(), room = cgroup_room();
  if (available < 0) return room;
  return room < 0 ? available : std::min(available, room);
}

int64_t Backend::memory_available() const { return host_memory_available(); }

}  // namespace sdmpi
