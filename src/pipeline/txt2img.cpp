// Txt2ImgPipeline: diffusers' StableDiffusionPipeline.__call__ for a batch of work items.
//
// The order of operations is diffusers' (docs/reference/sd15-semantics.md §6.2): encode prompts (negative first
// in the CFG batch), draw each item's latents from its own torch-compatible generator, scale by
// init_noise_sigma, then per timestep: cat([x, x]) → scale_model_input → UNet → chunk → CFG
// (three separately rounded ops) → scheduler.step (ancestral noise from each item's generator),
// and last `latents / scaling_factor` (one division) → VAE → uint8 as diffusers rounds it.
//
// One pipeline for every device (docs/architecture.md): everything below is Backend calls, so the
// CPU golden tests run the very loop a GPU runs. What differs by device is decided by the backend:
//   - dtypes: latents and every scheduler op stay float32, whatever the compute dtype; the UNet
//     and the VAE run in the compute dtype, with casts at their inputs and the UNet's output (no-ops
//     where the compute dtype is float32, as on the CPU). The initial latents (and ancestral noise)
//     are drawn as diffusers' pipeline draws them in the compute dtype, then widened exactly to
//     float32. diffusers keeps fp16 latents and upcasts only inside some schedulers (Euler, DPM++);
//     float32 throughout is the better-conditioned choice and costs nothing measurable.
//   - the UNet call (cast → cat([x, x]) → UNet → cast to float32) is one Backend::run_graph step,
//     keyed by (batch, latent height, latent width, CFG on/off, pipeline): the CPU runs it as is, the
//     CUDA backend captures it once as a CUDA graph and replays it. Its inputs are the scaled
//     latents, the timestep projection (precomputed on the host for all steps, uploaded once) and
//     every cross-attention's K and V of the text embeddings (computed once per batch, right after
//     the text encoder: the context enters the UNet only through them); the guidance combine and
//     the scheduler step run after it (their scalars change per step or per batch).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <set>

#include "sdmpi/clip_text.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "sdmpi/model_config.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/scheduler.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"
#include "pipeline/img2img.h"
#include "pipeline/weighted_prompt.h"

namespace sdmpi {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// A fault-injection hook for tests/faults: SDMPI_FAULT_NAN_ITEMS=3,5 makes the items with those
// global indices come out of the denoising loop as NaN, as if the UNet had produced them, so the
// test can check that such an item is recorded as failed with its reason and the job goes on.
// Read once; unset (always, outside the tests) it costs one lookup per batch.
const std::set<int64_t>& fault_nan_items() {
  static const std::set<int64_t> items = [] {
    std::set<int64_t> out;
    const char* env = std::getenv("SDMPI_FAULT_NAN_ITEMS");
    for (const char* p = env; p && *p;) {
      char* end = nullptr;
      const long long v = std::strtoll(p, &end, 10);
      if (end == p) break;
      out.insert(v);
      p = *end == ',' ? end + 1 : end;
    }
    return out;
  }();
  return items;
}

// Graph variants (GraphKey::variant) of one pipeline: the UNet call with and without CFG have
// different structures. The pipeline's serial number goes above them, so two pipelines (two
// models) on one backend never replay each other's graphs, whose weight addresses are baked in.
constexpr int64_t kUnetStepCfg = 0, kUnetStepNoCfg = 2, kVariantsPerPipeline = 16;
std::atomic<int64_t> next_pipeline_serial{1};

// diffusers' rescale_noise_cfg(noise_cfg, noise_pred_text, guidance_rescale) for [B, h, w, c]
// float32 tensors, per item: std_text / std_cfg (torch.std: unbiased, accumulated in double, then
// float32), noise_cfg * ratio, then phi * rescaled + (1 - phi) * noise_cfg, each op rounded to
// float32 as torch rounds it (the Python scalars phi and 1 - phi become float32). phi is per item
// (items with phi 0 are left as they are), so items that differ only in it share a batch. On the
// host: a per-step round trip of one latent-sized tensor, only when some item has phi > 0.
Tensor rescale_noise_cfg(Backend& be, const Tensor& noise_cfg, const Tensor& noise_pred_text,
                         const std::vector<WorkItem>& items) {
  std::vector<float> cfg = be.to_host(noise_cfg);
  const std::vector<float> text = be.to_host(noise_pred_text);
  const Shape& shape = noise_cfg.shape();
  const size_t per_item = cfg.size() / static_cast<size_t>(shape[0]);
  auto std_of = [per_item](const float* v) {
    double mean = 0;
    for (size_t i = 0; i < per_item; ++i) mean += v[i];
    mean /= static_cast<double>(per_item);
    double ss = 0;
    for (size_t i = 0; i < per_item; ++i) ss += (v[i] - mean) * (v[i] - mean);
    return static_cast<float>(std::sqrt(ss / static_cast<double>(per_item - 1)));
  };
  for (size_t b = 0; b < static_cast<size_t>(shape[0]); ++b) {
    const float phi = items[b].params.guidance_rescale;
    if (!(phi > 0.0f)) continue;
    const float one_minus_phi = static_cast<float>(1.0 - static_cast<double>(phi));
    float* x = cfg.data() + b * per_item;
    const float ratio = std_of(text.data() + b * per_item) / std_of(x);
    for (size_t i = 0; i < per_item; ++i) {
      const float rescaled = x[i] * ratio;
      x[i] = phi * rescaled + one_minus_phi * x[i];
    }
  }
  return be.from_host(cfg.data(), shape);
}
}  // namespace

namespace {

// diffusers' denoising_end on the first stage (StableDiffusionXLPipeline.__call__): of the calls from
// `first` on, those whose timestep is >= the cutoff (docs: include/sdmpi/job.h denoising_cutoff); the
// schedule's num_train_timesteps is its alphas_cumprod's length.
size_t first_stage_end_call(const Scheduler& scheduler, size_t first, float refiner_start) {
  const float cutoff = static_cast<float>(denoising_cutoff(static_cast<int>(scheduler.alphas_cumprod().size()), refiner_start));
  const std::vector<float>& t = scheduler.timesteps();
  return first + static_cast<size_t>(std::count_if(t.begin() + static_cast<ptrdiff_t>(first), t.end(),
                                                   [cutoff](float ts) { return ts >= cutoff; }));
}

// get_timesteps with denoising_start (StableDiffusionXLImg2ImgPipeline): the calls whose timestep is
// below the cutoff, counted over the whole schedule, run from len - count on. The second-order
// adjustment (one call more when the count is even) applies to no sampler here: all have order 1.
size_t second_stage_first_call(const Scheduler& scheduler, float refiner_start) {
  const float cutoff = static_cast<float>(denoising_cutoff(static_cast<int>(scheduler.alphas_cumprod().size()), refiner_start));
  const std::vector<float>& t = scheduler.timesteps();
  return t.size() - static_cast<size_t>(std::count_if(t.begin(), t.end(), [cutoff](float ts) { return ts < cutoff; }));
}

}  // namespace

std::string default_sampler(const nlohmann::json& scheduler_config) {
  std::string cls = scheduler_config.value("_class_name", std::string("PNDMScheduler"));
  if (const SamplerInfo* s = sampler_for_diffusers_class(cls)) return s->name;
  log::warn("the model's scheduler " + cls + " is not supported; using pndm (choose one with --sampler)");
  return "pndm";
}

struct Txt2ImgPipeline::Impl {
  ClipTokenizer tokenizer;
  ClipTextConfig text_config;
  // SDXL (a UNet with "text_time" added conditioning): the second tokenizer and text encoder
  // (CLIPTextModelWithProjection), and whether CFG without a negative prompt uses zeros
  // (model_index.json's force_zeros_for_empty_prompt, true by default as in diffusers).
  bool sdxl = false;
  bool force_zeros_for_empty_prompt = true;
  // The SDXL refiner's layout (model_index.json: no text_encoder, requires_aesthetics_score): the
  // context is encoder 2's alone (tokenizer and text_config are then encoder 2's too) and
  // add_time_ids are (original size, crop, aesthetic score). It runs img2img only.
  bool refiner_layout = false;
  bool requires_aesthetics_score = false;
  // Two stages: the pipeline that continues items with refiner_start > 0 (set_refiner), and, while
  // this pipeline is that second stage, what the first handed over.
  Txt2ImgPipeline* refiner = nullptr;
  struct Handoff {
    Tensor latents;                          // the base's latents after its last call, [B, h, w, C] F32
    std::vector<TorchGenerator*> generators;  // the items' generators, as the base left them
    int calls_before = 0, calls_total = 0;    // progress: the base's calls, both stages'
  };
  const Handoff* handoff = nullptr;
  ClipTokenizer tokenizer_2;
  ClipTextConfig text_config_2;
  std::optional<ClipTextModel> text_encoder_2;
  UNetConfig unet_config;
  VAEConfig vae_config;
  SchedulerConfig scheduler_config;
  std::optional<ClipTextModel> text_encoder;
  std::optional<UNet2DConditionModel> unet;
  std::optional<AutoencoderKLDecoder> vae;
  DType vae_dtype = DType::F32;  // the compute dtype, or F32 for an upcast SDXL VAE (vae_compute_dtype)
  // img2img's VAE encoder, loaded on the first batch with init images (src/pipeline/img2img.h).
  std::shared_ptr<WeightSource> vae_weights;
  std::optional<AutoencoderKLEncoder> vae_encoder;
  Timings timings;
  std::vector<float> last_latents;
  int64_t serial = next_pipeline_serial.fetch_add(1);
  bool captured_graphs = false;  // whether this pipeline may have left captured graphs in the backend

  // weighted_chunks > 0: A1111 prompt weighting with that many chunks per prompt.
  AddedConditioning sdxl_conditioning(Backend& be, const std::vector<WorkItem>& items, bool cfg, Tensor& context,
                                      size_t weighted_chunks = 0) const;
};

// SDXL's encode_prompt (diffusers' StableDiffusionXLPipeline, docs/reference/sdxl-semantics.md):
// each encoder's hidden state before its last layer (hidden_states[-(clip_skip + 2)], no final
// layer norm), the two concatenated along features; the pooled embedding is encoder 2's
// text_embeds. With CFG, negatives come first in the batch: encoded the same way but always from
// hidden_states[-2] (diffusers applies clip skip to the prompt only), or, for an item without a
// negative prompt when force_zeros_for_empty_prompt holds, zeros (context and pooled alike):
// diffusers' negative_prompt=None, per item. The micro-conditioning values (add_time_ids) are the
// same for the negative half. Sets `context` ([B', 77, D1 + D2]) and returns the added
// conditioning for the UNet.
AddedConditioning Txt2ImgPipeline::Impl::sdxl_conditioning(Backend& be, const std::vector<WorkItem>& items, bool cfg,
                                                         Tensor& context, size_t weighted_chunks) const {
  // The refiner has encoder 2 only: its states are the whole context (encode_prompt's single
  // (tokenizer_2, text_encoder_2) pair).
  const bool both = text_encoder.has_value();
  const int B = static_cast<int>(items.size());
  const int max_len = text_config.max_position_embeddings;
  auto ids_of = [&](const ClipTokenizer& tokenizer, bool negative) {
    std::vector<int32_t> ids;
    for (const WorkItem& it : items) {
      const ClipEncoding e = tokenizer.encode_prompt(negative ? it.params.negative_prompt : it.params.prompt, max_len);
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    }
    return ids;
  };
  // A1111 weighting: each encoder weighted on its own (A1111's two embedders), joined along the
  // features; the pooled embedding is encoder 2's of each prompt's first chunk, unweighted (A1111's
  // zs[0].pooled, taken before the emphasis).
  auto weighted_encode = [&](bool negative, int layers_back, Tensor& pooled) {
    std::vector<std::string> prompts;
    for (const WorkItem& it : items) prompts.push_back(negative ? it.params.negative_prompt : it.params.prompt);
    const Tensor one = both ? a1111_weighted_context(be, tokenizer, prompts, weighted_chunks, [&](const std::vector<int32_t>& ids, int rows) {
      return text_encoder->forward_hidden(be, ids, rows, layers_back).hidden_state;
    }) : Tensor();
    const Tensor two = a1111_weighted_context(be, tokenizer_2, prompts, weighted_chunks, [&](const std::vector<int32_t>& ids, int rows) {
      ClipTextModel::HiddenOutputs out = text_encoder_2->forward_hidden(be, ids, rows, layers_back);
      std::vector<Tensor> first_chunks;
      for (int64_t b = 0; b < B; ++b)
        first_chunks.push_back(out.text_embeds.rows(b * static_cast<int64_t>(weighted_chunks), b * static_cast<int64_t>(weighted_chunks) + 1));
      pooled = be.concat_batch(first_chunks);
      return out.hidden_state;
    });
    return both ? be.concat_channels(one, two) : two;
  };
  auto encode = [&](bool negative, int layers_back, Tensor& pooled) {
    if (weighted_chunks > 0) return weighted_encode(negative, layers_back, pooled);
    ClipTextModel::HiddenOutputs two = text_encoder_2->forward_hidden(be, ids_of(tokenizer_2, negative), B, layers_back);
    pooled = two.text_embeds;
    if (!both) return two.hidden_state;
    const ClipTextModel::HiddenOutputs one = text_encoder->forward_hidden(be, ids_of(tokenizer, negative), B, layers_back);
    return be.concat_channels(one.hidden_state, two.hidden_state);
  };
  Tensor pooled;
  context = encode(false, items.front().params.clip_skip + 1, pooled);

  // add_time_ids (StableDiffusionXLImg2ImgPipeline._get_add_time_ids; txt2img's are the same):
  // original size + crop + target size, or with requires_aesthetics_score original size + crop +
  // aesthetic score, the negative half (original size, negative crop = (0, 0), negative aesthetic
  // score). Sizes default to the image's (height, width).
  AddedConditioning added;
  std::vector<float> negative_time_ids;
  for (const WorkItem& it : items) {
    const GenerationParams& q = it.params;
    const auto pick = [](int given, int fallback) { return static_cast<float>(given > 0 ? given : fallback); };
    const float original_h = pick(q.original_height, q.height), original_w = pick(q.original_width, q.width);
    if (requires_aesthetics_score) {
      const float positive[] = {original_h, original_w, static_cast<float>(q.crop_top), static_cast<float>(q.crop_left),
                                q.aesthetic_score};
      const float negative[] = {original_h, original_w, 0.0f, 0.0f, q.negative_aesthetic_score};
      added.time_ids.insert(added.time_ids.end(), std::begin(positive), std::end(positive));
      negative_time_ids.insert(negative_time_ids.end(), std::begin(negative), std::end(negative));
      continue;
    }
    const float values[UNetConfig::kMicroConditioningValues] = {
        original_h, original_w, static_cast<float>(q.crop_top),
        static_cast<float>(q.crop_left),   pick(q.target_height, q.height), pick(q.target_width, q.width)};
    added.time_ids.insert(added.time_ids.end(), std::begin(values), std::end(values));
    negative_time_ids.insert(negative_time_ids.end(), std::begin(values), std::end(values));
  }
  if (!cfg) {
    added.text_embeds = pooled;
    return added;
  }

  auto zeroed = [&](const WorkItem& it) { return force_zeros_for_empty_prompt && it.params.negative_prompt.empty(); };
  const size_t zero_items = static_cast<size_t>(std::count_if(items.begin(), items.end(), zeroed));
  Tensor neg_context, neg_pooled;
  if (zero_items < items.size()) neg_context = encode(true, 1, neg_pooled);
  if (zero_items > 0) {
    // Row by row: the encoded negative, or zeros.
    const Shape ctx_row{1, context.dim(1), context.dim(2)}, pooled_row{1, pooled.dim(1)};
    const std::vector<float> zeros(static_cast<size_t>(std::max(shape_numel(ctx_row), shape_numel(pooled_row))), 0.0f);
    const Tensor zero_ctx = be.cast(be.from_host(zeros.data(), ctx_row), context.dtype());
    const Tensor zero_pooled = be.cast(be.from_host(zeros.data(), pooled_row), pooled.dtype());
    std::vector<Tensor> ctx_rows, pooled_rows;
    for (int64_t b = 0; b < B; ++b) {
      const bool zero = zeroed(items[static_cast<size_t>(b)]);
      ctx_rows.push_back(zero ? zero_ctx : neg_context.rows(b, b + 1));
      pooled_rows.push_back(zero ? zero_pooled : neg_pooled.rows(b, b + 1));
    }
    neg_context = be.concat_batch(ctx_rows);
    neg_pooled = be.concat_batch(pooled_rows);
  }
  context = be.concat_batch({neg_context, context});
  added.text_embeds = be.concat_batch({neg_pooled, pooled});
  negative_time_ids.insert(negative_time_ids.end(), added.time_ids.begin(), added.time_ids.end());
  added.time_ids = std::move(negative_time_ids);
  return added;
}

Txt2ImgPipeline::Txt2ImgPipeline(const ModelSource& model, Backend& backend)
    : impl_(std::make_unique<Impl>()), backend_(backend) {
  Impl& m = *impl_;
  m.unet_config = UNetConfig::from_json(model.config("unet"), model.spec() + " unet/config.json");
  m.vae_config = VAEConfig::from_json(model.config("vae"), model.spec() + " vae/config.json");
  m.scheduler_config = SchedulerConfig::from_json(model.config("scheduler"), model.spec() + " scheduler/scheduler_config.json");
  m.sdxl = m.unet_config.has_text_time();
  m.refiner_layout = m.sdxl && !model.has("text_encoder");
  if (!m.refiner_layout) {
    m.tokenizer = model.tokenizer();
    m.text_config = ClipTextConfig::from_json(model.config("text_encoder"), model.spec() + " text_encoder/config.json");
    m.text_encoder.emplace(ClipTextModel::load(m.text_config, *model.weights("text_encoder"), backend));
  }
  if (m.sdxl) {
    const nlohmann::json index = model.config("model_index");
    const auto aesthetic = index.find("requires_aesthetics_score");
    m.requires_aesthetics_score = aesthetic != index.end() && aesthetic->is_boolean() && aesthetic->get<bool>();
    const int time_ids = m.requires_aesthetics_score ? UNetConfig::kRefinerTimeIds : UNetConfig::kMicroConditioningValues;
    const std::string where = model.spec() + " text_encoder_2/config.json";
    if (!model.has("text_encoder_2"))
      throw InputError(model.spec() + ": the UNet has SDXL's \"text_time\" added conditioning, but there is no text_encoder_2");
    m.tokenizer_2 = model.tokenizer("tokenizer_2");
    m.text_config_2 = ClipTextConfig::from_json(model.config("text_encoder_2"), where);
    // diffusers loads it as the class model_index.json names, CLIPTextModelWithProjection, whatever
    // the config's "architectures" say (or when they are absent).
    m.text_config_2.with_projection = true;
    if (m.text_config_2.projection_dim != m.unet_config.pooled_text_dim(time_ids))
      throw InputError(where + ": projection_dim " + std::to_string(m.text_config_2.projection_dim) +
                       " does not match the UNet's pooled text width " +
                       std::to_string(m.unet_config.pooled_text_dim(time_ids)) +
                       " (projection_class_embeddings_input_dim - " + std::to_string(time_ids) +
                       " x addition_time_embed_dim; model_index.json's requires_aesthetics_score is " +
                       (m.requires_aesthetics_score ? "true" : "false") + ")");
    const int first_width = m.refiner_layout ? 0 : m.text_config.hidden_size;
    if (first_width + m.text_config_2.hidden_size != m.unet_config.cross_attention_dim.front())
      throw InputError(where + ": the text encoders' widths " + (m.refiner_layout ? "" : std::to_string(first_width) + " + ") +
                       std::to_string(m.text_config_2.hidden_size) + " do not make the UNet's cross_attention_dim " +
                       std::to_string(m.unet_config.cross_attention_dim.front()));
    m.text_encoder_2.emplace(ClipTextModel::load(m.text_config_2, *model.weights("text_encoder_2"), backend));
    if (m.refiner_layout) {  // encoder 2 stands in wherever the pipeline reads "the" tokenizer
      m.tokenizer = m.tokenizer_2;
      m.text_config = m.text_config_2;
    }
    const auto flag = index.find("force_zeros_for_empty_prompt");
    if (flag != index.end() && flag->is_boolean()) m.force_zeros_for_empty_prompt = flag->get<bool>();
  }
  m.unet.emplace(UNet2DConditionModel::load(m.unet_config, *model.weights("unet"), backend));
  m.vae_weights = model.weights("vae");
  m.vae_dtype = vae_compute_dtype(m.vae_config, m.sdxl, backend.compute_dtype());
  if (m.vae_dtype != backend.compute_dtype())
    log::info(std::string("the VAE computes in ") + dtype_name(m.vae_dtype) + " (force_upcast: SDXL's VAE overflows " +
              dtype_name(backend.compute_dtype()) + ")");
  m.vae.emplace(AutoencoderKLDecoder::load(m.vae_config, *m.vae_weights, backend, m.vae_dtype));
}

Txt2ImgPipeline::~Txt2ImgPipeline() {
  // Captured graphs bake in this pipeline's weight addresses: free them with the weights. This drops
  // other pipelines' graphs on the backend too; they are captured again on their next call.
  if (impl_ && impl_->captured_graphs) {
    try {
      backend_.drop_graphs();
    } catch (const std::exception& e) {
      log::warn(std::string("could not free the pipeline's captured graphs: ") + e.what());
    }
  }
}

const Txt2ImgPipeline::Timings& Txt2ImgPipeline::timings() const { return impl_->timings; }
const std::vector<float>& Txt2ImgPipeline::last_latents() const { return impl_->last_latents; }
void Txt2ImgPipeline::set_refiner(Txt2ImgPipeline* refiner) { impl_->refiner = refiner; }
bool Txt2ImgPipeline::is_refiner() const { return impl_->refiner_layout; }

int Txt2ImgPipeline::default_size() const {
  int latent = impl_->unet_config.sample_size > 0 ? impl_->unet_config.sample_size : 64;
  return latent * impl_->vae_config.scale_factor();
}

std::vector<ImageResult> Txt2ImgPipeline::generate(const std::vector<WorkItem>& items, const StepCallback_t& on_step) {
  SDMPI_CHECK(!items.empty(), "empty batch");
  Impl& m = *impl_;
  Backend& be = backend_;
  auto t_start = Clock::now();
  const GenerationParams& p = items.front().params;
  const int64_t B = static_cast<int64_t>(items.size());
  const int scale = m.vae_config.scale_factor();
  if (p.width % scale || p.height % scale)
    throw InputError("width and height must be multiples of " + std::to_string(scale) + " for this model");
  const int64_t h = p.height / scale, w = p.width / scale, c = m.unet_config.in_channels;
  // diffusers: do_classifier_free_guidance = guidance_scale > 1 and time_cond_proj_dim is None (an
  // LCM UNet takes the guidance scale as an embedding instead).
  const bool guidance_embedded = m.unet_config.time_cond_proj_dim > 0;
  const bool cfg = p.guidance > 1.0f && !guidance_embedded;
  if (m.refiner_layout && !p.img2img() && !m.handoff)
    throw InputError("an SDXL refiner runs img2img only: give the item an init image (--init-image), or run it as "
                     "the second stage after an SDXL base model (--refiner)");
  // Two stages: this model runs up to the refiner's start, then hands over (Txt2ImgPipeline::set_refiner).
  const bool hand_over = p.refiner_start > 0.0f && !m.handoff;
  SDMPI_CHECK(!hand_over || m.refiner, "an item asks for a refiner stage, but the pipeline has no refiner");
  const bool any_rescale = std::any_of(items.begin(), items.end(),
                                       [](const WorkItem& it) { return it.params.guidance_rescale > 0.0f; });
  const int max_len = m.text_config.max_position_embeddings;
  // A1111 prompt weighting (src/pipeline/weighted_prompt.h): the context is 77 x k tokens, k the
  // most chunks an item's prompt or (with CFG) negative prompt needs, the other padded with empty
  // chunks. Items with different k go through the loop as separate groups, so an item's context,
  // and its image, never depend on the items that share its batch.
  const bool weighted = p.prompt_weighting == "a1111";
  size_t weighted_chunks = 0;
  if (weighted) {
    std::vector<size_t> chunks_of;
    for (const WorkItem& it : items) {
      size_t k = a1111_prompt_chunks(m.tokenizer, it.params.prompt).size();
      if (cfg) k = std::max(k, a1111_prompt_chunks(m.tokenizer, it.params.negative_prompt).size());
      chunks_of.push_back(k);
    }
    if (std::adjacent_find(chunks_of.begin(), chunks_of.end(), std::not_equal_to<>()) != chunks_of.end()) {
      // The base split its batch so already (the two stages' tokenizers share the vocabulary).
      SDMPI_CHECK(!m.handoff, "the refiner stage got a batch whose prompts need different chunk counts");
      std::map<size_t, std::vector<size_t>> groups;  // k → the items' positions in the batch
      for (size_t i = 0; i < items.size(); ++i) groups[chunks_of[i]].push_back(i);
      std::vector<ImageResult> out(items.size());
      for (const auto& [k, positions] : groups) {
        std::vector<WorkItem> group;
        for (size_t i : positions) group.push_back(items[i]);
        std::vector<ImageResult> made = generate(group, on_step);
        for (size_t j = 0; j < positions.size(); ++j) out[positions[j]] = std::move(made[j]);
      }
      return out;
    }
    weighted_chunks = chunks_of.front();
  }
  auto prompts_of = [&](bool negative) {
    std::vector<std::string> prompts;
    for (const WorkItem& it : items) prompts.push_back(negative ? it.params.negative_prompt : it.params.prompt);
    return prompts;
  };

  // ---- text --------------------------------------------------------------------------------------
  auto t0 = Clock::now();
  auto token_ids = [&](const ClipTokenizer& tokenizer, bool negative) {
    std::vector<int32_t> ids;
    for (const WorkItem& it : items) {
      ClipEncoding e = tokenizer.encode_prompt(negative ? it.params.negative_prompt : it.params.prompt, max_len);
      if (e.truncated && !negative && &tokenizer == &m.tokenizer)
        log::debug("item " + std::to_string(it.index) + ": prompt truncated to " + std::to_string(max_len - 2) +
                   " tokens; dropped \"" + e.truncated_text + "\"");
      ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    }
    return ids;
  };
  Tensor context;
  std::optional<AddedConditioning> added;  // SDXL
  if (!m.sdxl && weighted) {  // A1111 applies clip skip to the negative prompt as well
    const ChunkEncoder encode = [&](const std::vector<int32_t>& ids, int rows) {
      return m.text_encoder->forward(be, ids, rows, p.clip_skip);
    };
    context = a1111_weighted_context(be, m.tokenizer, prompts_of(false), weighted_chunks, encode);
    if (cfg)
      context = be.concat_batch({a1111_weighted_context(be, m.tokenizer, prompts_of(true), weighted_chunks, encode), context});
  } else if (!m.sdxl) {
    context = m.text_encoder->forward(be, token_ids(m.tokenizer, false), static_cast<int>(B), p.clip_skip);
    if (cfg) {
      Tensor uncond = m.text_encoder->forward(be, token_ids(m.tokenizer, true), static_cast<int>(B), p.clip_skip);
      context = be.concat_batch({uncond, context});  // negative first, as diffusers concatenates
    }
  } else {
    added = m.sdxl_conditioning(be, items, cfg, context, weighted_chunks);
  }
  be.synchronize();
  m.timings.text += since(t0);

  // ---- noise and scheduler -------------------------------------------------------------------------
  auto scheduler = make_scheduler(p.sampler, p.schedule, m.scheduler_config, p.steps, p.eta);
  // One generator per item, seeded with its seed: its latents, then (ancestral samplers) its
  // per-step noise, drawn in torch's NCHW order and stored NHWC, in the compute dtype as diffusers'
  // pipeline draws it, widened to float32.
  std::vector<TorchGenerator> generators;
  generators.reserve(static_cast<size_t>(B));
  for (const WorkItem& it : items) generators.emplace_back(it.params.seed);
  std::vector<TorchGenerator*> gen_ptrs;
  for (TorchGenerator& g : generators) gen_ptrs.push_back(&g);
  if (m.handoff) gen_ptrs = m.handoff->generators;  // the second stage continues the items' streams
  const Shape latent_shape{B, h, w, c};
  const DType compute = be.compute_dtype();
  // img2img (items with an init image; a batch shares its strength): the loop starts at first_call
  // from the encoded init images, noised to that point (src/pipeline/img2img.h).
  const bool img2img = !p.init_image.empty() && !m.handoff;
  size_t first_call = 0;
  Tensor latents;
  if (m.handoff) {
    // The second stage: get_timesteps with denoising_start, on the base's latents as they are.
    first_call = second_stage_first_call(*scheduler, p.refiner_start);
    scheduler->start_at(first_call);
    latents = m.handoff->latents;
  } else if (img2img) {
    first_call = img2img_first_call(p.steps, p.strength);
    scheduler->start_at(first_call);
    if (!m.vae_encoder) m.vae_encoder.emplace(AutoencoderKLEncoder::load(m.vae_config, *m.vae_weights, be, m.vae_dtype));
    latents = img2img_initial_latents(be, *m.vae_encoder, *scheduler, first_call, items, gen_ptrs);
  } else {
    latents = scheduler->init_latents(be, be.cast(draw_per_item_noise(be, gen_ptrs, latent_shape), DType::F32));
  }
  // The first stage stops at denoising_end's cutoff; progress counts both stages' calls.
  const size_t end_call = hand_over ? first_stage_end_call(*scheduler, first_call, p.refiner_start) : scheduler->num_calls();
  int progress_before = 0, progress_total = static_cast<int>(end_call - first_call);
  if (m.handoff) {
    progress_before = m.handoff->calls_before;
    progress_total = m.handoff->calls_total;
  } else if (hand_over) {
    const auto second = make_scheduler(p.sampler, p.schedule, m.refiner->impl_->scheduler_config, p.steps, p.eta);
    progress_total += static_cast<int>(second->num_calls() - second_stage_first_call(*second, p.refiner_start));
  }
  const NoiseFn noise_fn = [draw = per_item_noise(gen_ptrs)](Backend& b, const Shape& shape) {
    return b.cast(draw(b, shape), DType::F32);
  };

  // ---- denoising loop --------------------------------------------------------------------------------
  // The UNet call as a captured step. Inputs: the scaled latents [B, h, w, c] F32, the timestep
  // projection [B', C0] and the cross-attention K/V of the text embeddings, [B', N, inner] each
  // (B' = 2B with CFG), from index kFirstKV on. Output: eps
  // [B', h, w, c] F32, which a backend with graphs overwrites at the next replay, so it is consumed
  // (guidance) or copied before the next call: PNDM and DPM++ keep earlier outputs.
  auto t1 = Clock::now();
  const std::vector<float>& timesteps = scheduler->timesteps();
  const int steps = static_cast<int>(timesteps.size());
  const int64_t unet_batch = cfg ? 2 * B : B;
  const GraphKey key{B, h, w, m.serial * kVariantsPerPipeline + (cfg ? kUnetStepCfg : kUnetStepNoCfg),
                     weighted ? context.dim(1) : 0};
  const UNet2DConditionModel& unet = *m.unet;
  // Inputs: [x, t_proj, (SDXL: the added embedding,) (LCM UNets: the guidance embedding,) K/V ...].
  const bool sdxl = added.has_value();
  constexpr size_t aug_at = 2;
  const size_t cond_at = sdxl ? 3 : 2;
  const size_t first_kv = 2 + (sdxl ? 1 : 0) + (guidance_embedded ? 1 : 0);
  auto unet_call = [&be, &unet, cfg, compute, sdxl, guidance_embedded, cond_at, first_kv](const std::vector<Tensor>& in) {
    Tensor x = be.cast(in[0], compute);
    if (cfg) x = be.concat_batch({x, x});  // elementwise scaling commutes with the duplication
    const std::vector<Tensor> cross_kv(in.begin() + static_cast<ptrdiff_t>(first_kv), in.end());
    Tensor eps = unet.forward_embedded(be, x, in[1], cross_kv, sdxl ? &in[aug_at] : nullptr,
                                       guidance_embedded ? &in[cond_at] : nullptr);
    return std::vector<Tensor>{be.cast(eps, DType::F32)};
  };
  // Every call's timestep projection, computed on the host like forward() does, uploaded once:
  // rows [i*B', (i+1)*B') belong to call i.
  std::vector<float> all_t(static_cast<size_t>(steps * unet_batch));
  for (int i = 0; i < steps; ++i)
    std::fill_n(all_t.begin() + static_cast<ptrdiff_t>(i * unet_batch), unet_batch, timesteps[static_cast<size_t>(i)]);
  const Tensor t_proj = unet.time_proj(be, all_t);
  // Every attn2's K and V of the text context, once per batch instead of once per step.
  std::vector<Tensor> cross_kv = unet.cross_attention_kv(be, context);
  context = Tensor();
  // SDXL: add_embedding of the pooled text and micro-conditioning, once per batch as well.
  Tensor aug_emb = sdxl ? unet.added_embedding(be, *added) : Tensor();
  added.reset();
  // LCM UNets: get_guidance_scale_embedding(guidance_scale - 1) per item (the Python float
  // difference, then float32), in the compute dtype as diffusers casts it.
  Tensor guidance_cond;
  if (guidance_embedded) {
    const std::vector<float> w(static_cast<size_t>(unet_batch), static_cast<float>(static_cast<double>(p.guidance) - 1.0));
    const std::vector<float> e = guidance_scale_embedding(w, m.unet_config.time_cond_proj_dim);
    guidance_cond = be.cast(be.from_host(e.data(), {unet_batch, m.unet_config.time_cond_proj_dim}), compute);
  }
  for (int i = static_cast<int>(first_call); i < static_cast<int>(end_call); ++i) {
    Tensor x_in = scheduler->scale_model_input(be, latents, static_cast<size_t>(i));
    std::vector<Tensor> inputs{x_in, t_proj.rows(i * unet_batch, (i + 1) * unet_batch)};
    if (sdxl) inputs.push_back(aug_emb);
    if (guidance_embedded) inputs.push_back(guidance_cond);
    inputs.insert(inputs.end(), cross_kv.begin(), cross_kv.end());
    std::vector<Tensor> out = be.run_graph(key, inputs, unet_call);
    m.captured_graphs = true;
    // K/V (and the added embedding) stay in the captured step's buffers from now on: no copy per step.
    if (std::vector<Tensor> held = be.graph_inputs(key); !held.empty()) {
      cross_kv.assign(held.begin() + static_cast<ptrdiff_t>(first_kv), held.end());
      if (sdxl) aug_emb = held[aug_at];
      if (guidance_embedded) guidance_cond = held[cond_at];
    }
    ++m.timings.unet_calls;
    if (be.graph_captured(key)) ++m.timings.unet_graph_calls;
    Tensor eps = cfg ? be.guidance_combine(out.at(0), p.guidance) : be.copy(out.at(0));
    if (cfg && any_rescale)  // diffusers: only with CFG, only for guidance_rescale > 0
      eps = rescale_noise_cfg(be, eps, out.at(0).rows(B, 2 * B), items);
    latents = scheduler->step(be, eps, static_cast<size_t>(i), latents, &noise_fn);
    if (on_step && !on_step(progress_before + i + 1 - static_cast<int>(first_call), progress_total))
      throw GenerationCancelled();
  }
  be.synchronize();
  m.timings.unet += since(t1);
  if (hand_over) {  // output_type="latent": the refiner continues and decodes
    Impl& second = *m.refiner->impl_;
    const Impl::Handoff handed{latents, gen_ptrs, progress_before + static_cast<int>(end_call - first_call), progress_total};
    second.handoff = &handed;
    const Timings before = second.timings;
    std::vector<ImageResult> out;
    try {
      out = m.refiner->generate(items, on_step);
    } catch (...) {
      second.handoff = nullptr;
      throw;
    }
    second.handoff = nullptr;
    m.last_latents = second.last_latents;
    // This pipeline's timings cover the whole two-stage batch (the refiner's own count its stage).
    m.timings.text += second.timings.text - before.text;
    m.timings.unet += second.timings.unet - before.unet;
    m.timings.vae += second.timings.vae - before.vae;
    m.timings.unet_calls += second.timings.unet_calls - before.unet_calls;
    m.timings.unet_graph_calls += second.timings.unet_graph_calls - before.unet_graph_calls;
    m.timings.images += B;
    m.timings.total += since(t_start);
    return out;
  }

  // ---- decode, one image at a time (bounds memory at large sizes; batch-invariant anyway) --------------
  // All decodes are queued before the first image is read back, so a GPU decodes image b+1 while
  // the host converts image b.
  auto t2 = Clock::now();
  std::vector<ImageResult> out(static_cast<size_t>(B));
  Tensor z = be.binary_scalar(BinaryOp::Div, latents, static_cast<float>(m.vae_config.scaling_factor));
  m.last_latents = be.to_host(latents);
  const size_t per_item = static_cast<size_t>(h * w * c);
  for (int64_t b = 0; b < B; ++b)
    if (fault_nan_items().count(items[static_cast<size_t>(b)].index))
      std::fill_n(m.last_latents.begin() + static_cast<ptrdiff_t>(b * per_item), per_item, NAN);
  std::vector<Tensor> images(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    ImageResult& img = out[static_cast<size_t>(b)];
    img.index = items[static_cast<size_t>(b)].index;
    img.width = p.width;
    img.height = p.height;
    if (!all_finite(std::vector<float>(m.last_latents.begin() + static_cast<ptrdiff_t>(b * per_item),
                                       m.last_latents.begin() + static_cast<ptrdiff_t>((b + 1) * per_item)))) {
      img.error = "non-finite values (NaN/Inf) in the latents after denoising";
      continue;
    }
    images[static_cast<size_t>(b)] = m.vae->decode(be, z.rows(b, b + 1));  // cast to the VAE's dtype; [1, H, W, 3]
  }
  for (int64_t b = 0; b < B; ++b) {
    ImageResult& img = out[static_cast<size_t>(b)];
    Tensor& image = images[static_cast<size_t>(b)];
    if (!image.defined()) continue;
    std::vector<float> pixels = be.to_host(image);
    image = Tensor();
    if (!all_finite(pixels)) {
      img.error = "non-finite values (NaN/Inf) in the decoded image";
      continue;
    }
    img.rgb = image_to_uint8(pixels);
    img.ok = true;
  }
  m.timings.vae += since(t2);
  m.timings.images += B;
  m.timings.total += since(t_start);
  return out;
}

}  // namespace sdmpi
