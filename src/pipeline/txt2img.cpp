// Txt2ImgPipeline: diffusers' StableDiffusionPipeline.__call__ for a batch of work items.
//
// The order of operations is diffusers' (sd15-semantics.md §6.2): encode prompts (negative first
// in the CFG batch), draw each item's latents from its own torch-compatible generator, scale by
// init_noise_sigma, then per timestep: cat([x, x]) → scale_model_input → UNet → chunk → CFG
// (three separately rounded ops) → scheduler.step (ancestral noise from each item's generator),
// and last `latents / scaling_factor` (one division) → VAE → uint8 as diffusers rounds it.
//
// On the CUDA backend the same sequence runs with two changes (the CPU path computes exactly what
// it did before them, bit for bit):
//   - dtypes: latents and every scheduler op stay float32 on the device, whatever the compute
//     dtype; the UNet and the VAE run in the compute dtype, with casts at their inputs and the
//     UNet's output. The initial latents (and ancestral noise) are drawn as diffusers' fp16
//     pipeline draws them, rounded to the compute dtype, then widened exactly to float32.
//     diffusers keeps fp16 latents and upcasts only inside some schedulers (Euler, DPM++); float32
//     throughout is the better-conditioned choice and costs nothing measurable (4 latent channels).
//   - CUDA graphs: each UNet call (cast → cat([x, x]) → UNet → cast to float32) is one graph,
//     captured once per (batch, latent height, latent width, CFG on/off, pipeline) and replayed.
//     Its inputs are the scaled latents, the timestep projection (precomputed on the host for all
//     steps, uploaded once) and the text embeddings; the guidance combine and the scheduler step
//     run eagerly after it (their scalars change per step or per batch).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>

#include "sdmpi/clip_text.h"
#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "sdmpi/model_config.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/scheduler.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

namespace sdmpi {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

// Graph variants (GraphKey::variant) of one pipeline: the UNet call with and without CFG have
// different structures. The pipeline's serial number goes above them, so two pipelines (two
// models) on one backend never replay each other's graphs, whose weight addresses are baked in.
constexpr int64_t kUnetStepCfg = 0, kUnetStepNoCfg = 2, kVariantsPerPipeline = 16;
std::atomic<int64_t> next_pipeline_serial{1};
}  // namespace

std::string default_sampler(const nlohmann::json& scheduler_config) {
  std::string cls = scheduler_config.value("_class_name", std::string("PNDMScheduler"));
  if (cls == "PNDMScheduler") return "pndm";
  if (cls == "DDIMScheduler") return "ddim";
  if (cls == "EulerDiscreteScheduler") return "euler";
  if (cls == "EulerAncestralDiscreteScheduler") return "euler_a";
  if (cls == "DPMSolverMultistepScheduler") return "dpm++2m";
  if (cls == "LCMScheduler") return "lcm";
  log::warn("the model's scheduler " + cls + " is not supported; using pndm (choose one with --sampler)");
  return "pndm";
}

struct Txt2ImgPipeline::Impl {
  ClipTokenizer tokenizer;
  ClipTextConfig text_config;
  UNetConfig unet_config;
  VAEConfig vae_config;
  SchedulerConfig scheduler_config;
  std::optional<ClipTextModel> text_encoder;
  std::optional<UNet2DConditionModel> unet;
  std::optional<AutoencoderKLDecoder> vae;
  Timings timings;
  std::vector<float> last_latents;
  int64_t serial = next_pipeline_serial.fetch_add(1);
  bool captured_graphs = false;  // whether this pipeline left graphs in a CUDA backend
};

Txt2ImgPipeline::Txt2ImgPipeline(const ModelSource& model, Backend& backend)
    : impl_(std::make_unique<Impl>()), backend_(backend) {
  Impl& m = *impl_;
  m.tokenizer = model.tokenizer();
  m.text_config = ClipTextConfig::from_json(model.config("text_encoder"), model.spec() + " text_encoder/config.json");
  m.unet_config = UNetConfig::from_json(model.config("unet"), model.spec() + " unet/config.json");
  m.vae_config = VAEConfig::from_json(model.config("vae"), model.spec() + " vae/config.json");
  m.scheduler_config = SchedulerConfig::from_json(model.config("scheduler"), model.spec() + " scheduler/scheduler_config.json");
  m.text_encoder.emplace(ClipTextModel::load(m.text_config, *model.weights("text_encoder"), backend));
  m.unet.emplace(UNet2DConditionModel::load(m.unet_config, *model.weights("unet"), backend));
  m.vae.emplace(AutoencoderKLDecoder::load(m.vae_config, *model.weights("vae"), backend));
}

Txt2ImgPipeline::~Txt2ImgPipeline() {
  // Graphs bake in this pipeline's weight addresses: free their pools with the weights. This drops
  // other pipelines' graphs on the backend too; they are captured again on their next call.
  if (CudaBackend* cuda = as_cuda(backend_); cuda && impl_ && impl_->captured_graphs) {
    try {
      cuda->drop_graphs();
    } catch (const std::exception& e) {
      log::warn(std::string("cuda: could not free the pipeline's graphs: ") + e.what());
    }
  }
}

const Txt2ImgPipeline::Timings& Txt2ImgPipeline::timings() const { return impl_->timings; }
const std::vector<float>& Txt2ImgPipeline::last_latents() const { return impl_->last_latents; }

int Txt2ImgPipeline::default_size() const {
  int latent = impl_->unet_config.sample_size > 0 ? impl_->unet_config.sample_size : 64;
  return latent * impl_->vae_config.scale_factor();
}

std::vector<GeneratedImage> Txt2ImgPipeline::generate(const std::vector<WorkItem>& items, const StepCallback_t& on_step) {
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
  const bool cfg = p.guidance > 1.0f;  // diffusers: do_classifier_free_guidance = guidance_scale > 1
  const int max_len = m.text_config.max_position_embeddings;

  // ---- text --------------------------------------------------------------------------------------
  auto t0 = Clock::now();
  std::vector<int32_t> ids_pos, ids_neg;
  for (const WorkItem& it : items) {
    ClipEncoding e = m.tokenizer.encode_prompt(it.params.prompt, max_len);
    if (e.truncated)
      log::debug("item " + std::to_string(it.index) + ": prompt truncated to " + std::to_string(max_len - 2) +
                 " tokens; dropped \"" + e.truncated_text + "\"");
    ids_pos.insert(ids_pos.end(), e.ids.begin(), e.ids.end());
    if (cfg) {
      ClipEncoding n = m.tokenizer.encode_prompt(it.params.negative_prompt, max_len);
      ids_neg.insert(ids_neg.end(), n.ids.begin(), n.ids.end());
    }
  }
  Tensor context = m.text_encoder->forward(be, ids_pos, static_cast<int>(B), p.clip_skip);
  if (cfg) {
    Tensor uncond = m.text_encoder->forward(be, ids_neg, static_cast<int>(B), p.clip_skip);
    context = be.concat_batch({uncond, context});  // negative first, as diffusers concatenates
  }
  be.synchronize();
  m.timings.text += since(t0);

  // ---- noise and scheduler -------------------------------------------------------------------------
  auto scheduler = make_scheduler(p.sampler, p.schedule, m.scheduler_config, p.steps, p.eta);
  // One generator per item, seeded with its seed: its latents, then (ancestral samplers) its
  // per-step noise, drawn in torch's NCHW order and stored NHWC.
  std::vector<TorchGenerator> generators;
  generators.reserve(static_cast<size_t>(B));
  for (const WorkItem& it : items) generators.emplace_back(it.params.seed);
  std::vector<TorchGenerator*> gen_ptrs;
  for (TorchGenerator& g : generators) gen_ptrs.push_back(&g);
  const Shape latent_shape{B, h, w, c};
  // CUDA: the noise in the compute dtype (as diffusers' fp16 pipeline draws it), widened to F32.
  CudaBackend* cuda = as_cuda(be);
  const DType compute = be.compute_dtype();
  Tensor noise = draw_per_item_noise(be, gen_ptrs, latent_shape);
  if (cuda) noise = cuda->cast(noise, DType::F32);
  Tensor latents = scheduler->init_latents(be, noise);
  noise = Tensor();

  // ---- denoising loop --------------------------------------------------------------------------------
  auto t1 = Clock::now();
  const std::vector<float>& timesteps = scheduler->timesteps();
  const int steps = static_cast<int>(timesteps.size());
  NoiseFn noise_fn = per_item_noise(gen_ptrs);
  if (cuda)
    noise_fn = [draw = std::move(noise_fn), cuda](Backend& b, const Shape& shape) {
      return cuda->cast(draw(b, shape), DType::F32);
    };
  if (!cuda) {
    for (int i = 0; i < steps; ++i) {
      Tensor x_in = cfg ? be.concat_batch({latents, latents}) : latents;
      x_in = scheduler->scale_model_input(be, x_in, static_cast<size_t>(i));
      std::vector<float> t(static_cast<size_t>(x_in.dim(0)), timesteps[static_cast<size_t>(i)]);
      Tensor eps = m.unet->forward(be, x_in, t, context);
      ++m.timings.unet_calls;
      if (cfg) eps = guidance_combine(be, eps.rows(0, B), eps.rows(B, 2 * B), p.guidance);
      latents = scheduler->step(be, eps, static_cast<size_t>(i), latents, &noise_fn);
      if (on_step && !on_step(i + 1, steps)) throw GenerationCancelled();
    }
  } else {
    // One graph per UNet call shape. Graph inputs: the scaled latents [B, h, w, c] F32, the
    // timestep projection [B', C0] and the text embeddings [B', N, D] (B' = 2B with CFG), both in
    // the compute dtype. Output: eps [B', h, w, c] F32, owned by the graph (overwritten by the
    // next replay), so the pipeline consumes it before the next call.
    const int64_t unet_batch = cfg ? 2 * B : B;
    const GraphKey key{B, h, w, m.serial * kVariantsPerPipeline + (cfg ? kUnetStepCfg : kUnetStepNoCfg)};
    const UNet2DConditionModel& unet = *m.unet;
    auto unet_call = [&be, cuda, &unet, cfg, compute](const std::vector<Tensor>& in) {
      Tensor x = cuda->cast(in[0], compute);
      if (cfg) x = be.concat_batch({x, x});  // elementwise scaling commutes with the duplication
      Tensor eps = unet.forward_embedded(be, x, in[1], in[2]);
      return std::vector<Tensor>{cuda->cast(eps, DType::F32)};
    };
    // Every call's timestep projection, computed on the host like forward() does, uploaded once:
    // rows [i*B', (i+1)*B') belong to call i.
    std::vector<float> all_t(static_cast<size_t>(steps * unet_batch));
    for (int i = 0; i < steps; ++i)
      std::fill_n(all_t.begin() + static_cast<ptrdiff_t>(i * unet_batch), unet_batch, timesteps[static_cast<size_t>(i)]);
    const Tensor t_proj = unet.time_proj(be, all_t);
    Tensor ctx = context;
    for (int i = 0; i < steps; ++i) {
      Tensor x_in = scheduler->scale_model_input(be, latents, static_cast<size_t>(i));
      std::vector<Tensor> out =
          cuda->run_graph(key, {x_in, t_proj.rows(i * unet_batch, (i + 1) * unet_batch), ctx}, unet_call);
      m.captured_graphs = true;
      ctx = cuda->graph_inputs(key).at(2);  // the embeddings stay in the graph's buffer: no copy
      ++m.timings.unet_calls;
      if (cuda->graph_captured(key)) ++m.timings.unet_graph_calls;
      Tensor eps = cfg ? cuda->guidance_combine(out.at(0), p.guidance) : be.copy(out.at(0));
      latents = scheduler->step(be, eps, static_cast<size_t>(i), latents, &noise_fn);
      if (on_step && !on_step(i + 1, steps)) throw GenerationCancelled();
    }
  }
  be.synchronize();
  m.timings.unet += since(t1);

  // ---- decode, one image at a time (bounds memory at large sizes; batch-invariant anyway) --------------
  // All decodes are queued before the first image is read back, so a GPU decodes image b+1 while
  // the host converts image b.
  auto t2 = Clock::now();
  std::vector<GeneratedImage> out(static_cast<size_t>(B));
  Tensor z = be.binary_scalar(BinaryOp::Div, latents, static_cast<float>(m.vae_config.scaling_factor));
  m.last_latents = be.to_host(latents);
  const size_t per_item = static_cast<size_t>(h * w * c);
  std::vector<Tensor> images(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    GeneratedImage& img = out[static_cast<size_t>(b)];
    img.width = p.width;
    img.height = p.height;
    if (!all_finite(std::vector<float>(m.last_latents.begin() + static_cast<ptrdiff_t>(b * per_item),
                                       m.last_latents.begin() + static_cast<ptrdiff_t>((b + 1) * per_item)))) {
      img.error = "non-finite values (NaN/Inf) in the latents after denoising";
      continue;
    }
    Tensor z_item = z.rows(b, b + 1);
    if (cuda) z_item = cuda->cast(z_item, compute);
    images[static_cast<size_t>(b)] = m.vae->decode(be, z_item);  // [1, H, W, 3]
  }
  for (int64_t b = 0; b < B; ++b) {
    GeneratedImage& img = out[static_cast<size_t>(b)];
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
