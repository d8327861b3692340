// UNet2DConditionModel (see include/sdmpi/unet.h): construction mirrors diffusers'
// UNet2DConditionModel.__init__ block by block, so parameter names and shapes come out the same
// (and, on a ListingSink, are make-model's list); forward() mirrors its forward() for the SD 1.x
// and 2.x block types and SDXL's "text_time" added conditioning (add_embedding), with every attn2's
// K/V of the text context computed ahead (cross_attention_kv).
#include "sdmpi/unet.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <span>

#include "models/blocks.h"
#include "sdmpi/error.h"

namespace sdmpi {

using namespace blocks;

namespace {

// diffusers' TimestepEmbedding: linear_1 → SiLU → linear_2 (no post-act); with cond_proj_dim (LCM
// UNets), sample + cond_proj(condition) first, cond_proj a Linear without bias.
struct TimestepEmbedding {
  Linear linear_1, linear_2;
  std::optional<Linear> cond_proj;

  TimestepEmbedding(ParamSink& w, const std::string& name, int in, int dim, int cond_proj_dim = 0)
      : linear_1(w, name + ".linear_1", in, dim), linear_2(w, name + ".linear_2", dim, dim) {
    if (cond_proj_dim > 0) cond_proj.emplace(w, name + ".cond_proj", cond_proj_dim, in, /*with_bias=*/false);
  }
  Tensor operator()(Backend& b, const Tensor& t_emb, const Tensor* condition = nullptr) const {
    Tensor x = t_emb;
    if (condition) x = b.binary(BinaryOp::Add, x, (*cond_proj)(b, *condition));
    return linear_2(b, b.activation(linear_1(b, x), Activation::SiLU));
  }
};

// CrossAttnDownBlock2D (with attentions) or DownBlock2D (without).
struct DownBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Downsample2D> downsampler;
};

// UNetMidBlock2DCrossAttn: resnets[0], then (attentions[i], resnets[i+1]) pairs.
struct MidBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
};

// CrossAttnUpBlock2D (with attentions) or UpBlock2D (without).
struct UpBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  std::optional<Upsample2D> upsampler;
};

template <typename T>
std::vector<T> reversed(std::vector<T> v) {
  std::reverse(v.begin(), v.end());
  return v;
}

std::string idx(const std::string& prefix, int i) { return prefix + "." + std::to_string(i); }

size_t kv_count(const std::vector<Transformer2DModel>& attentions) {
  size_t n = 0;
  for (const Transformer2DModel& t : attentions) n += 2 * t.transformer_blocks.size();
  return n;
}

}  // namespace

struct UNet2DConditionModel::Impl {
  UNetConfig config;
  Conv2d conv_in;
  TimestepEmbedding time_embedding;
  std::vector<DownBlock> down_blocks;
  MidBlock mid_block;
  std::vector<UpBlock> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;
  std::optional<TimestepEmbedding> add_embedding;  // SDXL's "text_time" added conditioning
  size_t num_cross_kv = 0;  // tensors cross_attention_kv() returns

  Impl(const UNetConfig& c, ParamSink& w)
      : config(c),
        conv_in(w, "conv_in", c.in_channels, c.block_out_channels[0], c.conv_in_kernel),
        time_embedding(w, "time_embedding", c.block_out_channels[0], c.time_embed_dim(), c.time_cond_proj_dim),
        conv_norm_out(w, "conv_norm_out", c.norm_num_groups, c.block_out_channels[0],
                      static_cast<float>(c.norm_eps)),
        conv_out(w, "conv_out", c.block_out_channels[0], c.out_channels, c.conv_out_kernel) {
    const int n = c.num_blocks();
    const int temb = c.time_embed_dim();
    const int groups = c.norm_num_groups;
    const float eps = static_cast<float>(c.norm_eps);
    const bool linear = c.use_linear_projection;
    // diffusers registers add_time_proj (no parameters) and add_embedding after time_embedding.
    if (c.has_text_time())
      add_embedding.emplace(w, "add_embedding", c.projection_class_embeddings_input_dim, temb);

    // down
    int out_ch = c.block_out_channels[0];
    for (int i = 0; i < n; ++i) {
      const std::string name = idx("down_blocks", i);
      const int in_ch = out_ch;
      out_ch = c.block_out_channels[i];
      const bool cross_attn = c.down_block_types[i] == "CrossAttnDownBlock2D";
      DownBlock& block = down_blocks.emplace_back();
      for (int l = 0; l < c.layers_per_block[i]; ++l) {
        block.resnets.emplace_back(w, idx(name + ".resnets", l), l == 0 ? in_ch : out_ch, out_ch,
                                   temb, groups, eps);
        if (cross_attn)
          block.attentions.emplace_back(w, idx(name + ".attentions", l), out_ch,
                                        c.num_attention_heads[i], c.transformer_layers_per_block[i],
                                        c.cross_attention_dim[i], groups, linear);
      }
      if (i < n - 1) block.downsampler.emplace(w, name + ".downsamplers.0", out_ch);
    }

    // mid
    const int mid_ch = c.block_out_channels[n - 1];
    const float mid_scale = static_cast<float>(c.mid_block_scale_factor);
    mid_block.resnets.emplace_back(w, "mid_block.resnets.0", mid_ch, mid_ch, temb, groups, eps,
                                   mid_scale);
    mid_block.attentions.emplace_back(w, "mid_block.attentions.0", mid_ch,
                                      c.num_attention_heads[n - 1],
                                      c.transformer_layers_per_block[n - 1],
                                      c.cross_attention_dim[n - 1], groups, linear);
    mid_block.resnets.emplace_back(w, "mid_block.resnets.1", mid_ch, mid_ch, temb, groups, eps,
                                   mid_scale);

    // up: the down path read backwards; the last resnet of a block takes the skip of the level
    // below (in_ch), the others skips of its own level.
    const auto rev_channels = reversed(c.block_out_channels);
    const auto rev_heads = reversed(c.num_attention_heads);
    const auto rev_layers = reversed(c.layers_per_block);
    const auto rev_cross = reversed(c.cross_attention_dim);
    const auto rev_tlayers = reversed(c.transformer_layers_per_block);
    out_ch = rev_channels[0];
    for (int i = 0; i < n; ++i) {
      const std::string name = idx("up_blocks", i);
      const int prev_ch = out_ch;
      out_ch = rev_channels[i];
      const int in_ch = rev_channels[std::min(i + 1, n - 1)];
      const bool cross_attn = c.up_block_types[i] == "CrossAttnUpBlock2D";
      const int num_layers = rev_layers[i] + 1;
      UpBlock& block = up_blocks.emplace_back();
      for (int l = 0; l < num_layers; ++l) {
        const int skip_ch = l == num_layers - 1 ? in_ch : out_ch;
        const int res_in = l == 0 ? prev_ch : out_ch;
        block.resnets.emplace_back(w, idx(name + ".resnets", l), res_in + skip_ch, out_ch, temb,
                                   groups, eps);
        if (cross_attn)
          block.attentions.emplace_back(w, idx(name + ".attentions", l), out_ch, rev_heads[i],
                                        rev_tlayers[i], rev_cross[i], groups, linear);
      }
      if (i < n - 1) block.upsampler.emplace(w, name + ".upsamplers.0", out_ch);
    }

    for (const DownBlock& block : down_blocks) num_cross_kv += kv_count(block.attentions);
    num_cross_kv += kv_count(mid_block.attentions);
    for (const UpBlock& block : up_blocks) num_cross_kv += kv_count(block.attentions);
  }
};

UNet2DConditionModel::UNet2DConditionModel(const UNetConfig& config, ParamSink& weights) {
  config.validate("unet config");
  impl_ = std::make_unique<Impl>(config, weights);
}
UNet2DConditionModel::~UNet2DConditionModel() = default;
UNet2DConditionModel::UNet2DConditionModel(UNet2DConditionModel&&) noexcept = default;
UNet2DConditionModel& UNet2DConditionModel::operator=(UNet2DConditionModel&&) noexcept = default;

const UNetConfig& UNet2DConditionModel::config() const { return impl_->config; }

UNet2DConditionModel UNet2DConditionModel::load(const UNetConfig& config, const WeightSource& source,
                                                 Backend& backend) {
  LoadingSink sink(source, backend, "unet");
  UNet2DConditionModel model(config, sink);
  sink.finish();
  return model;
}

std::vector<ParamSpec> unet_parameters(const UNetConfig& config) {
  ListingSink sink;
  UNet2DConditionModel model(config, sink);
  return sink.take();
}

// The order is the forward pass's: down blocks, mid block, up blocks; within each, attentions in
// order, and per transformer block K then V.
std::vector<Tensor> UNet2DConditionModel::cross_attention_kv(Backend& b,
                                                             const Tensor& encoder_hidden_states) const {
  const Impl& m = *impl_;
  if (encoder_hidden_states.rank() != 3)
    throw Error("unet: encoder_hidden_states must be [B, N, D], got " +
                shape_str(encoder_hidden_states.shape()));
  std::vector<Tensor> kv;
  auto append = [&](const std::vector<Transformer2DModel>& attentions) {
    for (const Transformer2DModel& t : attentions) t.append_cross_kv(b, encoder_hidden_states, kv);
  };
  for (const DownBlock& block : m.down_blocks) append(block.attentions);
  append(m.mid_block.attentions);
  for (const UpBlock& block : m.up_blocks) append(block.attentions);
  return kv;
}

std::vector<float> guidance_scale_embedding(const std::vector<float>& w, int dim) {
  const int half = dim / 2;
  // emb = log(10000) / (half - 1) as float32 tensor ops, then exp(arange(half) * -emb).
  const float step = static_cast<float>(std::log(10000.0f)) / static_cast<float>(half - 1);
  std::vector<float> freq(static_cast<size_t>(half));
  for (int k = 0; k < half; ++k) freq[k] = static_cast<float>(std::exp(static_cast<double>(static_cast<float>(k) * -step)));
  std::vector<float> out(w.size() * static_cast<size_t>(dim), 0.0f);
  for (size_t b = 0; b < w.size(); ++b) {
    const float scaled = w[b] * 1000.0f;
    float* row = out.data() + b * static_cast<size_t>(dim);
    for (int k = 0; k < half; ++k) {
      const double arg = static_cast<double>(scaled * freq[k]);  // float32 product
      row[k] = static_cast<float>(std::sin(arg));
      row[half + k] = static_cast<float>(std::cos(arg));
    }
  }
  return out;
}

std::vector<float> timestep_embedding(const std::vector<float>& timesteps, int dim,
                                      bool flip_sin_to_cos, double freq_shift) {
  const int half = dim / 2;
  // exponent = -ln(max_period) * arange(half, float32), then / (half - shift): float32 ops with
  // the Python scalars rounded to float32.
  const float neg_log_period = static_cast<float>(-std::log(10000.0));
  const float divisor = static_cast<float>(static_cast<double>(half) - freq_shift);
  std::vector<float> freq(half);
  for (int k = 0; k < half; ++k) {
    const float exponent = (neg_log_period * static_cast<float>(k)) / divisor;
    freq[k] = static_cast<float>(std::exp(static_cast<double>(exponent)));
  }
  std::vector<float> out(timesteps.size() * dim, 0.0f);
  for (size_t b = 0; b < timesteps.size(); ++b) {
    float* row = out.data() + b * dim;
    for (int k = 0; k < half; ++k) {
      const double arg = static_cast<double>(timesteps[b] * freq[k]);  // float32 product
      const float s = static_cast<float>(std::sin(arg));
      const float c = static_cast<float>(std::cos(arg));
      row[k] = flip_sin_to_cos ? c : s;
      row[half + k] = flip_sin_to_cos ? s : c;
    }
  }
  return out;
}

Tensor UNet2DConditionModel::time_proj(Backend& b, const std::vector<float>& timesteps) const {
  const UNetConfig& c = impl_->config;
  const int t_dim = c.block_out_channels[0];
  std::vector<float> t_host = timestep_embedding(timesteps, t_dim, c.flip_sin_to_cos, c.freq_shift);
  return b.from_host(t_host.data(), {static_cast<int64_t>(timesteps.size()), t_dim});
}

Tensor UNet2DConditionModel::added_embedding(Backend& b, const AddedConditioning& added) const {
  const Impl& m = *impl_;
  const UNetConfig& c = m.config;
  if (!m.add_embedding) throw Error("unet: this UNet has no added conditioning (addition_embed_type is null)");
  const Tensor& text = added.text_embeds;
  // 6 time ids per item (SDXL base) or 5 (the refiner's, with an aesthetic score): the count and
  // the pooled width together fill add_embedding's input.
  const int64_t B = text.rank() == 2 ? text.dim(0) : 0;
  const int64_t values = B > 0 ? static_cast<int64_t>(added.time_ids.size()) / B : 0;
  if (B < 1 || values * B != static_cast<int64_t>(added.time_ids.size()) ||
      (values != UNetConfig::kMicroConditioningValues && values != UNetConfig::kRefinerTimeIds))
    throw Error("unet: " + std::to_string(added.time_ids.size()) + " micro-conditioning values for text_embeds " +
                shape_str(text.shape()) + " (6 or 5 per item)");
  if (text.dim(1) != c.pooled_text_dim(static_cast<int>(values)))
    throw Error("unet: text_embeds must be [B, " + std::to_string(c.pooled_text_dim(static_cast<int>(values))) +
                "] with " + std::to_string(values) + " time ids per item, got " + shape_str(text.shape()));
  // add_time_proj(time_ids.flatten()) reshaped to [B, 6 * dim]: row-major rows of 6 (5) embeddings.
  const int dim = c.addition_time_embed_dim;
  const std::vector<float> time_host = timestep_embedding(added.time_ids, dim, c.flip_sin_to_cos, c.freq_shift);
  const Tensor time_embeds = b.from_host(time_host.data(), {B, values * dim});
  // cat([text_embeds, time_embeds], -1).to(emb.dtype), then add_embedding.
  const Tensor add_embeds = b.concat_channels(b.cast(text, b.compute_dtype()), b.cast(time_embeds, b.compute_dtype()));
  return (*m.add_embedding)(b, add_embeds);
}

Tensor UNet2DConditionModel::forward(Backend& b, const Tensor& sample,
                                     const std::vector<float>& timesteps,
                                     const Tensor& encoder_hidden_states,
                                     const AddedConditioning* added, const Tensor* timestep_cond) const {
  const UNetConfig& c = impl_->config;
  if (sample.rank() != 4 || sample.dim(3) != c.in_channels)
    throw Error("unet: sample must be [B, h, w, " + std::to_string(c.in_channels) + "], got " +
                shape_str(sample.shape()));
  if (static_cast<int64_t>(timesteps.size()) != sample.dim(0))
    throw Error("unet: " + std::to_string(timesteps.size()) + " timesteps for a batch of " +
                std::to_string(sample.dim(0)));
  std::optional<Tensor> aug_emb;
  if (added) aug_emb = added_embedding(b, *added);
  return forward_embedded(b, sample, time_proj(b, timesteps), encoder_hidden_states, aug_emb ? &*aug_emb : nullptr,
                          timestep_cond);
}

Tensor UNet2DConditionModel::forward_embedded(Backend& b, const Tensor& sample, const Tensor& t_proj,
                                              const Tensor& encoder_hidden_states, const Tensor* aug_emb,
                                              const Tensor* timestep_cond) const {
  if (sample.rank() != 4 || encoder_hidden_states.rank() != 3 ||
      encoder_hidden_states.dim(0) != sample.dim(0))
    throw Error("unet: encoder_hidden_states must be [" + (sample.rank() ? std::to_string(sample.dim(0)) : "B") +
                ", N, D], got " + shape_str(encoder_hidden_states.shape()));
  return forward_embedded(b, sample, t_proj, cross_attention_kv(b, encoder_hidden_states), aug_emb, timestep_cond);
}

Tensor UNet2DConditionModel::forward_embedded(Backend& b, const Tensor& sample, const Tensor& t_proj,
                                              const std::vector<Tensor>& cross_kv, const Tensor* aug_emb,
                                              const Tensor* timestep_cond) const {
  const Impl& m = *impl_;
  const UNetConfig& c = m.config;
  if (sample.rank() != 4 || sample.dim(3) != c.in_channels)
    throw Error("unet: sample must be [B, h, w, " + std::to_string(c.in_channels) + "], got " +
                shape_str(sample.shape()));
  const int64_t B = sample.dim(0);
  const int t_dim = c.block_out_channels[0];
  if (t_proj.rank() != 2 || t_proj.dim(0) != B || t_proj.dim(1) != t_dim)
    throw Error("unet: the timestep projection must be [" + std::to_string(B) + ", " +
                std::to_string(t_dim) + "], got " + shape_str(t_proj.shape()));
  if (cross_kv.size() != m.num_cross_kv)
    throw Error("unet: " + std::to_string(cross_kv.size()) + " cross-attention K/V tensors, the model has " +
                std::to_string(m.num_cross_kv) + " (from cross_attention_kv)");
  for (const Tensor& t : cross_kv)
    if (t.rank() != 3 || t.dim(0) != B)
      throw Error("unet: cross-attention K/V must be [" + std::to_string(B) + ", N, inner], got " +
                  shape_str(t.shape()));
  if (m.add_embedding.has_value() != (aug_emb != nullptr))
    throw Error(m.add_embedding ? "unet: this UNet (addition_embed_type \"text_time\") needs the added conditioning"
                                : "unet: added conditioning given to a UNet without addition_embed_type");
  if (aug_emb && (aug_emb->rank() != 2 || aug_emb->dim(0) != B || aug_emb->dim(1) != c.time_embed_dim()))
    throw Error("unet: the added embedding must be [" + std::to_string(B) + ", " + std::to_string(c.time_embed_dim()) +
                "], got " + shape_str(aug_emb->shape()));
  if ((c.time_cond_proj_dim > 0) != (timestep_cond != nullptr))
    throw Error(c.time_cond_proj_dim > 0 ? "unet: this UNet (time_cond_proj_dim) needs the guidance-scale embedding"
                                         : "unet: a guidance-scale embedding given to a UNet without time_cond_proj_dim");
  if (timestep_cond && (timestep_cond->rank() != 2 || timestep_cond->dim(0) != B ||
                        timestep_cond->dim(1) != c.time_cond_proj_dim))
    throw Error("unet: the guidance-scale embedding must be [" + std::to_string(B) + ", " +
                std::to_string(c.time_cond_proj_dim) + "], got " + shape_str(timestep_cond->shape()));
  // Each attention takes its own K/V pairs, consumed in cross_attention_kv's order.
  size_t next_kv = 0;
  auto attend = [&](const Transformer2DModel& t, const Tensor& x) {
    const size_t n = 2 * t.transformer_blocks.size();
    std::span<const Tensor> kv(cross_kv.data() + next_kv, n);
    next_kv += n;
    return t(b, x, kv);
  };

  // 1. time
  Tensor emb = m.time_embedding(b, t_proj, timestep_cond);
  if (aug_emb) emb = b.binary(BinaryOp::Add, emb, *aug_emb);  // emb + aug_emb (SDXL)
  const Tensor temb = b.activation(emb, Activation::SiLU);  // every resnet's SiLU(temb)
  // Every resnet's time_emb_proj(SiLU(temb)) as one op, in the forward's order; each resnet's norm2
  // reads its columns (one product on a GPU instead of one per resnet; the same bits on the CPU).
  std::vector<const Tensor*> temb_weights, temb_biases;
  auto collect = [&](const std::vector<ResnetBlock2D>& resnets) {
    for (const ResnetBlock2D& r : resnets) {
      SDMPI_CHECK(r.time_emb_proj && r.time_emb_proj->bias.defined(), "unet: a resnet without time_emb_proj");
      temb_weights.push_back(&r.time_emb_proj->weight);
      temb_biases.push_back(&r.time_emb_proj->bias);
    }
  };
  for (const DownBlock& block : m.down_blocks) collect(block.resnets);
  collect(m.mid_block.resnets);
  for (const UpBlock& block : m.up_blocks) collect(block.resnets);
  const Tensor temb_projections = b.linear_stacked(temb, temb_weights, temb_biases);
  int64_t temb_column = 0;
  // skip: the up path's skip connection, concatenated to the input's channels by the resnet's norm1.
  auto resnet = [&](const ResnetBlock2D& r, const Tensor& input, const Tensor* skip = nullptr) {
    Tensor out = skip ? r(b, input, *skip, temb_projections, temb_column) : r(b, input, temb_projections, temb_column);
    temb_column += r.time_emb_proj->out_features;
    return out;
  };

  // 2. pre-process
  Tensor x = sample;
  if (c.center_input_sample)
    x = b.binary_scalar(BinaryOp::Sub, b.binary_scalar(BinaryOp::Mul, x, 2.0f), 1.0f);
  x = m.conv_in(b, x);

  // 3. down
  std::vector<Tensor> skips{x};
  for (const DownBlock& block : m.down_blocks) {
    for (size_t l = 0; l < block.resnets.size(); ++l) {
      x = resnet(block.resnets[l], x);
      if (!block.attentions.empty()) x = attend(block.attentions[l], x);
      skips.push_back(x);
    }
    if (block.downsampler) {
      x = (*block.downsampler)(b, x);
      skips.push_back(x);
    }
  }

  // 4. mid
  x = resnet(m.mid_block.resnets[0], x);
  for (size_t i = 0; i < m.mid_block.attentions.size(); ++i) {
    x = attend(m.mid_block.attentions[i], x);
    x = resnet(m.mid_block.resnets[i + 1], x);
  }

  // 5. up: diffusers forwards the upsample size when a side is not a multiple of the overall
  // factor; otherwise the x2 resize gives the next skip's size anyway.
  const int factor = c.overall_up_factor();
  const bool forward_upsample_size = sample.dim(1) % factor != 0 || sample.dim(2) % factor != 0;
  for (const UpBlock& block : m.up_blocks) {
    for (size_t l = 0; l < block.resnets.size(); ++l) {
      SDMPI_CHECK(!skips.empty(), "unet: more up-block resnets than skip connections");
      Tensor skip = std::move(skips.back());
      skips.pop_back();
      x = resnet(block.resnets[l], x, &skip);
      if (!block.attentions.empty()) x = attend(block.attentions[l], x);
    }
    if (block.upsampler) {
      SDMPI_CHECK(!skips.empty(), "unet: upsampler without a following skip connection");
      if (forward_upsample_size)
        x = (*block.upsampler)(b, x, skips.back().dim(1), skips.back().dim(2));
      else
        x = (*block.upsampler)(b, x);
    }
  }
  SDMPI_CHECK(skips.empty(), "unet: skip connections left over");
  SDMPI_CHECK(next_kv == cross_kv.size(), "unet: cross-attention K/V left over");
  SDMPI_CHECK(temb_column == temb_projections.dim(-1), "unet: time-embedding projections left over");

  // 6. post-process
  return m.conv_out(b, m.conv_norm_out(b, x, /*silu=*/true));
}

}  // namespace sdmpi
