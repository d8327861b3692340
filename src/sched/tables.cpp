// Noise-schedule tables, computed exactly as diffusers computes them with torch and numpy.
//
// Bits matter here: the betas feed every alphas_cumprod entry, and numpy's float64 timestep and
// sigma arithmetic decides values that the UNet and the updates see. So each helper mirrors one
// library routine's arithmetic (the project builds with -ffp-contract=off; fused steps are
// explicit std::fma where the reference build fuses them):
//   torch.linspace (float32)  the scalar kernel, start + step*i below halfway and end - step*(n-1-i)
//                             above, contracted to FMAs by the wheel's x86 build
//   torch.cumprod             double accumulator, each output rounded to float
//   np.linspace / np.arange   i*step + start (endpoint pinned) / start + i*delta with
//                             delta = (start + step) - start
//   np.interp                 slope*(x - xp[j]) + fp[j] in float64
//   np.log on float32         numpy's AVX2/AVX512F rational approximation (the x86-64 wheels'
//                             dispatch target on every AVX2 machine), not libm
// Float64 libm calls (log, pow in the Karras ramp) use the C library; numpy may use SVML for
// those on AVX512 machines, which can differ in the last bit of a double and so, very rarely,
// in the float32 or rounded values derived from them.
#include <cmath>
#include <cstring>
#include <limits>

#include "sched/sched_internal.h"
#include "sdmpi/dtype.h"
#include "sdmpi/error.h"

namespace sdmpi::sched {

std::vector<float> torch_linspace_f32(double start_d, double end_d, int64_t steps) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(steps, 0)));
  if (steps <= 0) return out;
  const float start = static_cast<float>(start_d);
  const float end = static_cast<float>(end_d);
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int64_t halfway = steps / 2;
  for (int64_t i = 0; i < steps; ++i) {
    out[static_cast<size_t>(i)] =
        i < halfway ? std::fma(step, static_cast<float>(i), start)
                    : std::fma(-step, static_cast<float>(steps - i - 1), end);
  }
  return out;
}

namespace {

std::vector<float> cumprod(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  double acc = 1.0;
  for (size_t i = 0; i < x.size(); ++i) {
    acc *= static_cast<double>(x[i]);
    out[i] = static_cast<float>(acc);
  }
  return out;
}

std::vector<float> one_minus(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = 1.0f - x[i];
  return out;
}

// diffusers' betas_for_alpha_bar with the cosine transform (float64 Python math, then float32).
std::vector<float> cosine_betas(int64_t n) {
  auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * 3.141592653589793 / 2.0);
    return c * c;
  };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / static_cast<double>(n);
    const double t2 = static_cast<double>(i + 1) / static_cast<double>(n);
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1.0 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

// diffusers' rescale_zero_terminal_snr, elementwise float32 as torch computes it.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas, const ScalarMath& math) {
  const std::vector<float> ac = cumprod(one_minus(betas));
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) s[i] = math.sqrt(ac[i]);
  const float s0 = s.front(), sT = s.back();
  const float scale = s0 / (s0 - sT);
  for (float& v : s) v = (v - sT) * scale;
  std::vector<float> alphas(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const float bar = s[i] * s[i];
    alphas[i] = i == 0 ? bar : bar / (s[i - 1] * s[i - 1]);
  }
  return one_minus(alphas);
}

}  // namespace

std::vector<float> make_alphas_cumprod(const ResolvedConfig& c, bool pin_last, const ScalarMath& math) {
  const int64_t n = c.num_train_timesteps;
  std::vector<float> betas;
  if (c.trained_betas) {
    for (double b : *c.trained_betas) betas.push_back(static_cast<float>(b));
  } else if (c.beta_schedule == "linear") {
    betas = torch_linspace_f32(c.beta_start, c.beta_end, n);
  } else if (c.beta_schedule == "scaled_linear") {
    betas = torch_linspace_f32(std::pow(c.beta_start, 0.5), std::pow(c.beta_end, 0.5), n);
    for (float& b : betas) b = b * b;  // ** 2 is x*x in torch
  } else if (c.beta_schedule == "squaredcos_cap_v2") {
    betas = cosine_betas(n);
  } else {
    throw InputError(c.source + ": unsupported beta_schedule \"" + c.beta_schedule + "\"");
  }
  if (c.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas, math);
  std::vector<float> ac = cumprod(one_minus(betas));
  if (c.rescale_betas_zero_snr && pin_last) ac.back() = 0x1p-24f;
  return ac;
}

std::vector<float> training_sigmas(const std::vector<float>& ac, const ScalarMath& math) {
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) s[i] = math.sqrt((1.0f - ac[i]) / ac[i]);
  return s;
}

float alpha_at(const std::vector<float>& ac, int64_t t) {
  // self.alphas_cumprod[timestep] with Python indexing: diffusers' "trailing" spacing yields a
  // timestep of -1 for some step counts (np.arange's length rounding), which reads the last entry.
  const int64_t n = static_cast<int64_t>(ac.size());
  SDMPI_CHECK(t >= -n && t < n, "timestep " + std::to_string(t) + " outside the " + std::to_string(n) +
                                    "-entry alphas_cumprod table");
  return ac[static_cast<size_t>(t < 0 ? t + n : t)];
}

// ---- numpy ------------------------------------------------------------------------------------------

std::vector<double> np_linspace(double start, double stop, int64_t num, bool endpoint) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(num, 0)));
  const int64_t div = endpoint ? num - 1 : num;
  const double delta = stop - start;
  if (div > 0) {
    const double step = delta / static_cast<double>(div);
    for (int64_t i = 0; i < num; ++i) {
      const double k = static_cast<double>(i);
      y[static_cast<size_t>(i)] = (step == 0.0 ? k / static_cast<double>(div) * delta : k * step) + start;
    }
  } else {
    for (int64_t i = 0; i < num; ++i) y[static_cast<size_t>(i)] = static_cast<double>(i) * delta + start;
  }
  if (endpoint && num > 1) y.back() = stop;
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double len_d = std::ceil((stop - start) / step);
  if (!(len_d > 0)) return {};
  SDMPI_CHECK(len_d < 1e8, "np_arange length");
  const size_t n = static_cast<size_t>(len_d);
  std::vector<double> v(n);
  v[0] = start;
  if (n > 1) v[1] = start + step;
  const double delta = n > 1 ? v[1] - v[0] : 0.0;
  for (size_t i = 2; i < n; ++i) v[i] = start + static_cast<double>(i) * delta;
  return v;
}

double np_round(double x) { return std::nearbyint(x); }

std::vector<double> np_interp(const std::vector<double>& x, const std::vector<float>& fp) {
  const int64_t n = static_cast<int64_t>(fp.size());
  std::vector<double> out(x.size());
  for (size_t k = 0; k < x.size(); ++k) {
    const double xv = x[k];
    double r;
    if (std::isnan(xv)) {
      r = xv;
    } else if (xv < 0.0) {
      r = fp.front();
    } else if (xv > static_cast<double>(n - 1)) {
      r = fp.back();
    } else {
      const int64_t j = static_cast<int64_t>(std::floor(xv));  // xp[j] <= x < xp[j+1]
      if (j >= n - 1) {
        r = fp.back();
      } else if (static_cast<double>(j) == xv) {
        r = fp[static_cast<size_t>(j)];
      } else {
        const double lo = fp[static_cast<size_t>(j)], hi = fp[static_cast<size_t>(j + 1)];
        const double slope = (hi - lo) / 1.0;  // xp[j+1] - xp[j] == 1
        r = slope * (xv - static_cast<double>(j)) + lo;
      }
    }
    out[k] = r;
  }
  return out;
}

float np_logf(float x) {
  if (std::isnan(x)) return x;
  if (x < 0.0f) return std::numeric_limits<float>::quiet_NaN();
  if (x == 0.0f) return -std::numeric_limits<float>::infinity();
  if (std::isinf(x)) return x;
  // Normalised mantissa in [0.5, 1) and its exponent (denormals scaled by 2**100 first).
  float e_adjust = 0.0f;
  if (x < std::numeric_limits<float>::min()) {
    x = x * 0x1p100f;
    e_adjust = 100.0f;
  }
  const uint32_t xb = float_bits(x);
  float exponent = static_cast<float>(static_cast<int32_t>(xb >> 23) - 0x7e) - e_adjust;
  float m = bits_float((xb & 0x7fffffu) | (126u << 23));
  if (m <= 0.707106781186547524400844362104849039f) {  // keep m in (sqrt(1/2), sqrt(2)]
    m = m + m;
    exponent = exponent - 1.0f;
  }
  m = m - 1.0f;
  // log(1+m) ~ P(m)/Q(m), degree-5 minimax pair, Horner with FMAs.
  float num = std::fma(2.589979117907922693523e-02f, m, 3.808837741388407920751e-01f);
  num = std::fma(num, m, 1.480000633576506585156e+00f);
  num = std::fma(num, m, 2.112677543073053063722e+00f);
  num = std::fma(num, m, 9.999999999999998702752e-01f);
  num = std::fma(num, m, 0.0f);
  float den = std::fma(5.875095403124574342950e-03f, m, 1.546476374983906719538e-01f);
  den = std::fma(den, m, 9.864942958519418960339e-01f);
  den = std::fma(den, m, 2.453006071784736363091e+00f);
  den = std::fma(den, m, 2.612677543073109236779e+00f);
  den = std::fma(den, m, 1.0f);
  return std::fma(exponent, 0.693147180559945309417232121458176568f, num / den);
}

double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const int64_t n = static_cast<int64_t>(log_sigmas.size());
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // low = the last index whose log sigma is <= log_sigma (0 if none), at most n-2.
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i)
    if (log_sigma - static_cast<double>(log_sigmas[static_cast<size_t>(i)]) >= 0.0) low = i;
  low = std::min(low, n - 2);
  const float lo = log_sigmas[static_cast<size_t>(low)];
  const float hi = log_sigmas[static_cast<size_t>(low + 1)];
  const float span = lo - hi;  // float32 - float32 stays float32 in numpy
  double w = (static_cast<double>(lo) - log_sigma) / static_cast<double>(span);
  w = std::min(std::max(w, 0.0), 1.0);
  return (1.0 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t n) {
  const double rho = 7.0;
  const std::vector<double> ramp = np_linspace(0.0, 1.0, n);
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> s(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) s[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return s;
}

}  // namespace sdmpi::sched
