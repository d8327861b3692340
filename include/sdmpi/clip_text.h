// CLIPTextModel: the text tower of CLIP that turns token ids into Stable Diffusion's context.
//
// transformers' modeling_clip.py (docs/reference/sd15-semantics.md §3), pre-LN residual blocks with a causal mask:
//
//   x = token_embedding[ids] + position_embedding[0..L-1]
//   per layer: x = x + out_proj(causal_attention(q/k/v_proj(layer_norm1(x))))
//              x = x + fc2(act(fc1(layer_norm2(x))))        act = quick_gelu (or gelu)
//   last_hidden_state = final_layer_norm(x)                 all L positions (pads included)
//
// clip_skip k (diffusers' encode_prompt): hidden_states[-(k+1)] then final_layer_norm, i.e. the
// output after the first num_hidden_layers - k layers; the last k layers are not run at all.
// Weight names: SD 1.x files (and transformers 4) use "text_model.embeddings...."; transformers 5
// saves the same tensors without the "text_model." prefix. Both load; the optional
// position_ids buffer is ignored.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/model_config.h"
#include "sdmpi/param_sink.h"

namespace sdmpi {

class ClipTextModel {
 public:
  // Declares every parameter to `params` (see UNet2DConditionModel's constructor); `prefix` is
  // prepended to every parameter name ("text_model." or ""; see weight_prefix()).
  ClipTextModel(const ClipTextConfig& config, ParamSink& params,
                const std::string& prefix = "text_model.");
  ~ClipTextModel();
  ClipTextModel(ClipTextModel&&) noexcept;
  ClipTextModel& operator=(ClipTextModel&&) noexcept;

  // "text_model." when the source names its tensors so (any name starts with it), else "".
  static std::string weight_prefix(const WeightSource& source);
  // Builds the model from a weight source on `backend` (prefix detected) and checks the names.
  static ClipTextModel load(const ClipTextConfig& config, const WeightSource& source,
                            Backend& backend);

  // ids: batch rows of L token ids each (L = ids.size() / batch <= max_position_embeddings; 77
  // for SD). Returns [batch, L, hidden_size]: last_hidden_state, or with clip_skip = k
  // (0 <= k <= num_hidden_layers) the hidden state k layers before the last, final-normed.
  Tensor forward(Backend& backend, const std::vector<int32_t>& ids, int batch,
                 int clip_skip = 0) const;

  // SDXL's use of both encoders (diffusers' StableDiffusionXLPipeline.encode_prompt with
  // output_hidden_states=True): hidden_state = hidden_states[-(layers_back + 1)], the output of
  // layer num_hidden_layers - layers_back WITHOUT the final layer norm (layers_back = 1: the
  // penultimate layer, SDXL's context); text_embeds = CLIPTextModelWithProjection's projection of
  // the final-normed last hidden state at each row's pooled position (pooled_positions), [batch,
  // projection_dim], undefined for a model without projection (whose later layers are not run).
  struct HiddenOutputs {
    Tensor hidden_state;  // [batch, L, hidden_size]
    Tensor text_embeds;   // [batch, projection_dim] or undefined
  };
  HiddenOutputs forward_hidden(Backend& backend, const std::vector<int32_t>& ids, int batch,
                               int layers_back = 1) const;
  // transformers' pooled position per row, as flat indices into [batch * L]: argmax(ids) when the
  // config's eos_token_id is 2 (the pre-2023 configs SD and SDXL ship), else the first eos.
  std::vector<int64_t> pooled_positions(const std::vector<int32_t>& ids, int batch) const;

  const ClipTextConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every parameter of CLIPTextModel, declared by the class above; `prefix` "text_model." as SD 1.x
// files name them, or "" as transformers 5 does.
std::vector<ParamSpec> clip_text_parameters(const ClipTextConfig& config,
                                            const std::string& prefix = "text_model.");

}  // namespace sdmpi
