// Euler and Euler ancestral (diffusers' EulerDiscreteScheduler and
// EulerAncestralDiscreteScheduler): the probability-flow ODE in sigma, x' = (x - x0(x)) / sigma.
// The UNet sees x / sqrt(sigma^2 + 1) and fractional timesteps. Euler ancestral steps down to
// sigma_down and adds fresh noise of size sigma_up, drawn from each item's generator every step
// (the last included, where sigma_up is 0).
#include "sched/sched_internal.h"

namespace sdmpi::sched {

namespace {

class EulerScheduler final : public Scheduler {
 public:
  EulerScheduler(const ResolvedConfig& c, int steps, bool ancestral, const ScalarMath& math)
      : Scheduler(math), c_(c), ancestral_(ancestral) {
    name_ = sampler_info(ancestral ? SamplerKind::EulerAncestral : SamplerKind::Euler).name;
    alphas_cumprod_ = make_alphas_cumprod(c, /*pin_last=*/true, math);
    const std::vector<float> train_sigmas = training_sigmas(alphas_cumprod_, math);
    const int64_t n = steps, T = c.num_train_timesteps;

    std::vector<float> ts;  // float32, as numpy leaves them
    if (c.timestep_spacing == "linspace") {
      const std::vector<double> v = np_linspace(0.0, static_cast<double>(T - 1), n);
      for (auto it = v.rbegin(); it != v.rend(); ++it) ts.push_back(static_cast<float>(*it));
    } else if (c.timestep_spacing == "leading") {
      const int64_t ratio = T / n;
      for (int64_t i = n - 1; i >= 0; --i)
        ts.push_back(static_cast<float>(static_cast<double>(i * ratio)) + static_cast<float>(c.steps_offset));
    } else {  // trailing
      for (double v : np_arange(static_cast<double>(T), 0.0, -static_cast<double>(T) / static_cast<double>(n)))
        ts.push_back(static_cast<float>(np_round(v)) - 1.0f);
    }
    std::vector<double> ts_d(ts.begin(), ts.end());
    std::vector<double> sig = np_interp(ts_d, train_sigmas);

    if (c.use_karras_sigmas) {
      // Karras ramp between the end points of the interpolated sigmas (or the configured ones);
      // timesteps become the fractional training timesteps of those sigmas.
      std::vector<float> log_sigmas(train_sigmas.size());
      for (size_t i = 0; i < train_sigmas.size(); ++i) log_sigmas[i] = np_logf(train_sigmas[i]);
      const double smin = c.sigma_min ? *c.sigma_min : sig.back();
      const double smax = c.sigma_max ? *c.sigma_max : sig.front();
      sig = karras_sigmas(smin, smax, n);
      ts.clear();
      for (double s : sig) ts.push_back(static_cast<float>(sigma_to_t(s, log_sigmas)));
    }
    const float last = c.final_sigmas_type == "sigma_min" ? train_sigmas.front() : 0.0f;
    for (double s : sig) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(last);
    timesteps_ = ts;

    float max_sigma = sigmas_.front();
    for (float s : sigmas_) max_sigma = std::max(max_sigma, s);
    init_noise_sigma_ = (c.timestep_spacing == "linspace" || c.timestep_spacing == "trailing")
                            ? max_sigma
                            : sqrt_(max_sigma * max_sigma + 1.0f);
    require_unique_first_timestep();
  }

  bool uses_noise() const override { return ancestral_; }

  // original + noise * sigma
  Tensor add_noise(Backend& b, const Tensor& original, const Tensor& noise, size_t call) const override {
    SDMPI_CHECK(call < timesteps_.size(), name_ + ": add_noise past the last step");
    return add(b, original, mul(b, noise, sigmas_[call]));
  }

  Tensor scale_model_input(Backend& b, const Tensor& x, size_t call) const override {
    const float sigma = sigmas_[call];
    return div(b, x, sqrt_(sigma * sigma + 1.0f));
  }

  Tensor step(Backend& b, const Tensor& model_output, size_t call, const Tensor& sample,
              const NoiseFn* noise) override {
    begin_step(call);
    const size_t i = call;
    SDMPI_CHECK(i + 1 < sigmas_.size(), name_ + ": step past the last sigma");
    const float sigma = sigmas_[i];
    const float sigma_next = sigmas_[i + 1];
    if (!ancestral_) {
      const float sigma_hat = sigma * 1.0f;  // s_churn = 0: gamma = 0, sigma * (gamma + 1)
      const Tensor x0 = predict_x0(b, model_output, sample, sigma, sigma_hat);
      const Tensor derivative = div(b, sub(b, sample, x0), sigma_hat);
      const float dt = sigma_next - sigma_hat;
      return add(b, sample, mul(b, derivative, dt));
    }
    const Tensor x0 = predict_x0(b, model_output, sample, sigma, sigma);
    const float sf2 = sigma * sigma, st2 = sigma_next * sigma_next;
    const float sigma_up = sqrt_(st2 * (sf2 - st2) / sf2);
    const float sigma_down = sqrt_(st2 - sigma_up * sigma_up);
    const Tensor derivative = div(b, sub(b, sample, x0), sigma);
    const float dt = sigma_down - sigma;
    Tensor prev = add(b, sample, mul(b, derivative, dt));
    SDMPI_CHECK(noise != nullptr, "Euler ancestral needs a noise source");
    const Tensor z = (*noise)(b, model_output.shape());
    return add(b, prev, mul(b, z, sigma_up));
  }

 private:
  Tensor predict_x0(Backend& b, const Tensor& e, const Tensor& x, float sigma, float sigma_hat) const {
    if (c_.prediction_type == "epsilon") return sub(b, x, mul(b, e, sigma_hat));
    // v_prediction: model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    const float s2p1 = sigma * sigma + 1.0f;
    return add(b, mul(b, e, -sigma / sqrt_(s2p1)), div(b, x, s2p1));
  }

  // diffusers' _init_step_index: the first match of timesteps[0], or the second if it repeats.
  // It repeats only in degenerate schedules (e.g. "leading" with as many steps as training
  // timesteps, where every timestep is steps_offset); diffusers then starts one step late and
  // runs off the end of its sigmas, so refuse them up front.
  void require_unique_first_timestep() const {
    size_t hits = 0;
    for (size_t i = 0; i < timesteps_.size(); ++i) hits += timesteps_[i] == timesteps_[0];
    if (hits > 1)
      throw InputError(name_ + ": " + std::to_string(timesteps_.size()) + " steps with \"" + c_.timestep_spacing +
                       "\" spacing repeat the first timestep (" + std::to_string(timesteps_[0]) +
                       "), which diffusers cannot step through (" + c_.source + "); use fewer steps");
  }

  ResolvedConfig c_;
  bool ancestral_;
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const ResolvedConfig& c, int steps, bool ancestral, const ScalarMath& math) {
  return std::make_unique<EulerScheduler>(c, steps, ancestral, math);
}

}  // namespace sdmpi::sched
