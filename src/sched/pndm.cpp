// PNDM with skip_prk_steps (PLMS): the SD 1.5 default sampler, diffusers' PNDMScheduler.
//
// Linear multistep on the model outputs: the first call takes one Euler-like step, the second
// call re-does that interval from the same start with the mean of both outputs (so the UNet runs
// steps+1 times, with the second timestep repeated), then 2nd, 3rd and 4th order Adams-Bashforth
// combinations of the stored outputs. Every update goes through _get_prev_sample, formula (9) of
// the PNDM paper, with float32 0-dim coefficients.
#include "sched/sched_internal.h"

namespace sdmpi::sched {

namespace {

class PndmScheduler final : public Scheduler {
 public:
  PndmScheduler(const ResolvedConfig& c, int steps, const ScalarMath& math) : Scheduler(math), c_(c) {
    name_ = sampler_info(SamplerKind::PNDM).name;
    alphas_cumprod_ = make_alphas_cumprod(c, false, math);
    final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_.front();
    const int64_t n = steps, T = c.num_train_timesteps;
    step_ratio_ = T / n;

    // _timesteps, ascending.
    std::vector<int64_t> ts;
    if (c.timestep_spacing == "linspace") {
      for (double v : np_linspace(0.0, static_cast<double>(T - 1), n)) ts.push_back(static_cast<int64_t>(np_round(v)));
    } else if (c.timestep_spacing == "leading") {
      for (int64_t i = 0; i < n; ++i) ts.push_back(i * step_ratio_ + c.steps_offset);
    } else {  // trailing
      const std::vector<double> a = np_arange(static_cast<double>(T), 0.0, -static_cast<double>(T) / static_cast<double>(n));
      for (auto it = a.rbegin(); it != a.rend(); ++it) ts.push_back(static_cast<int64_t>(np_round(*it)) - 1);
    }
    // plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:])[::-1]
    std::vector<int64_t> plms(ts.begin(), ts.end() - 1);
    if (ts.size() >= 2) plms.push_back(ts[ts.size() - 2]);
    plms.push_back(ts.back());
    int_timesteps_.assign(plms.rbegin(), plms.rend());
    for (int64_t t : int_timesteps_) timesteps_.push_back(static_cast<float>(t));
  }

  void reset() override {
    Scheduler::reset();
    ets_.clear();
    cur_sample_ = Tensor();
    counter_ = 0;
  }

  Tensor step(Backend& b, const Tensor& model_output, size_t call, const Tensor& sample_in,
              const NoiseFn* /*noise*/) override {
    begin_step(call);
    int64_t timestep = int_timesteps_[call];
    int64_t prev_timestep = timestep - step_ratio_;
    Tensor sample = sample_in;
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(model_output);
    } else {
      prev_timestep = timestep;
      timestep = timestep + step_ratio_;
    }

    Tensor e;
    const size_t k = ets_.size();
    if (k == 1 && counter_ == 0) {
      e = model_output;
      cur_sample_ = sample;
    } else if (k == 1 && counter_ == 1) {
      e = div(b, add(b, model_output, ets_[0]), 2.0f);
      sample = cur_sample_;
      cur_sample_ = Tensor();
    } else if (k == 2) {
      e = div(b, sub(b, mul(b, ets_[1], 3.0f), ets_[0]), 2.0f);
    } else if (k == 3) {
      e = div(b, add(b, sub(b, mul(b, ets_[2], 23.0f), mul(b, ets_[1], 16.0f)), mul(b, ets_[0], 5.0f)), 12.0f);
    } else {
      const Tensor sum = sub(b, add(b, sub(b, mul(b, ets_[3], 55.0f), mul(b, ets_[2], 59.0f)), mul(b, ets_[1], 37.0f)),
                             mul(b, ets_[0], 9.0f));
      e = mul(b, sum, static_cast<float>(1.0 / 24.0));
    }
    Tensor prev = prev_sample(b, sample, timestep, prev_timestep, e);
    ++counter_;
    return prev;
  }

 private:
  Tensor prev_sample(Backend& b, const Tensor& x, int64_t t, int64_t t_prev, Tensor e) const {
    const float a = alpha_at(alphas_cumprod_, t);
    const float ap = t_prev >= 0 ? alpha_at(alphas_cumprod_, t_prev) : final_alpha_cumprod_;
    const float beta = 1.0f - a;
    const float beta_prev = 1.0f - ap;
    if (c_.prediction_type == "v_prediction")
      e = add(b, mul(b, e, sqrt_(a)), mul(b, x, sqrt_(beta)));
    const float sample_coeff = sqrt_(ap / a);
    const float denom = a * sqrt_(beta_prev) + sqrt_(a * beta * ap);
    // sample_coeff * sample - (ap - a) * model_output / denom
    return sub(b, mul(b, x, sample_coeff), div(b, mul(b, e, ap - a), denom));
  }

  ResolvedConfig c_;
  float final_alpha_cumprod_ = 1.0f;
  int64_t step_ratio_ = 1;
  std::vector<int64_t> int_timesteps_;
  std::vector<Tensor> ets_;
  Tensor cur_sample_;
  int counter_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const ResolvedConfig& c, int steps, const ScalarMath& math) {
  return std::make_unique<PndmScheduler>(c, steps, math);
}

}  // namespace sdmpi::sched
