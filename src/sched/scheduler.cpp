// Sampler names (parsed with the table of sdmpi/samplers.h), scheduler_config.json reading (diffusers'
// from_config rule; the file through sdmpi/config_json.h), the factory, and the
// pieces every sampler shares: initial latents, per-item noise and the CFG combine.
#include "sdmpi/scheduler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "sched/sched_internal.h"
#include "sdmpi/config_json.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Reads one class's __init__ arguments from the stated keys, with that class's defaults.
class ConfigReader {
 public:
  ConfigReader(const SchedulerConfig& config, std::string class_name)
      : config_(config), class_name_(std::move(class_name)) {}

  bool has(const std::string& key) const {
    return config_.stated.contains(key) && !config_.stated.at(key).is_null();
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    std::string value = config_.stated.contains(key) ? config_.stated.at(key).dump() : "(default)";
    if (value.size() > 80) value = value.substr(0, 77) + "...";
    throw InputError(config_.source + ": scheduler config key \"" + key + "\" = " + value + ": " +
                     why + " (" + class_name_ + ")");
  }

  bool boolean(const std::string& key, bool fallback) const {
    if (!config_.stated.contains(key)) return fallback;
    const auto& v = config_.stated.at(key);
    if (v.is_null()) return false;  // Python None is falsy
    if (!v.is_boolean()) fail(key, "expected true or false");
    return v.get<bool>();
  }

  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const auto& v = config_.stated.at(key);
    if (v.is_number()) return v.get<double>();
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (s == "Infinity") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    }
    fail(key, "expected a number");
  }

  // A number strictly between lo and hi (which may be infinite).
  double number_between(const std::string& key, double fallback, double lo, double hi) const {
    const double x = number(key, fallback);
    if (!(x > lo && x < hi)) {
      std::ostringstream os;
      os << "expected a number in (" << lo << ", " << hi << ")";
      fail(key, os.str());
    }
    return x;
  }

  std::optional<double> optional_positive(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    return number_between(key, 1.0, 0.0, std::numeric_limits<double>::infinity());
  }

  int64_t integer(const std::string& key, int64_t fallback, int64_t lo, int64_t hi) const {
    if (!has(key)) return fallback;
    const auto& v = config_.stated.at(key);
    int64_t x = 0;
    if (v.is_number_integer()) {
      x = v.get<int64_t>();
    } else if (v.is_number_float() && std::nearbyint(v.get<double>()) == v.get<double>() &&
               std::fabs(v.get<double>()) < 9e15) {
      x = static_cast<int64_t>(v.get<double>());
    } else {
      fail(key, "expected an integer");
    }
    if (x < lo || x > hi)
      fail(key, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return x;
  }

  std::string choice(const std::string& key, const std::string& fallback,
                     const std::vector<std::string>& allowed) const {
    if (!has(key)) return fallback;
    const auto& v = config_.stated.at(key);
    if (!v.is_string()) fail(key, "expected a string");
    const std::string s = v.get<std::string>();
    if (std::find(allowed.begin(), allowed.end(), s) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(key, "supported values: " + list);
    }
    return s;
  }

  // A feature flag whose `true` we do not implement.
  void require_false(const std::string& key, const std::string& what) const {
    if (boolean(key, false)) fail(key, what + " is not supported");
  }

 private:
  const SchedulerConfig& config_;
  std::string class_name_;
};

}  // namespace

// ---- SchedulerConfig ------------------------------------------------------------------------------

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object())
    throw InputError(source + ": a scheduler config must be a JSON object, got " +
                     std::string(json.type_name()));
  SchedulerConfig c;
  c.source = source;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "_class_name") {
      if (!it.value().is_string())
        throw InputError(source + ": \"_class_name\" must be a string, got " + it.value().dump());
      c.class_name = it.value().get<std::string>();
    }
    if (!it.key().empty() && it.key()[0] == '_') continue;  // _diffusers_version and friends
    c.stated[it.key()] = it.value();
  }
  return c;
}

SchedulerConfig SchedulerConfig::from_file(const std::string& path) {
  // diffusers writes float('inf') bare (DPM++'s "lambda_min_clipped": -Infinity): read as the
  // string "-Infinity", which ConfigReader::number accepts.
  return from_json(read_config_json(path, {.python_constants = true}), path);
}

// ---- names ------------------------------------------------------------------------------------------

SamplerChoice parse_sampler(const std::string& sampler, const std::string& schedule) {
  bool implied_karras = false;
  const SamplerInfo* info = find_sampler(sampler, &implied_karras);
  if (!info) throw InputError("unknown sampler \"" + sampler + "\"; valid: " + sampler_choices_text());
  SamplerChoice c;
  c.kind = info->kind;
  c.name = info->name;
  const std::string sch = lower(schedule);
  if (sch == "karras") {
    c.karras = true;
  } else if (sch != "default" && !sch.empty()) {
    throw InputError("unknown schedule \"" + schedule + "\"; valid: default, karras");
  }
  c.karras = c.karras || implied_karras;
  if (c.karras && !info->has_karras)
    throw InputError("sampler \"" + sampler + "\" has no karras schedule; karras works with: " +
                     karras_sampler_names_text());
  return c;
}

// ---- configuration ----------------------------------------------------------------------------------

namespace sched {

ResolvedConfig resolve_config(const SamplerChoice& sampler, const SchedulerConfig& config) {
  const SamplerKind kind = sampler.kind;
  ConfigReader r(config, sampler_info(kind).diffusers_class);
  ResolvedConfig c;
  c.source = config.source;
  const bool lcm = kind == SamplerKind::LCM;

  c.num_train_timesteps = r.integer("num_train_timesteps", 1000, 2, 100000);
  c.beta_start = r.number_between("beta_start", lcm ? 0.00085 : 0.0001, 0.0, 1.0);
  c.beta_end = r.number_between("beta_end", lcm ? 0.012 : 0.02, 0.0, 1.0);
  if (r.has("trained_betas")) {
    const auto& v = config.stated.at("trained_betas");
    if (!v.is_array() || static_cast<int64_t>(v.size()) != c.num_train_timesteps)
      r.fail("trained_betas", "expected null or an array of num_train_timesteps (" +
                                  std::to_string(c.num_train_timesteps) + ") numbers");
    std::vector<double> betas;
    for (const auto& b : v) {
      if (!b.is_number() || !(b.get<double>() >= 0.0 && b.get<double>() < 1.0))
        r.fail("trained_betas", "expected numbers in [0, 1), found " + b.dump());
      betas.push_back(b.get<double>());
    }
    c.trained_betas = std::move(betas);
    // diffusers ignores beta_schedule then (but DPM++ Karras still asks whether it is cosine).
    const auto& bs = config.stated.contains("beta_schedule") ? config.stated.at("beta_schedule")
                                                             : nlohmann::json();
    c.beta_schedule = bs.is_string() ? bs.get<std::string>() : (lcm ? "scaled_linear" : "linear");
  } else {
    c.beta_schedule = r.choice("beta_schedule", lcm ? "scaled_linear" : "linear",
                               {"linear", "scaled_linear", "squaredcos_cap_v2"});
  }
  c.prediction_type = r.choice("prediction_type", "epsilon", {"epsilon", "v_prediction"});
  c.steps_offset = r.integer("steps_offset", 0, 0, c.num_train_timesteps);
  const bool euler_like = kind == SamplerKind::Euler || kind == SamplerKind::EulerAncestral ||
                          kind == SamplerKind::DPMSolverMultistep;
  c.timestep_spacing =
      r.choice("timestep_spacing", euler_like ? "linspace" : "leading", {"leading", "linspace", "trailing"});
  if (kind != SamplerKind::PNDM) c.rescale_betas_zero_snr = r.boolean("rescale_betas_zero_snr", false);

  switch (kind) {
    case SamplerKind::PNDM:
      c.skip_prk_steps = r.boolean("skip_prk_steps", false);
      if (!c.skip_prk_steps)
        r.fail("skip_prk_steps",
               "the Runge-Kutta warm-up (skip_prk_steps false, the PNDMScheduler default) is not "
               "supported; set \"skip_prk_steps\": true for PLMS");
      c.set_alpha_to_one = r.boolean("set_alpha_to_one", false);
      break;
    case SamplerKind::DDIM:
    case SamplerKind::LCM:
      c.clip_sample = r.boolean("clip_sample", !lcm);
      c.clip_sample_range = r.number_between("clip_sample_range", 1.0, 0.0, std::numeric_limits<double>::infinity());
      c.set_alpha_to_one = r.boolean("set_alpha_to_one", true);
      r.require_false("thresholding", "dynamic thresholding");
      if (lcm) {
        c.original_inference_steps = r.integer("original_inference_steps", 50, 1, c.num_train_timesteps);
        c.timestep_scaling = r.number_between("timestep_scaling", 10.0, 0.0, std::numeric_limits<double>::infinity());
      }
      break;
    case SamplerKind::Euler:
      r.choice("interpolation_type", "linear", {"linear"});
      c.use_karras_sigmas = sampler.karras || r.boolean("use_karras_sigmas", false);
      r.require_false("use_exponential_sigmas", "use_exponential_sigmas");
      r.require_false("use_beta_sigmas", "use_beta_sigmas");
      c.sigma_min = r.optional_positive("sigma_min");
      c.sigma_max = r.optional_positive("sigma_max");
      if (r.choice("timestep_type", "discrete", {"discrete", "continuous"}) == "continuous" &&
          c.prediction_type == "v_prediction")
        r.fail("timestep_type", "continuous timesteps with v_prediction are not supported");
      c.final_sigmas_type = r.choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
      break;
    case SamplerKind::EulerAncestral:
      break;
    case SamplerKind::DPMSolverMultistep: {
      // dpm++2m is algorithm_type dpmsolver++ with solver_order 2, whatever the json says.
      const std::string solver = r.choice("solver_type", "midpoint", {"midpoint", "heun", "logrho", "bh1", "bh2"});
      c.solver_type = solver == "heun" ? "heun" : "midpoint";  // diffusers maps the others to midpoint
      c.lower_order_final = r.boolean("lower_order_final", true);
      c.euler_at_final = r.boolean("euler_at_final", false);
      c.use_karras_sigmas = sampler.karras || r.boolean("use_karras_sigmas", false);
      r.require_false("use_exponential_sigmas", "use_exponential_sigmas");
      r.require_false("use_beta_sigmas", "use_beta_sigmas");
      r.require_false("use_lu_lambdas", "use_lu_lambdas");
      r.require_false("use_flow_sigmas", "use_flow_sigmas");
      r.require_false("thresholding", "dynamic thresholding");
      if (r.has("variance_type")) r.fail("variance_type", "learned variance is not supported");
      c.final_sigmas_type = r.choice("final_sigmas_type", "zero", {"zero", "sigma_min"});
      c.lambda_min_clipped = r.number("lambda_min_clipped", -std::numeric_limits<double>::infinity());
      break;
    }
  }
  return c;
}

}  // namespace sched

// ---- factory ----------------------------------------------------------------------------------------

std::unique_ptr<Scheduler> make_scheduler(const SamplerChoice& sampler, const SchedulerConfig& config,
                                          int steps, float eta, const ScalarMath& math) {
  const sched::ResolvedConfig c = sched::resolve_config(sampler, config);
  if (steps < 1)
    throw InputError("steps must be at least 1, got " + std::to_string(steps));
  if (steps > c.num_train_timesteps)
    throw InputError("steps (" + std::to_string(steps) + ") cannot exceed the model's " +
                     std::to_string(c.num_train_timesteps) + " training timesteps (" + c.source + ")");
  if (!(eta >= 0.0f) || !std::isfinite(eta))
    throw InputError("eta must be a finite number >= 0, got " + std::to_string(eta));
  switch (sampler.kind) {
    case SamplerKind::PNDM: return sched::make_pndm(c, steps, math);
    case SamplerKind::DDIM: return sched::make_ddim(c, steps, eta, math);
    case SamplerKind::Euler: return sched::make_euler(c, steps, false, math);
    case SamplerKind::EulerAncestral: return sched::make_euler(c, steps, true, math);
    case SamplerKind::DPMSolverMultistep: return sched::make_dpm_solver(c, steps, math);
    case SamplerKind::LCM: return sched::make_lcm(c, steps, math);
  }
  throw Error("unreachable sampler kind");
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& sampler, const std::string& schedule,
                                          const SchedulerConfig& config, int steps, float eta,
                                          const ScalarMath& math) {
  return make_scheduler(parse_sampler(sampler, schedule), config, steps, eta, math);
}

// ---- shared pieces ----------------------------------------------------------------------------------

ScalarMath ScalarMath::correctly_rounded() {
  ScalarMath m;
  m.sqrt = [](float x) { return std::sqrt(x); };  // IEEE sqrt is correctly rounded
  m.log = [](float x) { return static_cast<float>(std::log(static_cast<double>(x))); };
  m.exp = [](float x) { return static_cast<float>(std::exp(static_cast<double>(x))); };
  return m;
}

Tensor Scheduler::init_latents(Backend& backend, const Tensor& noise) const {
  return backend.binary_scalar(BinaryOp::Mul, noise, init_noise_sigma_);
}

Tensor Scheduler::scale_model_input(Backend& /*backend*/, const Tensor& x, size_t /*call*/) const {
  return x;
}

void Scheduler::start_at(size_t first) {
  SDMPI_CHECK(next_call_ == 0 && first < timesteps_.size(),
              name_ + ": cannot start at step " + std::to_string(first) + " of " + std::to_string(timesteps_.size()) +
                  " after step " + std::to_string(next_call_));
  next_call_ = first;
}

Tensor Scheduler::add_noise(Backend& b, const Tensor& original, const Tensor& noise, size_t call) const {
  SDMPI_CHECK(call < timesteps_.size(), name_ + ": add_noise at step " + std::to_string(call) + " of " +
                                            std::to_string(timesteps_.size()));
  // alphas_cumprod[t] ** 0.5 (torch's pow by 0.5 is its sqrt), (1 - alphas_cumprod[t]) ** 0.5.
  const float a = sched::alpha_at(alphas_cumprod_, static_cast<int64_t>(timesteps_[call]));
  const Tensor signal = b.binary_scalar(BinaryOp::Mul, original, sqrt_(a));
  const Tensor scaled_noise = b.binary_scalar(BinaryOp::Mul, noise, sqrt_(1.0f - a));
  return b.binary(BinaryOp::Add, signal, scaled_noise);
}

void Scheduler::begin_step(size_t call) {
  SDMPI_CHECK(call == next_call_ && call < timesteps_.size(),
              name_ + " step " + std::to_string(call) + " called, expected step " +
                  std::to_string(next_call_) + " of " + std::to_string(timesteps_.size()));
  ++next_call_;
}

Tensor draw_per_item_noise(Backend& backend, const std::vector<TorchGenerator*>& generators,
                           const Shape& nhwc_shape) {
  SDMPI_CHECK(nhwc_shape.size() == 4, "per-item noise needs an NHWC shape, got " + shape_str(nhwc_shape));
  SDMPI_CHECK(static_cast<int64_t>(generators.size()) == nhwc_shape[0],
              std::to_string(generators.size()) + " generators for a batch of " +
                  std::to_string(nhwc_shape[0]));
  const int64_t h = nhwc_shape[1], w = nhwc_shape[2], c = nhwc_shape[3];
  const size_t item = static_cast<size_t>(h * w * c);
  std::vector<float> host(item * generators.size());
  for (size_t b = 0; b < generators.size(); ++b) randn_nhwc(*generators[b], c, h, w, host.data() + b * item);
  return backend.from_host(host.data(), nhwc_shape);
}

NoiseFn per_item_noise(std::vector<TorchGenerator*> generators) {
  return [generators = std::move(generators)](Backend& backend, const Shape& shape) {
    return draw_per_item_noise(backend, generators, shape);
  };
}

}  // namespace sdmpi
