// DDIM (diffusers' DDIMScheduler): predict x0, then step to the previous timestep along the
// predicted noise direction; with eta > 0 part of that direction is replaced by fresh noise drawn
// from each item's generator.
#include "sched/sched_internal.h"

namespace sdmpi::sched {

namespace {

class DdimScheduler final : public Scheduler {
 public:
  DdimScheduler(const ResolvedConfig& c, int steps, float eta, const ScalarMath& math)
      : Scheduler(math), c_(c), eta_(eta) {
    name_ = sampler_info(SamplerKind::DDIM).name;
    alphas_cumprod_ = make_alphas_cumprod(c, false, math);
    final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_.front();
    const int64_t n = steps, T = c.num_train_timesteps;
    step_ratio_ = T / n;
    if (c.timestep_spacing == "linspace") {
      const std::vector<double> v = np_linspace(0.0, static_cast<double>(T - 1), n);
      for (auto it = v.rbegin(); it != v.rend(); ++it) int_timesteps_.push_back(static_cast<int64_t>(np_round(*it)));
    } else if (c.timestep_spacing == "leading") {
      for (int64_t i = n - 1; i >= 0; --i) int_timesteps_.push_back(i * step_ratio_ + c.steps_offset);
    } else {  // trailing
      for (double v : np_arange(static_cast<double>(T), 0.0, -static_cast<double>(T) / static_cast<double>(n)))
        int_timesteps_.push_back(static_cast<int64_t>(np_round(v)) - 1);
    }
    for (int64_t t : int_timesteps_) timesteps_.push_back(static_cast<float>(t));
  }

  bool uses_noise() const override { return eta_ > 0.0f; }

  Tensor step(Backend& b, const Tensor& model_output, size_t call, const Tensor& sample,
              const NoiseFn* noise) override {
    begin_step(call);
    const int64_t t = int_timesteps_[call];
    const int64_t t_prev = t - step_ratio_;
    const float a = alpha_at(alphas_cumprod_, t);
    const float ap = t_prev >= 0 ? alpha_at(alphas_cumprod_, t_prev) : final_alpha_cumprod_;
    const float beta = 1.0f - a;

    Tensor x0, eps;
    if (c_.prediction_type == "epsilon") {
      x0 = div(b, sub(b, sample, mul(b, model_output, sqrt_(beta))), sqrt_(a));
      eps = model_output;
    } else {  // v_prediction
      x0 = sub(b, mul(b, sample, sqrt_(a)), mul(b, model_output, sqrt_(beta)));
      eps = add(b, mul(b, model_output, sqrt_(a)), mul(b, sample, sqrt_(beta)));
    }
    if (c_.clip_sample) {
      const float r = static_cast<float>(c_.clip_sample_range);
      x0 = b.clamp(x0, -r, r);
    }
    // _get_variance
    const float variance = ((1.0f - ap) / beta) * (1.0f - a / ap);
    const float std_dev = eta_ * sqrt_(variance);
    const Tensor direction = mul(b, eps, sqrt_(1.0f - ap - std_dev * std_dev));
    Tensor prev = add(b, mul(b, x0, sqrt_(ap)), direction);
    if (eta_ > 0.0f) {
      SDMPI_CHECK(noise != nullptr, "DDIM with eta > 0 needs a noise source");
      const Tensor z = (*noise)(b, model_output.shape());
      prev = add(b, prev, mul(b, z, std_dev));
    }
    return prev;
  }

 private:
  ResolvedConfig c_;
  float eta_;
  float final_alpha_cumprod_ = 1.0f;
  int64_t step_ratio_ = 1;
  std::vector<int64_t> int_timesteps_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const ResolvedConfig& c, int steps, float eta, const ScalarMath& math) {
  return std::make_unique<DdimScheduler>(c, steps, eta, math);
}

}  // namespace sdmpi::sched
