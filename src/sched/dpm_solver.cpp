// DPM-Solver++(2M) (diffusers' DPMSolverMultistepScheduler, algorithm_type "dpmsolver++",
// solver_order 2): an exponential integrator in lambda = log(alpha_t / sigma_t) on the data
// prediction x0. Step 0 (and the last step, or the last two for fewer than 15 steps, with
// lower_order_final) is first order; the others add the finite difference of the last two x0
// predictions (midpoint or Heun form). With final_sigmas_type "zero" the last step lands on x0.
#include <limits>

#include "sched/sched_internal.h"

namespace sdmpi::sched {

namespace {

class DpmSolverScheduler final : public Scheduler {
 public:
  DpmSolverScheduler(const ResolvedConfig& c, int steps, const ScalarMath& math) : Scheduler(math), c_(c) {
    name_ = sampler_info(SamplerKind::DPMSolverMultistep).name;
    alphas_cumprod_ = make_alphas_cumprod(c, /*pin_last=*/true, math);
    const std::vector<float> train_sigmas = training_sigmas(alphas_cumprod_, math);
    const int64_t n = steps, T = c.num_train_timesteps;

    // last_timestep = T - searchsorted(flip(lambda_t), lambda_min_clipped)
    int64_t clipped = 0;
    if (c.lambda_min_clipped > -std::numeric_limits<double>::infinity()) {
      for (int64_t i = T - 1; i >= 0; --i) {  // flipped: ascending lambda
        const float ac = alphas_cumprod_[static_cast<size_t>(i)];
        const float lambda = log_(sqrt_(ac)) - log_(sqrt_(1.0f - ac));
        if (static_cast<double>(lambda) >= c.lambda_min_clipped) break;
        ++clipped;
      }
    }
    const int64_t last = T - clipped;
    if (last < 2)
      throw InputError(c.source + ": scheduler config key \"lambda_min_clipped\" = " +
                       std::to_string(c.lambda_min_clipped) + " clips away every timestep");
    std::vector<double> ts;  // float64 before the int64 cast
    if (c.timestep_spacing == "linspace") {
      const std::vector<double> v = np_linspace(0.0, static_cast<double>(last - 1), n + 1);
      for (int64_t i = n; i >= 1; --i) ts.push_back(np_round(v[static_cast<size_t>(i)]));
    } else if (c.timestep_spacing == "leading") {
      const int64_t ratio = last / (n + 1);
      for (int64_t i = n; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + c.steps_offset));
    } else {  // trailing
      const double ratio = static_cast<double>(T) / static_cast<double>(n);
      for (double v : np_arange(static_cast<double>(last), 0.0, -ratio)) ts.push_back(np_round(v) - 1.0);
    }

    std::vector<double> sig;
    if (c.use_karras_sigmas) {
      std::vector<float> log_sigmas(train_sigmas.size());
      for (size_t i = 0; i < train_sigmas.size(); ++i) log_sigmas[i] = np_logf(train_sigmas[i]);
      // in_sigmas = flip(training sigmas): sigma_max first
      sig = karras_sigmas(train_sigmas.front(), train_sigmas.back(), n);
      ts.clear();
      for (double s : sig) {
        const double t = sigma_to_t(s, log_sigmas);
        ts.push_back(c.beta_schedule != "squaredcos_cap_v2" ? np_round(t) : t);
      }
    } else {
      sig = np_interp(ts, train_sigmas);
    }
    const float last_sigma = c.final_sigmas_type == "sigma_min" ? train_sigmas.front() : 0.0f;
    for (double s : sig) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(last_sigma);
    for (double t : ts) {
      int_timesteps_.push_back(static_cast<int64_t>(t));  // torch .to(int64) truncates
      timesteps_.push_back(static_cast<float>(int_timesteps_.back()));
    }
    require_unique_first_timestep();
  }

  void reset() override {
    Scheduler::reset();
    prev_x0_ = Tensor();
    lower_order_nums_ = 0;
  }

  Tensor step(Backend& b, const Tensor& model_output, size_t call, const Tensor& sample,
              const NoiseFn* /*noise*/) override {
    begin_step(call);
    const size_t i = call;
    const size_t n = timesteps_.size();
    const bool final_step = i == n - 1;
    const bool lower_order_final =
        final_step && (c_.euler_at_final || (c_.lower_order_final && n < 15) || c_.final_sigmas_type == "zero");
    const bool lower_order_second = i == n - 2 && c_.lower_order_final && n < 15;
    (void)lower_order_second;  // with solver_order 2 the second-order update is the highest anyway

    // convert_model_output: the data prediction x0.
    const AlphaSigma s0 = alpha_sigma(sigmas_[i]);
    Tensor x0;
    if (c_.prediction_type == "epsilon")
      x0 = div(b, sub(b, sample, mul(b, model_output, s0.sigma)), s0.alpha);
    else  // v_prediction
      x0 = sub(b, mul(b, sample, s0.alpha), mul(b, model_output, s0.sigma));

    const AlphaSigma t = alpha_sigma(sigmas_[i + 1]);
    const float lambda_t = log_(t.alpha) - log_(t.sigma);
    const float lambda_s0 = log_(s0.alpha) - log_(s0.sigma);
    const float h = lambda_t - lambda_s0;
    const float phi = exp_(-h) - 1.0f;  // torch.exp(-h) - 1.0

    Tensor prev;
    if (lower_order_nums_ < 1 || lower_order_final) {
      // (sigma_t / sigma_s) * sample - (alpha_t * (exp(-h) - 1)) * x0
      prev = sub(b, mul(b, sample, t.sigma / s0.sigma), mul(b, x0, t.alpha * phi));
    } else {
      const AlphaSigma s1 = alpha_sigma(sigmas_[i - 1]);
      const float lambda_s1 = log_(s1.alpha) - log_(s1.sigma);
      const float h_0 = lambda_s0 - lambda_s1;
      const float r0 = h_0 / h;
      const Tensor& d0 = x0;
      const Tensor d1 = mul(b, sub(b, x0, prev_x0_), 1.0f / r0);
      const Tensor base = sub(b, mul(b, sample, t.sigma / s0.sigma), mul(b, d0, t.alpha * phi));
      if (c_.solver_type == "midpoint")
        prev = sub(b, base, mul(b, d1, 0.5f * (t.alpha * phi)));
      else  // heun
        prev = add(b, base, mul(b, d1, t.alpha * (phi / h + 1.0f)));
    }
    prev_x0_ = x0;
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    return prev;
  }

  // alpha_t * original + sigma_t * noise, at sigma[call]
  Tensor add_noise(Backend& b, const Tensor& original, const Tensor& noise, size_t call) const override {
    SDMPI_CHECK(call < timesteps_.size(), name_ + ": add_noise past the last step");
    const AlphaSigma s = alpha_sigma(sigmas_[call]);
    return add(b, mul(b, original, s.alpha), mul(b, noise, s.sigma));
  }

 private:
  struct AlphaSigma {
    float alpha, sigma;
  };
  // _sigma_to_alpha_sigma_t: alpha = 1 / (sigma**2 + 1) ** 0.5, sigma_t = sigma * alpha.
  AlphaSigma alpha_sigma(float sigma) const {
    const float alpha = 1.0f / sqrt_(sigma * sigma + 1.0f);
    return {alpha, sigma * alpha};
  }

  // diffusers' _init_step_index: the first match of timesteps[0], or the second if it repeats.
  // It repeats only in degenerate schedules (e.g. "leading" with as many steps as training
  // timesteps, where every timestep is steps_offset); diffusers then starts one step late and
  // runs off the end of its sigmas, so refuse them up front.
  void require_unique_first_timestep() const {
    size_t hits = 0;
    for (size_t i = 0; i < int_timesteps_.size(); ++i) hits += int_timesteps_[i] == int_timesteps_[0];
    if (hits > 1)
      throw InputError(name_ + ": " + std::to_string(int_timesteps_.size()) + " steps with \"" + c_.timestep_spacing +
                       "\" spacing repeat the first timestep (" + std::to_string(timesteps_[0]) +
                       "), which diffusers cannot step through (" + c_.source + "); use fewer steps");
  }

  ResolvedConfig c_;
  std::vector<int64_t> int_timesteps_;
  Tensor prev_x0_;
  int lower_order_nums_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver(const ResolvedConfig& c, int steps, const ScalarMath& math) {
  return std::make_unique<DpmSolverScheduler>(c, steps, math);
}

}  // namespace sdmpi::sched
