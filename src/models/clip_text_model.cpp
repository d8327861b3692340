// CLIPTextModel (see include/sdmpi/clip_text.h): parameters declared as transformers'
// CLIPTextEmbeddings / CLIPEncoderLayer / final_layer_norm register them (embeddings N(0, 1) in
// make-model), forward as their forward() methods compute it.
#include "sdmpi/clip_text.h"

#include <optional>

#include "models/blocks.h"
#include "sdmpi/error.h"

namespace sdmpi {

using blocks::LayerNorm;
using blocks::Linear;

namespace {

// CLIPEncoderLayer: pre-LN self-attention (q/k/v/out with bias, causal) and MLP.
struct ClipEncoderLayer {
  LayerNorm layer_norm1, layer_norm2;
  Linear q_proj, k_proj, v_proj, out_proj;
  Linear fc1, fc2;

  ClipEncoderLayer(ParamSink& w, const std::string& name, const ClipTextConfig& c)
      : layer_norm1(w, name + ".layer_norm1", c.hidden_size, static_cast<float>(c.layer_norm_eps)),
        layer_norm2(w, name + ".layer_norm2", c.hidden_size, static_cast<float>(c.layer_norm_eps)),
        q_proj(w, name + ".self_attn.q_proj", c.hidden_size, c.hidden_size),
        k_proj(w, name + ".self_attn.k_proj", c.hidden_size, c.hidden_size),
        v_proj(w, name + ".self_attn.v_proj", c.hidden_size, c.hidden_size),
        out_proj(w, name + ".self_attn.out_proj", c.hidden_size, c.hidden_size),
        fc1(w, name + ".mlp.fc1", c.hidden_size, c.intermediate_size),
        fc2(w, name + ".mlp.fc2", c.intermediate_size, c.hidden_size) {}

  Tensor operator()(Backend& b, const Tensor& x, int heads, Activation act) const {
    Tensor h = layer_norm1(b, x);
    Tensor a = b.attention(q_proj(b, h), k_proj(b, h), v_proj(b, h), heads, /*causal=*/true);
    Tensor x1 = out_proj(b, a, &x);  // residual + attention
    h = b.activation(fc1(b, layer_norm2(b, x1)), act);
    return fc2(b, h, &x1);  // residual + MLP
  }
};

}  // namespace

struct ClipTextModel::Impl {
  ClipTextConfig config;
  Tensor token_embedding, position_embedding;
  std::vector<ClipEncoderLayer> layers;
  LayerNorm final_layer_norm;
  std::optional<Linear> text_projection;  // CLIPTextModelWithProjection only
  Activation act;

  Impl(const ClipTextConfig& c, ParamSink& w, const std::string& p)
      : config(c),
        final_layer_norm(w, p + "final_layer_norm", c.hidden_size,
                         static_cast<float>(c.layer_norm_eps)),
        act(c.hidden_act == "gelu" ? Activation::GELU : Activation::QuickGELU) {
    token_embedding = w.param(p + "embeddings.token_embedding.weight", {c.vocab_size, c.hidden_size},
                              WeightKind::Embedding, ParamInit::Embedding, 1);
    position_embedding =
        w.param(p + "embeddings.position_embedding.weight",
                {c.max_position_embeddings, c.hidden_size}, WeightKind::Embedding,
                ParamInit::Embedding, 1);
    layers.reserve(c.num_hidden_layers);
    for (int i = 0; i < c.num_hidden_layers; ++i)
      layers.emplace_back(w, p + "encoder.layers." + std::to_string(i), c);
    // A buffer, not a parameter (arange(77)).
    w.ignore(p + "embeddings.position_ids");
    // CLIPTextModelWithProjection's projection: a sibling of text_model, so never prefixed. A
    // model read as a plain CLIPTextModel (SD 1.x/2.x use no pooled output) ignores it.
    if (c.with_projection)
      text_projection.emplace(w, "text_projection", c.hidden_size, c.projection_dim, /*with_bias=*/false);
    else
      w.ignore("text_projection.weight");
  }
};

ClipTextModel::ClipTextModel(const ClipTextConfig& config, ParamSink& weights,
                             const std::string& prefix) {
  config.validate("text_encoder config");
  impl_ = std::make_unique<Impl>(config, weights, prefix);
}
ClipTextModel::~ClipTextModel() = default;
ClipTextModel::ClipTextModel(ClipTextModel&&) noexcept = default;
ClipTextModel& ClipTextModel::operator=(ClipTextModel&&) noexcept = default;

const ClipTextConfig& ClipTextModel::config() const { return impl_->config; }

std::string ClipTextModel::weight_prefix(const WeightSource& source) {
  for (const std::string& name : source.names())
    if (name.rfind("text_model.", 0) == 0) return "text_model.";
  return "";
}

ClipTextModel ClipTextModel::load(const ClipTextConfig& config, const WeightSource& source,
                                  Backend& backend) {
  LoadingSink sink(source, backend, "text_encoder");
  ClipTextModel model(config, sink, weight_prefix(source));
  sink.finish();
  return model;
}

std::vector<ParamSpec> clip_text_parameters(const ClipTextConfig& config, const std::string& prefix) {
  ListingSink sink;
  ClipTextModel model(config, sink, prefix);
  return sink.take();
}

namespace {
void check_ids(const ClipTextConfig& c, const std::vector<int32_t>& ids, int batch) {
  if (batch <= 0 || ids.empty() || ids.size() % static_cast<size_t>(batch) != 0)
    throw Error("text_encoder: " + std::to_string(ids.size()) + " token ids do not make " +
                std::to_string(batch) + " equal rows");
  const int64_t L = static_cast<int64_t>(ids.size()) / batch;
  if (L > c.max_position_embeddings)
    throw Error("text_encoder: sequence length " + std::to_string(L) +
                " exceeds max_position_embeddings " + std::to_string(c.max_position_embeddings));
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= c.vocab_size)
      throw Error("text_encoder: token id " + std::to_string(ids[i]) + " at position " +
                  std::to_string(i) + " is outside the vocabulary of " +
                  std::to_string(c.vocab_size));
}

// token rows + position rows 0..L-1 for every batch row.
Tensor embed(Backend& b, const ClipTextConfig& c, const Tensor& token_embedding, const Tensor& position_embedding,
             const std::vector<int32_t>& ids, int batch) {
  const int64_t L = static_cast<int64_t>(ids.size()) / batch;
  std::vector<int32_t> positions(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) positions[i] = static_cast<int32_t>(i % L);
  const Shape shape{batch, L, c.hidden_size};
  return b.binary(BinaryOp::Add, b.embedding(ids, token_embedding).reshape(shape),
                  b.embedding(positions, position_embedding).reshape(shape));
}
}  // namespace

Tensor ClipTextModel::forward(Backend& b, const std::vector<int32_t>& ids, int batch,
                              int clip_skip) const {
  const Impl& m = *impl_;
  const ClipTextConfig& c = m.config;
  check_ids(c, ids, batch);
  if (clip_skip < 0 || clip_skip > c.num_hidden_layers)
    throw InputError("clip skip " + std::to_string(clip_skip) + " is outside 0.." +
                     std::to_string(c.num_hidden_layers) + " for a text encoder of " +
                     std::to_string(c.num_hidden_layers) + " layers");

  Tensor x = embed(b, c, m.token_embedding, m.position_embedding, ids, batch);
  const int run_layers = c.num_hidden_layers - clip_skip;
  for (int i = 0; i < run_layers; ++i) x = m.layers[i](b, x, c.num_attention_heads, m.act);
  return m.final_layer_norm(b, x);
}

std::vector<int64_t> ClipTextModel::pooled_positions(const std::vector<int32_t>& ids, int batch) const {
  const ClipTextConfig& c = impl_->config;
  check_ids(c, ids, batch);
  const size_t L = ids.size() / static_cast<size_t>(batch);
  std::vector<int64_t> rows(static_cast<size_t>(batch));
  for (size_t r = 0; r < rows.size(); ++r) {
    const int32_t* row = ids.data() + r * L;
    size_t at = 0;
    if (c.eos_token_id == 2) {  // argmax(ids): the first of the largest id
      for (size_t i = 1; i < L; ++i)
        if (row[i] > row[at]) at = i;
    } else {  // (ids == eos).int().argmax(): the first eos, else position 0
      for (size_t i = 0; i < L; ++i)
        if (row[i] == c.eos_token_id) {
          at = i;
          break;
        }
    }
    rows[r] = static_cast<int64_t>(r * L + at);
  }
  return rows;
}

ClipTextModel::HiddenOutputs ClipTextModel::forward_hidden(Backend& b, const std::vector<int32_t>& ids, int batch,
                                                           int layers_back) const {
  const Impl& m = *impl_;
  const ClipTextConfig& c = m.config;
  check_ids(c, ids, batch);
  if (layers_back < 1 || layers_back > c.num_hidden_layers)
    throw InputError("hidden state " + std::to_string(layers_back) + " layers before the last is outside 1.." +
                     std::to_string(c.num_hidden_layers) + " for a text encoder of " +
                     std::to_string(c.num_hidden_layers) + " layers");
  HiddenOutputs out;
  Tensor x = embed(b, c, m.token_embedding, m.position_embedding, ids, batch);
  // hidden_states[0] is the embedding, hidden_states[i] the output of layer i: hidden_states[-(k+1)]
  // is the output of layer num_hidden_layers - k.
  const int keep_after = c.num_hidden_layers - layers_back;
  if (keep_after == 0) out.hidden_state = x;
  const int run_layers = m.text_projection ? c.num_hidden_layers : keep_after;
  for (int i = 0; i < run_layers; ++i) {
    x = m.layers[i](b, x, c.num_attention_heads, m.act);
    if (i + 1 == keep_after) out.hidden_state = x;
  }
  if (m.text_projection) {
    // pooled = final_layer_norm(last)[eos rows], gathered as embedding rows of [B * L, hidden].
    const int64_t L = static_cast<int64_t>(ids.size()) / batch;
    const Tensor normed = m.final_layer_norm(b, x).reshape({batch * L, c.hidden_size});
    std::vector<int32_t> rows;
    for (int64_t r : pooled_positions(ids, batch)) rows.push_back(static_cast<int32_t>(r));
    out.text_embeds = (*m.text_projection)(b, b.embedding(rows, normed).reshape({batch, c.hidden_size}));
  }
  return out;
}

}  // namespace sdmpi
