// Samplers: diffusers' schedulers re-expressed on the op interface, bit for bit on the CPU.
//
// Each scheduler reproduces one diffusers class as the StableDiffusionPipeline drives it
// (set_timesteps, latents * init_noise_sigma, then per UNet call scale_model_input and step):
//   pndm      PNDMScheduler with skip_prk_steps (PLMS; the SD 1.5 default; steps+1 UNet calls)
//   ddim      DDIMScheduler (eta = 0 deterministic, eta > 0 draws noise)
//   euler     EulerDiscreteScheduler            (karras: use_karras_sigmas)
//   euler_a   EulerAncestralDiscreteScheduler   (draws noise every step)
//   dpm++2m   DPMSolverMultistepScheduler, dpmsolver++ order 2 (karras: use_karras_sigmas)
//   lcm       LCMScheduler                      (draws noise on every step but the last)
//
// Tables (betas, alphas_cumprod, timesteps, sigmas) are computed on the host exactly as torch and
// numpy compute them. Latent updates are written as the sequence of eager tensor ops diffusers
// performs, in its order and operand order, with the Backend's elementwise ops; the 0-dim float32
// scalars those ops take are computed on the host in float32, in torch's order. See
// docs/reference/sd15-semantics.md §6 and §8.
//
// Configuration follows diffusers' from_config: a class built from another class's
// scheduler_config.json takes the keys the json states and ITS OWN defaults for the rest (so
// Euler and DPM++ built from the SD 1.5 json use linspace spacing, the json having no
// timestep_spacing key).
//
// Latents are channels-last [B, h, w, 4]. Item b of a batch owns its generator (the one that drew
// its initial latents); stochastic samplers continue that stream, one randn((1, 4, h, w)) per item
// per step in torch's NCHW order, exactly as diffusers does with a list of generators.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sdmpi/backend.h"
#include "sdmpi/noise.h"
#include "sdmpi/samplers.h"
#include "sdmpi/tensor.h"

namespace sdmpi {

// The keys a diffusers scheduler_config.json states. Keys starting with "_" are kept apart.
struct SchedulerConfig {
  std::string source = "<built-in>";  // named in error messages
  std::string class_name;             // "_class_name" when stated
  nlohmann::json stated = nlohmann::json::object();

  // Throws InputError (naming `source_for_errors`) if `json` is not an object.
  static SchedulerConfig from_json(const nlohmann::json& json, const std::string& source_for_errors);
  // Reads and parses a scheduler_config.json.
  static SchedulerConfig from_file(const std::string& path);
};

struct SamplerChoice {
  SamplerKind kind = SamplerKind::PNDM;
  bool karras = false;
  std::string name;  // canonical: "pndm", "ddim", "euler", "euler_a", "dpm++2m", "lcm"
};

// Any name of the sampler table (sdmpi/samplers.h: ours, pndm ddim euler euler_a dpm++2m lcm, or
// AUTOMATIC1111's, "Euler a", "DPM++ 2M Karras", ...; case-insensitive) with schedule "default" or
// "karras". Unknown names, unknown schedules and samplers without a Karras variant throw
// InputError listing the valid choices.
SamplerChoice parse_sampler(const std::string& sampler, const std::string& schedule = "default");

// Noise for one step: returns a [B, h, w, C] tensor on `backend` for latents of `nhwc_shape`.
using NoiseFn = std::function<Tensor(Backend& backend, const Shape& nhwc_shape)>;

// Item b's slice is torch.randn((1, C, h, w), generator=generators[b]) permuted to NHWC; this is
// both the initial latents (before init_latents) and every stochastic step's noise. The
// generators must outlive the returned function.
Tensor draw_per_item_noise(Backend& backend, const std::vector<TorchGenerator*>& generators,
                           const Shape& nhwc_shape);
NoiseFn per_item_noise(std::vector<TorchGenerator*> generators);

// torch.sqrt (and ** 0.5), torch.log and torch.exp on float32 tensors: every non-basic operation
// the schedulers apply to their scalars and tables. The x86 torch wheel evaluates these with MKL's
// vector math library, whose results are not correctly rounded and depend on the code path MKL
// picks for the CPU (measured on the pinned wheel: the AVX2 path's sqrt is correctly rounded, the
// path it takes on an AMD EPYC differs in the last bit for ~16 % of inputs, log and exp for 1-7 %).
// So diffusers itself is not bit-reproducible across machines here. Our default is the correctly
// rounded result (double precision, rounded once), the same on every machine; tests substitute the
// reference machine's recorded values to check everything else bit for bit.
struct ScalarMath {
  std::function<float(float)> sqrt;
  std::function<float(float)> log;
  std::function<float(float)> exp;
  static ScalarMath correctly_rounded();
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;

  const std::string& name() const { return name_; }
  // What the UNet gets at each call, in order (diffusers' scheduler.timesteps as float). PNDM
  // makes steps+1 calls, the others `steps`; with "trailing" spacing some step counts (61, 103,
  // ...) get one more call at timestep -1, as in diffusers (np.arange rounding).
  const std::vector<float>& timesteps() const { return timesteps_; }
  size_t num_calls() const { return timesteps_.size(); }
  float init_noise_sigma() const { return init_noise_sigma_; }
  // sigma per call plus the final one (Euler, Euler a, DPM++); empty for PNDM, DDIM, LCM.
  const std::vector<float>& sigmas() const { return sigmas_; }
  const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }
  // Whether step() draws noise (then it needs a NoiseFn).
  virtual bool uses_noise() const { return false; }

  // prepare_latents: noise * init_noise_sigma.
  Tensor init_latents(Backend& backend, const Tensor& noise) const;
  // img2img (StableDiffusionImg2ImgPipeline): the schedule starts at call `first` (get_timesteps'
  // t_start * order; set_begin_index), so the next step() must be call `first`. Before any step.
  void start_at(size_t first);
  // scheduler.add_noise(original, noise, timesteps[call]) as diffusers computes it for this class:
  // sqrt(alphas_cumprod[t]) * x + sqrt(1 - alphas_cumprod[t]) * noise (PNDM, DDIM, LCM), x + noise *
  // sigma (Euler, Euler a), alpha_t * x + sigma_t * noise (DPM++), sigma at the begin index.
  virtual Tensor add_noise(Backend& backend, const Tensor& original, const Tensor& noise, size_t call) const;
  // scale_model_input for UNet call `call` (identity for all but Euler-type samplers).
  virtual Tensor scale_model_input(Backend& backend, const Tensor& x, size_t call) const;
  // One scheduler.step(model_output, timesteps[call], sample). Calls must come in order
  // 0, 1, ..., num_calls()-1; `noise` may be null when uses_noise() is false.
  virtual Tensor step(Backend& backend, const Tensor& model_output, size_t call,
                      const Tensor& sample, const NoiseFn* noise) = 0;
  // Forgets the multistep history so the same schedule can run another batch from call 0.
  virtual void reset() { next_call_ = 0; }

 protected:
  explicit Scheduler(const ScalarMath& math) : math_(math) {}
  void begin_step(size_t call);  // checks the call order
  float sqrt_(float x) const { return math_.sqrt(x); }
  float log_(float x) const { return math_.log(x); }
  float exp_(float x) const { return math_.exp(x); }

  std::string name_;
  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  std::vector<float> alphas_cumprod_;
  float init_noise_sigma_ = 1.0f;
  size_t next_call_ = 0;
  ScalarMath math_;
};

// A scheduler for `steps` inference steps (1 <= steps <= num_train_timesteps, else InputError).
// Unsupported configuration values throw InputError naming the key, the value and the source.
// `eta` is DDIM's eta (others ignore it).
std::unique_ptr<Scheduler> make_scheduler(const SamplerChoice& sampler, const SchedulerConfig& config,
                                          int steps, float eta = 0.0f,
                                          const ScalarMath& math = ScalarMath::correctly_rounded());
std::unique_ptr<Scheduler> make_scheduler(const std::string& sampler, const std::string& schedule,
                                          const SchedulerConfig& config, int steps, float eta = 0.0f,
                                          const ScalarMath& math = ScalarMath::correctly_rounded());

}  // namespace sdmpi
