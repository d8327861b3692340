// LCM (diffusers' LCMScheduler), for latent-consistency distilled UNets or LCM-LoRA: each step
// predicts x0, mixes it with the sample by the consistency-model boundary scalings c_skip/c_out,
// and, except on the last step, re-noises the result to the next timestep with fresh noise from
// each item's generator.
#include "sched/sched_internal.h"
#include "sdmpi/error.h"

namespace sdmpi::sched {

namespace {

class LcmScheduler final : public Scheduler {
 public:
  LcmScheduler(const ResolvedConfig& c, int steps, const ScalarMath& math) : Scheduler(math), c_(c) {
    name_ = sampler_info(SamplerKind::LCM).name;
    alphas_cumprod_ = make_alphas_cumprod(c, false, math);
    final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_.front();
    const int64_t original = c.original_inference_steps;
    if (steps > original)
      throw InputError("lcm: steps (" + std::to_string(steps) + ") cannot exceed original_inference_steps (" +
                       std::to_string(original) + ", " + c.source + ")");
    // lcm_origin_timesteps = [1..original] * k - 1, reversed; take `steps` evenly spaced entries.
    const int64_t k = c.num_train_timesteps / original;
    std::vector<int64_t> origin;
    for (int64_t i = original; i >= 1; --i) origin.push_back(i * k - 1);
    const std::vector<double> idx = np_linspace(0.0, static_cast<double>(origin.size()), steps, /*endpoint=*/false);
    for (double v : idx) int_timesteps_.push_back(origin[static_cast<size_t>(std::floor(v))]);
    for (int64_t t : int_timesteps_) timesteps_.push_back(static_cast<float>(t));
  }

  bool uses_noise() const override { return timesteps_.size() > 1; }

  Tensor step(Backend& b, const Tensor& model_output, size_t call, const Tensor& sample,
              const NoiseFn* noise) override {
    begin_step(call);
    const int64_t t = int_timesteps_[call];
    const bool last = call + 1 == int_timesteps_.size();
    const int64_t t_prev = last ? t : int_timesteps_[call + 1];
    const float a = alpha_at(alphas_cumprod_, t);
    const float ap = t_prev >= 0 ? alpha_at(alphas_cumprod_, t_prev) : final_alpha_cumprod_;
    const float beta = 1.0f - a;
    const float beta_prev = 1.0f - ap;

    // get_scalings_for_boundary_condition_discrete (sigma_data 0.5); timestep * scaling is an
    // int64 tensor times a Python float, i.e. float32; 0.25 / x is x.reciprocal() * 0.25.
    const float scaled = static_cast<float>(t) * static_cast<float>(c_.timestep_scaling);
    const float denom = scaled * scaled + 0.25f;
    const float c_skip = (1.0f / denom) * 0.25f;
    const float c_out = scaled / sqrt_(denom);

    Tensor x0;
    if (c_.prediction_type == "epsilon")
      x0 = div(b, sub(b, sample, mul(b, model_output, sqrt_(beta))), sqrt_(a));
    else  // v_prediction
      x0 = sub(b, mul(b, sample, sqrt_(a)), mul(b, model_output, sqrt_(beta)));
    if (c_.clip_sample) {
      const float r = static_cast<float>(c_.clip_sample_range);
      x0 = b.clamp(x0, -r, r);
    }
    const Tensor denoised = add(b, mul(b, x0, c_out), mul(b, sample, c_skip));
    if (last) return denoised;
    SDMPI_CHECK(noise != nullptr, "LCM needs a noise source");
    const Tensor z = (*noise)(b, model_output.shape());
    return add(b, mul(b, denoised, sqrt_(ap)), mul(b, z, sqrt_(beta_prev)));
  }

 private:
  ResolvedConfig c_;
  float final_alpha_cumprod_ = 1.0f;
  std::vector<int64_t> int_timesteps_;
};

}  // namespace

std::unique_ptr<Scheduler> make_lcm(const ResolvedConfig& c, int steps, const ScalarMath& math) {
  return std::make_unique<LcmScheduler>(c, steps, math);
}

}  // namespace sdmpi::sched
