// The shared blocks of the UNet and the VAE (see blocks.h): parameter names and shapes as
// diffusers' modules register them, declared to a ParamSink with make-model's initialisation
// (PyTorch's defaults: Linear/Conv fan-in = inputs per output, norms and embeddings their own
// kinds), forward passes as diffusers' forward() methods compute them.
#include "models/blocks.h"

#include "sdmpi/error.h"

namespace sdmpi::blocks {

// ---- layers -------------------------------------------------------------------------------------

Linear::Linear(ParamSink& w, const std::string& name, int in, int out, bool with_bias)
    : in_features(in), out_features(out) {
  weight = w.param(name + ".weight", {out, in}, WeightKind::Linear, ParamInit::Weight, in);
  if (with_bias) bias = w.param(name + ".bias", {out}, WeightKind::Vector, ParamInit::Bias, in);
}

Tensor Linear::operator()(Backend& b, const Tensor& x, const Tensor* residual) const {
  return b.linear(x, weight, bias.defined() ? &bias : nullptr, residual);
}

Conv2d::Conv2d(ParamSink& w, const std::string& name, int in, int out, int kernel_size,
               int stride_, int pad_)
    : in_channels(in), out_channels(out), kernel(kernel_size), stride(stride_),
      pad(pad_ < 0 ? (kernel_size - 1) / 2 : pad_) {
  const int64_t fan_in = static_cast<int64_t>(in) * kernel * kernel;
  weight = w.param(name + ".weight", {out, in, kernel, kernel}, WeightKind::Conv, ParamInit::Weight, fan_in);
  bias = w.param(name + ".bias", {out}, WeightKind::Vector, ParamInit::Bias, fan_in);
}

Tensor Conv2d::operator()(Backend& b, const Tensor& x, const Tensor* residual) const {
  return b.conv2d(x, weight, &bias, stride, pad, residual);
}

GroupNorm::GroupNorm(ParamSink& w, const std::string& name, int groups_, int channels, float eps_)
    : groups(groups_), eps(eps_) {
  weight = w.param(name + ".weight", {channels}, WeightKind::Vector, ParamInit::NormWeight, 1);
  bias = w.param(name + ".bias", {channels}, WeightKind::Vector, ParamInit::NormBias, 1);
}

Tensor GroupNorm::operator()(Backend& b, const Tensor& x, bool silu) const {
  return b.group_norm(x, groups, weight, bias, eps, silu);
}

LayerNorm::LayerNorm(ParamSink& w, const std::string& name, int channels, float eps_) : eps(eps_) {
  weight = w.param(name + ".weight", {channels}, WeightKind::Vector, ParamInit::NormWeight, 1);
  bias = w.param(name + ".bias", {channels}, WeightKind::Vector, ParamInit::NormBias, 1);
}

Tensor LayerNorm::operator()(Backend& b, const Tensor& x) const {
  return b.layer_norm(x, weight, bias, eps);
}

// ---- ResnetBlock2D ------------------------------------------------------------------------------

ResnetBlock2D::ResnetBlock2D(ParamSink& w, const std::string& name, int in, int out,
                             int temb_channels, int groups, float eps, float scale)
    : norm1(w, name + ".norm1", groups, in, eps),
      norm2(w, name + ".norm2", groups, out, eps),
      conv1(w, name + ".conv1", in, out, 3),
      conv2(w, name + ".conv2", out, out, 3),
      output_scale_factor(scale) {
  if (temb_channels > 0) time_emb_proj.emplace(w, name + ".time_emb_proj", temb_channels, out);
  if (in != out) conv_shortcut.emplace(w, name + ".conv_shortcut", in, out, 1);
}

Tensor ResnetBlock2D::operator()(Backend& b, const Tensor& x, const Tensor* temb_silu) const {
  Tensor temb;
  if (time_emb_proj) {
    SDMPI_CHECK(temb_silu != nullptr, "ResnetBlock2D with time_emb_proj needs a time embedding");
    temb = (*time_emb_proj)(b, *temb_silu);
  }
  return forward(b, x, nullptr, temb.defined() ? &temb : nullptr, 0);
}

Tensor ResnetBlock2D::operator()(Backend& b, const Tensor& x, const Tensor& temb_projections,
                                 int64_t temb_column) const {
  SDMPI_CHECK(time_emb_proj.has_value(), "ResnetBlock2D without time_emb_proj given time-embedding projections");
  return forward(b, x, nullptr, &temb_projections, temb_column);
}

Tensor ResnetBlock2D::operator()(Backend& b, const Tensor& x, const Tensor& skip, const Tensor& temb_projections,
                                 int64_t temb_column) const {
  SDMPI_CHECK(time_emb_proj.has_value(), "ResnetBlock2D without time_emb_proj given time-embedding projections");
  return forward(b, x, &skip, &temb_projections, temb_column);
}

Tensor ResnetBlock2D::forward(Backend& b, const Tensor& x, const Tensor* skip, const Tensor* offset,
                              int64_t offset_column) const {
  Tensor input = x, normed;
  if (skip) {  // norm1(cat([x, skip], dim=1)), and the concat for the shortcut, as one op
    Backend::JoinedNorm joined =
        b.concat_group_norm(x, *skip, norm1.groups, norm1.weight, norm1.bias, norm1.eps, /*silu=*/true);
    input = joined.joined;
    normed = joined.normed;
  } else {
    normed = norm1(b, x, /*silu=*/true);
  }
  Tensor h = conv1(b, normed);
  // norm2(h + temb[b, c]) as one op: the sum feeds only norm2, so a backend may add it while it
  // normalises (same bits on the CPU). dropout: identity at inference.
  h = b.group_norm(h, norm2.groups, norm2.weight, norm2.bias, norm2.eps, /*silu=*/true, offset, offset_column);
  Tensor shortcut = conv_shortcut ? (*conv_shortcut)(b, input) : input;
  Tensor out = conv2(b, h, &shortcut);
  if (output_scale_factor != 1.0f) out = b.binary_scalar(BinaryOp::Div, out, output_scale_factor);
  return out;
}

// ---- attention ----------------------------------------------------------------------------------

Attention::Attention(ParamSink& w, const std::string& name, int query_dim, int context_dim,
                     int heads_, int dim_head, bool qkv_bias)
    : to_q(w, name + ".to_q", query_dim, heads_ * dim_head, qkv_bias),
      to_k(w, name + ".to_k", context_dim, heads_ * dim_head, qkv_bias),
      to_v(w, name + ".to_v", context_dim, heads_ * dim_head, qkv_bias),
      to_out(w, name + ".to_out.0", heads_ * dim_head, query_dim, true),
      heads(heads_) {}

Tensor Attention::operator()(Backend& b, const Tensor& x, const Tensor* context,
                             const Tensor* residual) const {
  if (!context) {
    // Self-attention: q, k and v project the same x, one op (one product on a GPU, same bits on the CPU).
    auto bias = [](const Linear& l) { return l.bias.defined() ? &l.bias : nullptr; };
    Backend::QkvProjections p =
        b.linear_qkv(x, to_q.weight, to_k.weight, to_v.weight, bias(to_q), bias(to_k), bias(to_v));
    return to_out(b, b.attention(p.q, p.k, p.v, heads, /*causal=*/false), residual);  // to_out.1 is dropout
  }
  Tensor k = to_k(b, *context);
  Tensor v = to_v(b, *context);
  return with_kv(b, x, k, v, residual);
}

Tensor Attention::with_kv(Backend& b, const Tensor& x, const Tensor& k, const Tensor& v,
                          const Tensor* residual) const {
  Tensor q = to_q(b, x);
  Tensor a = b.attention(q, k, v, heads, /*causal=*/false);
  return to_out(b, a, residual);  // to_out.1 is dropout
}

FeedForward::FeedForward(ParamSink& w, const std::string& name, int dim, int mult)
    : proj(w, name + ".net.0.proj", dim, 2 * mult * dim),
      out(w, name + ".net.2", mult * dim, dim) {}

Tensor FeedForward::operator()(Backend& b, const Tensor& x, const Tensor* residual) const {
  // geglu(proj(x)) as one op, so a backend may gate in the product's epilogue (same bits on the CPU).
  return out(b, b.linear_geglu(x, proj.weight, proj.bias.defined() ? &proj.bias : nullptr), residual);
}

BasicTransformerBlock::BasicTransformerBlock(ParamSink& w, const std::string& name, int dim,
                                             int heads, int dim_head, int cross_attention_dim)
    : norm1(w, name + ".norm1", dim, 1e-5f),
      norm2(w, name + ".norm2", dim, 1e-5f),
      norm3(w, name + ".norm3", dim, 1e-5f),
      attn1(w, name + ".attn1", dim, dim, heads, dim_head, /*qkv_bias=*/false),
      attn2(w, name + ".attn2", dim, cross_attention_dim, heads, dim_head, /*qkv_bias=*/false),
      ff(w, name + ".ff", dim) {}

void BasicTransformerBlock::append_cross_kv(Backend& b, const Tensor& context,
                                            std::vector<Tensor>& kv) const {
  kv.push_back(attn2.to_k(b, context));
  kv.push_back(attn2.to_v(b, context));
}

Tensor BasicTransformerBlock::operator()(Backend& b, const Tensor& tokens, const Tensor& k,
                                         const Tensor& v) const {
  Tensor h = attn1(b, norm1(b, tokens), nullptr, &tokens);
  h = attn2.with_kv(b, norm2(b, h), k, v, &h);
  return ff(b, norm3(b, h), &h);
}

// ---- Transformer2DModel -------------------------------------------------------------------------

Transformer2DModel::Transformer2DModel(ParamSink& w, const std::string& name, int channels,
                                       int heads, int num_layers, int cross_attention_dim,
                                       int norm_groups, bool use_linear_projection)
    : norm(w, name + ".norm", norm_groups, channels, 1e-6f) {
  // diffusers builds it as Transformer2DModel(heads, channels // heads, in_channels=channels).
  const int dim_head = channels / heads;
  inner_dim = heads * dim_head;
  if (use_linear_projection) {
    proj_in_linear.emplace(w, name + ".proj_in", channels, inner_dim);
  } else {
    proj_in_conv.emplace(w, name + ".proj_in", channels, inner_dim, 1);
  }
  transformer_blocks.reserve(num_layers);
  for (int i = 0; i < num_layers; ++i)
    transformer_blocks.emplace_back(w, name + ".transformer_blocks." + std::to_string(i), inner_dim,
                                    heads, dim_head, cross_attention_dim);
  if (use_linear_projection) {
    proj_out_linear.emplace(w, name + ".proj_out", inner_dim, channels);
  } else {
    proj_out_conv.emplace(w, name + ".proj_out", inner_dim, channels, 1);
  }
}

void Transformer2DModel::append_cross_kv(Backend& b, const Tensor& context,
                                         std::vector<Tensor>& kv) const {
  for (const BasicTransformerBlock& block : transformer_blocks) block.append_cross_kv(b, context, kv);
}

Tensor Transformer2DModel::operator()(Backend& b, const Tensor& x, std::span<const Tensor> kv) const {
  SDMPI_CHECK(kv.size() == 2 * transformer_blocks.size(),
              "Transformer2DModel: one K and one V per transformer block");
  const int64_t H = x.dim(1), W = x.dim(2);
  Tensor h = norm(b, x);
  h = proj_in_conv ? as_tokens((*proj_in_conv)(b, h)) : (*proj_in_linear)(b, as_tokens(h));
  for (size_t i = 0; i < transformer_blocks.size(); ++i)
    h = transformer_blocks[i](b, h, kv[2 * i], kv[2 * i + 1]);
  if (proj_out_conv) return (*proj_out_conv)(b, as_image(h, H, W), &x);
  Tensor residual = as_tokens(x);
  return as_image((*proj_out_linear)(b, h, &residual), H, W);
}

// ---- resampling ---------------------------------------------------------------------------------

Downsample2D::Downsample2D(ParamSink& w, const std::string& name, int channels, int padding_)
    : conv(w, name + ".conv", channels, channels, 3, /*stride=*/2, /*pad=*/padding_),
      padding(padding_) {}

Tensor Downsample2D::operator()(Backend& b, const Tensor& x) const {
  // padding 0: F.pad(x, (0, 1, 0, 1)), then the conv without padding.
  if (padding == 0) return conv(b, b.pad2d(x, /*top=*/0, /*bottom=*/1, /*left=*/0, /*right=*/1));
  return conv(b, x);
}

Upsample2D::Upsample2D(ParamSink& w, const std::string& name, int channels)
    : conv(w, name + ".conv", channels, channels, 3) {}

Tensor Upsample2D::operator()(Backend& b, const Tensor& x, int64_t out_h, int64_t out_w) const {
  return conv(b, b.upsample_nearest(x, out_h, out_w));
}

// ---- the VAE's spatial attention -----------------------------------------------------------------

SpatialSelfAttention::SpatialSelfAttention(ParamSink& w, const std::string& name, int channels,
                                           int heads, int norm_groups, float eps)
    : group_norm(w, name + ".group_norm", norm_groups, channels, eps),
      attention(w, name, channels, channels, heads, channels / heads, /*qkv_bias=*/true) {}

Tensor SpatialSelfAttention::operator()(Backend& b, const Tensor& x) const {
  const int64_t H = x.dim(1), W = x.dim(2);
  Tensor residual = as_tokens(x);
  Tensor h = as_tokens(group_norm(b, x));
  // residual_connection=True, rescale_output_factor=1: (to_out(a) + x) / 1.
  return as_image(attention(b, h, nullptr, &residual), H, W);
}

}  // namespace sdmpi::blocks
