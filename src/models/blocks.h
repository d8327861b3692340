// The building blocks the UNet and the VAE decoder share, named and wired as in diffusers.
//
// Each block declares its parameters to a ParamSink by their diffusers names (prefix +
// ".conv1.weight", ...) with the PyTorch shapes its constructor arguments imply: loaded, a wrong
// config shows up as a list of mis-shaped names; listed, the same constructors give make-model's
// parameter list. Blocks run by calling the ops of sdmpi::Backend only.
// Activations are channels-last: images [B, H, W, C], token sequences [B, N, C]; an image viewed as
// tokens is a free reshape (token index y*W + x, diffusers' permute(0,2,3,1).reshape).
//
// What diffusers spells as two steps and we fuse, because the result is the same float32 value:
//   - GroupNorm followed by SiLU           → group_norm(..., silu = true)
//   - Linear/Conv followed by "+ residual" → linear/conv2d(..., residual) (the residual is added
//                                             last, as `output + residual` adds it)
//   - SiLU(temb), the same for every resnet of one forward, is computed once by the caller.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/param_sink.h"

namespace sdmpi::blocks {

// nn.Linear: weight [out, in], optional bias [out].
struct Linear {
  Tensor weight, bias;
  int in_features = 0, out_features = 0;

  Linear() = default;
  Linear(ParamSink& w, const std::string& name, int in, int out, bool with_bias = true);
  Tensor operator()(Backend& b, const Tensor& x, const Tensor* residual = nullptr) const;
};

// nn.Conv2d with a square kernel, zero padding `pad` on every side, bias.
struct Conv2d {
  Tensor weight, bias;
  int in_channels = 0, out_channels = 0, kernel = 1, stride = 1, pad = 0;

  Conv2d() = default;
  // pad < 0: (kernel - 1) / 2, i.e. "same" for odd kernels at stride 1.
  Conv2d(ParamSink& w, const std::string& name, int in, int out, int kernel, int stride = 1,
         int pad = -1);
  Tensor operator()(Backend& b, const Tensor& x, const Tensor* residual = nullptr) const;
};

// nn.GroupNorm(groups, channels, eps, affine=True), optionally followed by SiLU.
struct GroupNorm {
  Tensor weight, bias;
  int groups = 32;
  float eps = 1e-5f;

  GroupNorm() = default;
  GroupNorm(ParamSink& w, const std::string& name, int groups, int channels, float eps);
  Tensor operator()(Backend& b, const Tensor& x, bool silu = false) const;
};

// nn.LayerNorm(channels, eps) over the last dimension.
struct LayerNorm {
  Tensor weight, bias;
  float eps = 1e-5f;

  LayerNorm() = default;
  LayerNorm(ParamSink& w, const std::string& name, int channels, float eps);
  Tensor operator()(Backend& b, const Tensor& x) const;
};

// diffusers' ResnetBlock2D with time_embedding_norm "default", pre-norm, SiLU:
//   h = conv1(SiLU(norm1(x))); h += time_emb_proj(SiLU(temb)) per channel;
//   h = conv2(SiLU(norm2(h)));  out = (shortcut(x) + h) / output_scale_factor
// shortcut = conv_shortcut (1x1) when in != out, else identity. temb_channels 0: no time embedding
// (the VAE's resnets).
struct ResnetBlock2D {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  std::optional<Linear> time_emb_proj;
  std::optional<Conv2d> conv_shortcut;
  float output_scale_factor = 1.0f;

  ResnetBlock2D(ParamSink& w, const std::string& name, int in, int out, int temb_channels,
                int groups, float eps, float output_scale_factor = 1.0f);
  // temb_silu: SiLU(temb) [B, temb_channels], or nullptr when the block has no time embedding.
  Tensor operator()(Backend& b, const Tensor& x, const Tensor* temb_silu) const;
  // The UNet's form: time_emb_proj(SiLU(temb)) is columns [temb_column, temb_column + out) of
  // temb_projections [B, total], every ResNet's projection of one UNet call computed as one op
  // (Backend::linear_stacked over each time_emb_proj's weight and bias); norm2 reads its columns in
  // place. Same values as the form above.
  Tensor operator()(Backend& b, const Tensor& x, const Tensor& temb_projections, int64_t temb_column) const;
  // The up path's form: the input is the channel concat [x, skip], which norm1 reads and the
  // shortcut gets from the same op (Backend::concat_group_norm: no separate concat on a GPU).
  Tensor operator()(Backend& b, const Tensor& x, const Tensor& skip, const Tensor& temb_projections,
                    int64_t temb_column) const;

 private:
  // skip: null, or the second half of the input's channels. offset: null, or the [B, Ct] tensor
  // whose columns [offset_column, offset_column + out) norm2 adds.
  Tensor forward(Backend& b, const Tensor& x, const Tensor* skip, const Tensor* offset, int64_t offset_column) const;
};

// diffusers' Attention (attention_processor.py) as the SD blocks use it: to_q/to_k/to_v (bias
// optional), scaled dot-product attention over `heads` heads of dim_head, to_out.0 with bias.
// Self-attention when context is null. The caller's residual is added by to_out.0.
struct Attention {
  Linear to_q, to_k, to_v, to_out;
  int heads = 1;

  Attention(ParamSink& w, const std::string& name, int query_dim, int context_dim, int heads,
            int dim_head, bool qkv_bias);
  Tensor operator()(Backend& b, const Tensor& x, const Tensor* context,
                    const Tensor* residual) const;
  // Cross-attention with K and V computed beforehand: to_k(context), to_v(context) depend only on
  // the text context, so the UNet computes them once per batch, not once per step (the same
  // linear op on the same values, hence the same bits).
  Tensor with_kv(Backend& b, const Tensor& x, const Tensor& k, const Tensor& v,
                 const Tensor* residual) const;
};

// diffusers' FeedForward with GEGLU: net.0.proj Linear(dim, 2*inner) → a * GELU(gate) →
// net.2 Linear(inner, dim), inner = 4 * dim.
struct FeedForward {
  Linear proj, out;

  FeedForward(ParamSink& w, const std::string& name, int dim, int mult = 4);
  Tensor operator()(Backend& b, const Tensor& x, const Tensor* residual) const;
};

// diffusers' BasicTransformerBlock, norm_type "layer_norm" (eps 1e-5), no attention bias:
//   h = attn1(norm1(h)) + h;  h = attn2(norm2(h), context) + h;  h = ff(norm3(h)) + h
// with attn2's K and V of the context computed beforehand (append_cross_kv, then operator()).
struct BasicTransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  FeedForward ff;

  BasicTransformerBlock(ParamSink& w, const std::string& name, int dim, int heads, int dim_head,
                        int cross_attention_dim);
  // Appends attn2's to_k(context) and to_v(context).
  void append_cross_kv(Backend& b, const Tensor& context, std::vector<Tensor>& kv) const;
  Tensor operator()(Backend& b, const Tensor& tokens, const Tensor& k, const Tensor& v) const;
};

// diffusers' Transformer2DModel on continuous input (the "attentions.i" of the UNet blocks):
//   res = x; h = GroupNorm(groups, C, eps 1e-6)(x); h = proj_in(h); tokens;
//   h = transformer_blocks(h, context); out = proj_out(h) + res
// proj_in/proj_out are 1x1 convs, or Linear layers with use_linear_projection (same product on
// channels-last data; only the parameter shapes differ).
struct Transformer2DModel {
  GroupNorm norm;
  std::optional<Conv2d> proj_in_conv, proj_out_conv;
  std::optional<Linear> proj_in_linear, proj_out_linear;
  std::vector<BasicTransformerBlock> transformer_blocks;
  int inner_dim = 0;

  Transformer2DModel(ParamSink& w, const std::string& name, int channels, int heads,
                     int num_layers, int cross_attention_dim, int norm_groups,
                     bool use_linear_projection);
  // Appends K then V of every transformer block, in order (2 * transformer_blocks.size()).
  void append_cross_kv(Backend& b, const Tensor& context, std::vector<Tensor>& kv) const;
  // kv: what append_cross_kv appended for this model's blocks.
  Tensor operator()(Backend& b, const Tensor& x, std::span<const Tensor> kv) const;
};

// diffusers' Downsample2D(use_conv=True): 3x3 conv, stride 2. padding 1 (the UNet): zero padding 1
// on every side. padding 0 (the VAE encoder): diffusers pads (0, 1, 0, 1), right and bottom only,
// before an unpadded conv (Backend::pad2d, then the conv).
struct Downsample2D {
  Conv2d conv;
  int padding = 1;

  Downsample2D(ParamSink& w, const std::string& name, int channels, int padding = 1);
  Tensor operator()(Backend& b, const Tensor& x) const;
};

// diffusers' Upsample2D(use_conv=True): nearest-neighbour resize (x2, or to the size the UNet
// forwards for sides that are not multiples of its overall factor), then a 3x3 conv.
struct Upsample2D {
  Conv2d conv;

  Upsample2D(ParamSink& w, const std::string& name, int channels);
  Tensor operator()(Backend& b, const Tensor& x, int64_t out_h, int64_t out_w) const;
  Tensor operator()(Backend& b, const Tensor& x) const { return (*this)(b, x, 2 * x.dim(1), 2 * x.dim(2)); }
};

// diffusers' single-head spatial attention of the VAE mid block (Attention with group_norm,
// residual_connection, biases on q/k/v): out = to_out(attn(q, k, v)) + x over GroupNorm'd tokens.
struct SpatialSelfAttention {
  GroupNorm group_norm;
  Attention attention;

  SpatialSelfAttention(ParamSink& w, const std::string& name, int channels, int heads,
                       int norm_groups, float eps);
  Tensor operator()(Backend& b, const Tensor& x) const;
};

// [B, H, W, C] → [B, H*W, C] and back (free reshapes).
inline Tensor as_tokens(const Tensor& x) { return x.reshape({x.dim(0), x.dim(1) * x.dim(2), x.dim(3)}); }
inline Tensor as_image(const Tensor& t, int64_t h, int64_t w) { return t.reshape({t.dim(0), h, w, t.dim(2)}); }

}  // namespace sdmpi::blocks
