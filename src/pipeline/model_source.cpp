// ModelSource: one front for the three ways a model arrives (diffusers folder, single-file
// checkpoint, the built-in "tiny" model generated in memory), so the pipeline and the CLI never
// care which.
#include <filesystem>
#include <mutex>
#include <optional>

#include "io/sd_configs.h"
#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_files.h"
#include "sdmpi/pipeline.h"
#include "pipeline/demo_model.h"

namespace sdmpi {

namespace fs = std::filesystem;

// The built-in model: the "tiny" preset with seed 0, made in memory on first use.
constexpr const char* kBuiltinName = "tiny";
constexpr uint64_t kBuiltinSeed = 0;

struct ModelSource::State {
  std::optional<ModelFiles> files;
  std::optional<InMemoryModel> memory;
  // from_memory():
  std::map<std::string, nlohmann::json> configs;
  std::map<std::string, std::shared_ptr<WeightSource>> weights;
  std::map<std::string, ClipTokenizer> tokenizers;
  bool assembled = false;
};

ModelSource ModelSource::from_memory(const std::string& name, std::map<std::string, nlohmann::json> configs,
                                     std::map<std::string, std::shared_ptr<WeightSource>> weights,
                                     std::map<std::string, ClipTokenizer> tokenizers) {
  ModelSource m;
  m.spec_ = name;
  m.builtin_ = true;
  m.state_ = std::make_shared<State>();
  m.state_->configs = std::move(configs);
  m.state_->weights = std::move(weights);
  m.state_->tokenizers = std::move(tokenizers);
  m.state_->assembled = true;
  return m;
}

ModelSource ModelSource::open(const std::string& spec, const std::string& variant, bool weights_in_place) {
  ModelSource m;
  m.spec_ = spec;
  m.state_ = std::make_shared<State>();
  if (spec == kBuiltinName) {
    m.builtin_ = true;
    m.state_->memory = make_model_in_memory(kBuiltinName, kBuiltinSeed);
    return m;
  }
  if (spec == kDemoModelName) return open_demo_model();  // trained, embedded (tools/demo_model)
  if (!fs::exists(spec))
    throw InputError("model " + spec + " does not exist (give a diffusers folder, a .safetensors checkpoint, 'tiny' or 'demo')");
  m.state_->files = ModelFiles::open(spec, variant, weights_in_place);
  return m;
}

bool ModelSource::has(const std::string& component) const {
  if (state_->assembled) return state_->configs.count(component) != 0;
  if (state_->memory)
    return component == "unet" || component == "vae" || component == "scheduler" ||
           (component == "text_encoder" && state_->memory->text_encoder) ||
           component == "model_index" || (component == "text_encoder_2" && state_->memory->text_encoder_2);
  return state_->files->has(component);
}

nlohmann::json ModelSource::config(const std::string& component) const {
  if (state_->assembled) {
    if (component == "model_index" && !state_->configs.count(component)) return nlohmann::json::object();
    auto it = state_->configs.find(component);
    if (it == state_->configs.end()) throw Error("model " + spec_ + " has no " + component + " config");
    return it->second;
  }
  if (state_->memory) {
    const ModelPreset& p = state_->memory->configs;
    if (component == "unet") return p.unet.to_json();
    if (component == "vae") return p.vae.to_json();
    if (component == "text_encoder" && p.has_text_encoder) return p.text_encoder.to_json();
    if (component == "scheduler") return p.scheduler;
    if (component == "model_index") return p.model_index;
    if (component == "text_encoder_2" && p.text_encoder_2) return p.text_encoder_2->to_json();
    throw Error("no component " + component + " in the built-in model");
  }
  return state_->files->config(component);
}

std::shared_ptr<WeightSource> ModelSource::weights(const std::string& component) const {
  if (weight_overrides_) {
    auto it = weight_overrides_->find(component);
    if (it != weight_overrides_->end()) return it->second;
  }
  if (state_->assembled) {
    auto it = state_->weights.find(component);
    if (it == state_->weights.end()) throw Error("model " + spec_ + " has no " + component + " weights");
    return it->second;
  }
  if (state_->memory) {
    if (component == "unet") return state_->memory->unet;
    if (component == "vae") return state_->memory->vae;
    if (component == "text_encoder" && state_->memory->text_encoder) return state_->memory->text_encoder;
    if (component == "text_encoder_2" && state_->memory->text_encoder_2) return state_->memory->text_encoder_2;
    throw Error("no weights for " + component + " in the built-in model");
  }
  return state_->files->weights(component);
}

ModelSource ModelSource::with_weights(std::map<std::string, std::shared_ptr<WeightSource>> weights) const {
  ModelSource m = *this;
  auto all = std::make_shared<std::map<std::string, std::shared_ptr<WeightSource>>>();
  if (weight_overrides_) *all = *weight_overrides_;
  for (auto& [component, source] : weights) (*all)[component] = std::move(source);
  m.weight_overrides_ = std::move(all);
  return m;
}

ClipTokenizer ModelSource::tokenizer(const std::string& which) const {
  if (state_->assembled) {
    auto it = state_->tokenizers.find(which);
    if (it != state_->tokenizers.end()) return it->second;
  }
  if (state_->memory && which == "tokenizer_2") return sdxl_tokenizer_2();
  if (state_->memory || state_->assembled) return ClipTokenizer::builtin();
  std::string dir = state_->files->tokenizer_dir(which);
  if (!dir.empty()) return ClipTokenizer::from_dir(dir);
  // A single file carries no tokenizer: the CLIP vocabulary, padded with "!" where the model's
  // repository pads so (the OpenCLIP-trained towers: SDXL's second, SD 2.x's only one), as
  // diffusers' from_single_file loads them from those repositories.
  if (which == "tokenizer_2" || family() == "SD 2.x") return sdxl_tokenizer_2();
  return ClipTokenizer::builtin();
}

std::string ModelSource::weights_hash() const {
  if (state_->assembled) return "memory:" + spec_;
  if (state_->memory) return std::string("builtin:") + kBuiltinName + ":seed" + std::to_string(kBuiltinSeed);
  return sdmpi::weights_hash(state_->files->weight_files(), state_->files->path());
}

std::string ModelSource::name() const {
  if (builtin_) return state_->assembled ? spec_ : kBuiltinName;  // from_memory: its own name
  fs::path p = fs::path(spec_).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return state_->files->is_single_file() ? p.stem().string() : p.filename().string();
}

std::string ModelSource::describe() const {
  if (state_->assembled) return "in-memory model " + spec_;
  if (builtin_) return "the built-in tiny model (random weights, seed 0)";
  return state_->files->describe();
}

std::string ModelSource::family() const {
  if (state_->files) return state_->files->family();
  return sd_family(config("unet"), has("text_encoder") ? config("text_encoder") : nlohmann::json());  // refiner: none
}

ClipTokenizer load_tokenizer(const std::string& model_spec) {
  if (model_spec == kBuiltinName) return ClipTokenizer::builtin();
  return ModelSource::open(model_spec).tokenizer();
}

}  // namespace sdmpi
