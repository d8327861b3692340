// Scheduler internals shared by src/sched/*.cpp: the resolved per-class configuration and the
// host-side numerics that reproduce torch's and numpy's table computations bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/scheduler.h"

namespace sdmpi::sched {

// One diffusers scheduler class's __init__ arguments after from_config(json): stated keys win,
// the class's own defaults fill the rest. Fields a class does not have keep their zero values.
struct ResolvedConfig {
  std::string source;
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001;
  double beta_end = 0.02;
  std::string beta_schedule = "linear";
  std::optional<std::vector<double>> trained_betas;
  bool rescale_betas_zero_snr = false;
  std::string timestep_spacing;
  int64_t steps_offset = 0;
  std::string prediction_type = "epsilon";
  // PNDM, DDIM, LCM
  bool set_alpha_to_one = false;
  bool skip_prk_steps = false;
  bool clip_sample = false;
  double clip_sample_range = 1.0;
  // Euler, DPM++
  bool use_karras_sigmas = false;
  std::optional<double> sigma_min, sigma_max;  // Euler only
  std::string final_sigmas_type = "zero";
  // DPM++
  std::string solver_type = "midpoint";
  bool lower_order_final = true;
  bool euler_at_final = false;
  double lambda_min_clipped = 0.0;
  // LCM
  int64_t original_inference_steps = 50;
  double timestep_scaling = 10.0;
};

// Reads `config` as diffusers class `kind` would, applying the sampler's fixed choices (Karras
// sigmas, DPM++ 2M's algorithm and order). Throws InputError for bad or unsupported values.
ResolvedConfig resolve_config(const SamplerChoice& sampler, const SchedulerConfig& config);

// ---- torch ------------------------------------------------------------------------------------------
// torch.linspace(start, end, steps, dtype=float32) as the x86 wheel computes it.
std::vector<float> torch_linspace_f32(double start, double end, int64_t steps);
// betas -> alphas = 1 - betas -> torch.cumprod (double accumulator), with the class's handling of
// rescale_betas_zero_snr (`pin_last` sets alphas_cumprod[-1] = 2**-24 as Euler/DPM++ do).
std::vector<float> make_alphas_cumprod(const ResolvedConfig& c, bool pin_last, const ScalarMath& math);
// ((1 - ac) / ac) ** 0.5 in float32: the training sigmas, index = training timestep.
std::vector<float> training_sigmas(const std::vector<float>& alphas_cumprod, const ScalarMath& math);

// ---- numpy ------------------------------------------------------------------------------------------
std::vector<double> np_linspace(double start, double stop, int64_t num, bool endpoint = true);
std::vector<double> np_arange(double start, double stop, double step);
double np_round(double x);  // round half to even
// np.interp(x, arange(len(fp)), fp) in float64.
std::vector<double> np_interp(const std::vector<double>& x, const std::vector<float>& fp);
// np.log on a float32 array (numpy's AVX2/AVX512F kernel).
float np_logf(float x);
// diffusers' _sigma_to_t: fractional training timestep of sigma, interpolating log sigma.
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas);
// diffusers' _convert_to_karras (rho = 7) from sigma_min and sigma_max.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t n);

// ---- the samplers (one file each) -------------------------------------------------------------------
std::unique_ptr<Scheduler> make_pndm(const ResolvedConfig& c, int steps, const ScalarMath& math);
std::unique_ptr<Scheduler> make_ddim(const ResolvedConfig& c, int steps, float eta, const ScalarMath& math);
std::unique_ptr<Scheduler> make_euler(const ResolvedConfig& c, int steps, bool ancestral, const ScalarMath& math);
std::unique_ptr<Scheduler> make_dpm_solver(const ResolvedConfig& c, int steps, const ScalarMath& math);
std::unique_ptr<Scheduler> make_lcm(const ResolvedConfig& c, int steps, const ScalarMath& math);

// Small helpers over the op interface.
inline Tensor mul(Backend& b, const Tensor& x, float s) { return b.binary_scalar(BinaryOp::Mul, x, s); }
inline Tensor div(Backend& b, const Tensor& x, float s) { return b.binary_scalar(BinaryOp::Div, x, s); }
inline Tensor add(Backend& b, const Tensor& x, const Tensor& y) { return b.binary(BinaryOp::Add, x, y); }
inline Tensor sub(Backend& b, const Tensor& x, const Tensor& y) { return b.binary(BinaryOp::Sub, x, y); }

// Timestep t's alphas_cumprod entry, with the error a bad table index deserves.
float alpha_at(const std::vector<float>& ac, int64_t t);

}  // namespace sdmpi::sched
