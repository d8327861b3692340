// make-model (see include/sdmpi/make_model.h): deterministic random values, the presets and the
// in-memory model. The folder writer is make_model_folder.cpp.
//
// The parameter lists are the networks' own declarations (unet_parameters() etc.: each model
// constructed on a ListingSink), covering the *full* modules, the VAE encoder too, because the
// folder must load in diffusers without missing keys. tests/unit/make_model_test.cpp checks that
// the folder loads back into our models, and tools/check_make_model.py checks it against diffusers.
#include "sdmpi/make_model.h"

#include <algorithm>
#include <cmath>

#include "io/sd_configs.h"
#include "sdmpi/error.h"

namespace sdmpi {

namespace {

// ---- deterministic random values ----------------------------------------------------------------

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t mix64(uint64_t z) {  // splitmix64's output function
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform in [0, 1) with 53 bits, the i-th value of the stream `key`.
double uniform01(uint64_t key, uint64_t i) {
  return static_cast<double>(mix64(key + (i + 1) * kGolden) >> 11) * 0x1.0p-53;
}

std::shared_ptr<MemoryWeightSource> memory_weights(const std::string& description,
                                                   const std::vector<ParamSpec>& params,
                                                   uint64_t seed) {
  auto source = std::make_shared<MemoryWeightSource>(description);
  for (const ParamSpec& p : params) source->add_f32(p.name, p.shape, random_parameter(p, seed));
  return source;
}

}  // namespace

std::vector<float> random_parameter(const ParamSpec& p, uint64_t seed) {
  const int64_t n = shape_numel(p.shape);
  std::vector<float> v(static_cast<size_t>(n));
  const uint64_t key = mix64(seed ^ mix64(fnv1a(p.name)));
  const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(p.fan_in, 1)));
  float* out = v.data();
  switch (p.init) {
    case ParamInit::Weight:
    case ParamInit::Bias:  // PyTorch's Linear/Conv default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(bound * (2.0 * uniform01(key, i) - 1.0));
      break;
    case ParamInit::NormWeight:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(1.0 + 0.2 * (2.0 * uniform01(key, i) - 1.0));
      break;
    case ParamInit::NormBias:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(0.1 * (2.0 * uniform01(key, i) - 1.0));
      break;
    case ParamInit::Embedding:  // nn.Embedding's default N(0, 1), Box-Muller on two uniforms
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) {
        const double u1 = 1.0 - uniform01(key, 2 * static_cast<uint64_t>(i));  // (0, 1]
        const double u2 = uniform01(key, 2 * static_cast<uint64_t>(i) + 1);
        out[i] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
      }
      break;
  }
  return v;
}

// ---- presets --------------------------------------------------------------------------------------

std::vector<std::string> model_preset_names() { return sd_config_names(); }

ModelPreset model_preset(const std::string& name) {
  const std::vector<std::string> names = model_preset_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    std::string known;
    for (size_t i = 0; i < names.size(); ++i)
      known += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
    throw InputError("unknown model preset '" + name + "' (" + known + ")");
  }
  ModelPreset p;
  p.name = name;
  p.unet = UNetConfig::preset(name);
  p.vae = VAEConfig::preset(name);
  p.has_text_encoder = sd_config_has(name, "text_encoder");
  if (p.has_text_encoder) p.text_encoder = ClipTextConfig::preset(name);
  p.scheduler = sd_config(name, "scheduler");
  if (sd_config_has(name, "text_encoder_2")) {
    p.text_encoder_2 = ClipTextConfig::from_json(sd_config(name, "text_encoder_2"), "the built-in " + name + " text_encoder_2 config");
    p.text_encoder_2->with_projection = true;
  }
  p.model_index = sd_config_has(name, "model_index") ? sd_config(name, "model_index") : nlohmann::json::object();
  return p;
}

ClipTokenizer sdxl_tokenizer_2() {
  static const ClipTokenizer tokenizer = [] {
    using Format = ClipTokenizer::FolderFormat;
    ClipTokenizer::Files files = ClipTokenizer::builtin().to_files(Format::VocabMerges);
    for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"}) {
      auto it = files.find(name);
      if (it == files.end()) continue;
      nlohmann::json j = nlohmann::json::parse(it->second);
      if (j.contains("pad_token")) j["pad_token"] = "!";
      it->second = j.dump(2);
    }
    return ClipTokenizer::from_files(files, "the built-in SDXL tokenizer_2");
  }();
  return tokenizer;
}

InMemoryModel make_model_in_memory(const std::string& preset, uint64_t seed) {
  InMemoryModel m;
  m.configs = model_preset(preset);
  const std::string tag = "built-in " + preset + " model (seed " + std::to_string(seed) + ")";
  m.unet = memory_weights(tag + " unet", unet_parameters(m.configs.unet), seed);
  m.vae = memory_weights(tag + " vae", vae_parameters(m.configs.vae), seed);
  if (m.configs.has_text_encoder)
    m.text_encoder = memory_weights(tag + " text_encoder", clip_text_parameters(m.configs.text_encoder), seed);
  if (m.configs.text_encoder_2)
    m.text_encoder_2 = memory_weights(tag + " text_encoder_2", clip_text_parameters(*m.configs.text_encoder_2), seed);
  return m;
}

}  // namespace sdmpi
