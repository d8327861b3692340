// Model discovery: a diffusers folder or a single-file LDM checkpoint → configs and weight sources
// under diffusers names.
//
// open() does all the cheap checks up front (folder layout, JSON files, which weight file of each
// component, the checkpoint's family), so a wrong --model fails in a second with the path at fault;
// weights() maps the files only when a model asks for them.
#include "sdmpi/model_files.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <set>
#include <sstream>

#include "io/checkpoint_keys.h"
#include "io/sd_configs.h"
#include "sdmpi/config_json.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- SafetensorsWeightSource --------------------------------------------------------------------

void SafetensorsWeightSource::add_file(const std::shared_ptr<const SafetensorsFile>& file) {
  for (const auto& kv : file->entries()) add(kv.first, file, kv.first);
  for (const auto& kv : file->unsupported()) add(kv.first, file, kv.first);
}

void SafetensorsWeightSource::insert(const std::string& name, Item item) {
  auto it = items_.find(name);
  if (it != items_.end())
    throw InputError(description_ + ": tensor '" + name + "' is given twice, by " + origin(name) +
                     " and " + item.file->path() + ":" + item.key);
  items_.emplace(name, std::move(item));
}

void SafetensorsWeightSource::add(const std::string& name, const std::shared_ptr<const SafetensorsFile>& file,
                                  const std::string& file_key, const Shape& shape) {
  if (!shape.empty()) {
    auto e = file->entries().find(file_key);
    SDMPI_CHECK(e != file->entries().end() && shape_numel(e->second.shape) == shape_numel(shape),
                "reshape of " + file_key + " to " + shape_str(shape));
  }
  insert(name, Item{file, file_key, shape});
}

void SafetensorsWeightSource::add_slice(const std::string& name, const std::shared_ptr<const SafetensorsFile>& file,
                                        const std::string& file_key, int part, int parts) {
  auto e = file->entries().find(file_key);
  if (e != file->entries().end() && (e->second.shape.empty() || e->second.shape[0] % parts != 0))
    throw InputError(file->path() + ": tensor " + file_key + " of shape " + shape_str(e->second.shape) +
                     " does not split into " + std::to_string(parts) + " equal parts along its first dimension");
  Item item{file, file_key, {}};
  item.part = part;
  item.parts = parts;
  insert(name, std::move(item));
}

void SafetensorsWeightSource::add_transposed(const std::string& name, const std::shared_ptr<const SafetensorsFile>& file,
                                             const std::string& file_key) {
  auto e = file->entries().find(file_key);
  if (e != file->entries().end() && e->second.shape.size() != 2)
    throw InputError(file->path() + ": tensor " + file_key + " of shape " + shape_str(e->second.shape) +
                     " is not a matrix (expected [hidden, projection])");
  Item item{file, file_key, {}};
  item.transpose = true;
  insert(name, std::move(item));
}

std::vector<std::string> SafetensorsWeightSource::names() const {
  std::vector<std::string> out;
  out.reserve(items_.size());
  for (const auto& kv : items_) out.push_back(kv.first);
  return out;
}

bool SafetensorsWeightSource::has(const std::string& name) const { return items_.count(name) != 0; }

void SafetensorsWeightSource::release(const std::string& name) const {
  auto it = items_.find(name);
  if (it == items_.end() || it->second.transpose) return;  // a transposed copy is ours, not the file's
  const Item& item = it->second;
  auto entry = item.file->entries().find(item.key);
  if (entry == item.file->entries().end()) return;
  const uint64_t bytes = entry->second.end - entry->second.begin;
  const uint64_t part_bytes = bytes / static_cast<uint64_t>(item.parts);
  item.file->drop_resident(item.key, static_cast<uint64_t>(item.part) * part_bytes, static_cast<int64_t>(part_bytes));
}

WeightView SafetensorsWeightSource::get(const std::string& name) const {
  auto it = items_.find(name);
  if (it == items_.end()) throw InputError(description_ + ": no tensor '" + name + "'");
  const Item& item = it->second;
  WeightView w = item.file->view(item.key);
  w.name = name;
  if (!item.shape.empty()) w.shape = item.shape;
  if (item.parts > 1) {  // rows [part * n, (part + 1) * n) of the first dimension, in place
    const int64_t rows = w.shape[0] / item.parts;
    const int64_t row_bytes = shape_numel(w.shape) / w.shape[0] * static_cast<int64_t>(dtype_size(w.dtype));
    w.data = static_cast<const uint8_t*>(w.data) + item.part * rows * row_bytes;
    w.shape[0] = rows;
  }
  if (item.transpose) {
    std::lock_guard<std::mutex> lock(transposed_mutex_);
    auto& bytes = transposed_[name];
    const int64_t r = w.shape[0], c = w.shape[1];
    const size_t es = dtype_size(w.dtype);
    if (!bytes) {
      bytes = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(r * c) * es);
      const auto* src = static_cast<const uint8_t*>(w.data);
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j)
          std::memcpy(bytes->data() + static_cast<size_t>(j * r + i) * es, src + static_cast<size_t>(i * c + j) * es, es);
    }
    w.data = bytes->data();
    w.shape = {c, r};
    w.keep_alive = bytes;
  }
  return w;
}

std::string SafetensorsWeightSource::origin(const std::string& name) const {
  auto it = items_.find(name);
  if (it == items_.end()) return "";
  return it->second.file->path() + ":" + it->second.key;
}

// ---- ModelFiles ---------------------------------------------------------------------------------

namespace {

// SD 1.x/2.x components; SDXL adds text_encoder_2 (and tokenizer_2).
const std::vector<std::string> kWeightComponents = {"unet", "vae", "text_encoder"};
const std::vector<std::string> kConfigComponents = {"unet", "vae", "text_encoder", "scheduler"};
constexpr const char* kSecondTextEncoder = "text_encoder_2";

bool is_text_encoder(const std::string& component) {
  return component == "text_encoder" || component == kSecondTextEncoder;
}

std::string config_file_of(const std::string& component) {
  return component == "scheduler" ? "scheduler/scheduler_config.json" : component + "/config.json";
}

// Reads a JSON object from `file`; errors are "<where>: <relative name>: ...".
json read_json_object(const fs::path& file, const std::string& where, const std::string& rel) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(where + ": cannot read " + rel);
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = parse_config_json(ss.str(), rel);
  } catch (const ConfigJsonError& e) {
    throw InputError(where + ": " + rel + " is not valid JSON" + e.detail());
  }
  if (!j.is_object()) throw InputError(where + ": " + rel + " is a JSON " + j.type_name() + ", expected an object");
  return j;
}

// A 1×1 conv weight [out, in, 1, 1] (or conv1d [out, in, 1]) → [out, in]; other shapes: empty.
Shape squeezed_linear(const Shape& s) {
  if ((s.size() == 4 && s[2] == 1 && s[3] == 1) || (s.size() == 3 && s[2] == 1)) return {s[0], s[1]};
  return {};
}

bool has_prefix(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }
bool has_suffix(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// The weight file(s) of one folder component.
struct ComponentWeights {
  std::vector<std::string> files;                 // full paths, in a fixed order
  std::string index;                              // full path of a sharded index, else empty
  std::map<std::string, std::string> weight_map;  // name → shard full path (sharded only)
};

}  // namespace

struct ModelFiles::State {
  bool in_place = false;  // weight files opened for use in place (--map-weights)
  std::string path;
  std::string variant;
  bool single = false;
  std::string family = "SD 1.x";

  // Folder.
  json model_index;
  std::vector<std::string> weight_components = kWeightComponents;
  std::vector<std::string> config_components = kConfigComponents;
  std::map<std::string, json> configs;
  std::map<std::string, ComponentWeights> weights;
  std::map<std::string, std::string> tokenizers;  // "tokenizer"[, "tokenizer_2"] → folder

  // Single file.
  std::string row = "sd15";  // the config table's row its family takes its configs from
  std::shared_ptr<const SafetensorsFile> checkpoint;
  ckpt::LdmLayout layout;
  int64_t unet_in_channels = 4;

  // Files mapped so far (weights() may be called once per component, or more).
  mutable std::mutex mutex;
  mutable std::map<std::string, std::shared_ptr<const SafetensorsFile>> opened;

  std::shared_ptr<const SafetensorsFile> file(const std::string& p) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto& f = opened[p];
    if (!f) f = SafetensorsFile::open(p, in_place);
    return f;
  }
};

namespace {

// The component folders model_index.json lists (its ["library", "Class"] entries), for messages.
std::string listed_components(const json& model_index) {
  std::string out;
  for (auto it = model_index.begin(); it != model_index.end(); ++it)
    if (it.value().is_array() && it.value().size() == 2 && !it.value()[0].is_null())
      out += (out.empty() ? "" : ", ") + it.key() + "/";
  return out.empty() ? "no components" : out;
}

// Whether model_index.json lists `component` with a class (SDXL's refiner lists text_encoder as
// [null, null]).
bool lists_component(const json& model_index, const std::string& component) {
  auto it = model_index.find(component);
  return it != model_index.end() && it->is_array() && it->size() == 2 && !(*it)[0].is_null();
}

// Throws for pipeline families this build cannot run, by what model_index.json and the folder
// hold, before any component is required: SD3 / Flux / other DiT pipelines (a transformer/ where SD
// has unet/), anything else without a UNet. SD 1.x, 2.x and SDXL share the UNet2DConditionModel +
// CLIPTextModel layout (SDXL with a second, projecting text encoder; SDXL's refiner with that one
// alone); their configs tell them apart. Returns which text encoders the folder has.
enum class TextEncoders { One, Two, SecondOnly };
TextEncoders check_folder_family(const std::string& where, const fs::path& root, const json& model_index) {
  // Only a string names a class (a fuzzed list here once escaped as nlohmann's type_error).
  auto class_name = model_index.find("_class_name");
  if (class_name != model_index.end() && !class_name->is_string() && !class_name->is_null())
    throw InputError(where + ": model_index.json: \"_class_name\" must be a string, got " + class_name->dump());
  const std::string cls = class_name != model_index.end() && class_name->is_string() ? class_name->get<std::string>() : "";
  const std::string named = cls.empty() ? std::string("model_index.json names no _class_name") : "model_index.json names " + cls;
  const bool sdxl = cls.find("XL") != std::string::npos || lists_component(model_index, kSecondTextEncoder);
  if (sdxl && !lists_component(model_index, kSecondTextEncoder))
    throw InputError(where + ": " + named + " (components " + listed_components(model_index) +
                     ") lists no text_encoder_2, which SDXL needs");
  if (model_index.contains("transformer") || fs::is_directory(root / "transformer"))
    throw InputError(where + ": " + named + " with a transformer/ (" + listed_components(model_index) +
                     "): SD3, Flux and other transformer pipelines are not supported; SD 1.x and SD 2.x "
                     "(unet/ + text_encoder/) are");
  if (!model_index.contains("unet") && !fs::is_directory(root / "unet"))
    throw InputError(where + ": " + named + " without a unet/ (" + listed_components(model_index) +
                     "): not a Stable Diffusion 1.x / 2.x / XL pipeline");
  // The SDXL refiner lists text_encoder as [null, null]: text_encoder_2 alone.
  if (!sdxl) return TextEncoders::One;
  return lists_component(model_index, "text_encoder") ? TextEncoders::Two : TextEncoders::SecondOnly;
}

// The variants present for `base` in `dir`: `<base>.<v>.safetensors` and sharded
// `<base>.safetensors.index.<v>.json` (used only to fall back or to suggest).
std::vector<std::string> variant_files(const fs::path& dir, const std::string& base) {
  const std::string single_tail = ".safetensors", index_head = base + ".safetensors.index.";
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string(), v;
    if (has_prefix(n, index_head.c_str()) && has_suffix(n, ".json") && n.size() > index_head.size() + 5)
      v = n.substr(index_head.size(), n.size() - index_head.size() - 5);
    else if (has_prefix(n, (base + ".").c_str()) && has_suffix(n, single_tail) && n != base + single_tail)
      v = n.substr(base.size() + 1, n.size() - base.size() - 1 - single_tail.size());
    if (!v.empty() && v.find('.') == std::string::npos) out.insert(v);
  }
  return std::vector<std::string>(out.begin(), out.end());
}

// Picks the weight file(s) of one folder component, or throws naming what is missing.
ComponentWeights resolve_component_weights(const fs::path& root, const std::string& where,
                                           const std::string& comp, const std::string& variant) {
  const std::string base = is_text_encoder(comp) ? "model" : "diffusion_pytorch_model";
  const fs::path dir = root / comp;
  auto single_name = [&](const std::string& v) { return base + (v.empty() ? "" : "." + v) + ".safetensors"; };
  auto index_name = [&](const std::string& v) {
    return base + ".safetensors.index" + (v.empty() ? "" : "." + v) + ".json";
  };
  ComponentWeights w;

  // Try `v`: the single file, then a sharded index. Returns false if neither exists.
  auto try_variant = [&](const std::string& v) -> bool {
    if (fs::is_regular_file(dir / single_name(v))) {
      w.files = {(dir / single_name(v)).string()};
      return true;
    }
    if (!fs::is_regular_file(dir / index_name(v))) return false;
    const std::string rel = comp + "/" + index_name(v);
    json idx = read_json_object(dir / index_name(v), where, rel);
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object() || wm->empty())
      throw InputError(where + ": " + rel + " has no \"weight_map\" object of tensor names");
    std::set<std::string> shards;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        throw InputError(where + ": " + rel + ": weight_map[\"" + it.key() + "\"] is not a file name");
      std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw InputError(where + ": " + rel + ": weight_map[\"" + it.key() + "\"] = \"" + shard +
                         "\" is not a file name in " + comp + "/");
      if (!fs::is_regular_file(dir / shard))
        throw InputError(where + ": missing " + comp + "/" + shard + " (listed in " + rel + ")");
      w.weight_map[it.key()] = (dir / shard).string();
      shards.insert((dir / shard).string());
    }
    w.index = (dir / index_name(v)).string();
    w.files.assign(shards.begin(), shards.end());
    return true;
  };

  if (!fs::is_directory(dir)) throw InputError(where + ": missing " + comp + "/");
  if (!variant.empty()) {
    if (!try_variant(variant)) {
      if (!try_variant(""))
        throw InputError(where + ": missing " + comp + "/" + single_name(variant) + " (variant \"" +
                         variant + "\") and " + comp + "/" + single_name(""));
      log::warn(where + ": " + comp + " has no \"" + variant + "\" variant; using " + comp + "/" +
                fs::path(w.files.size() == 1 && w.index.empty() ? w.files[0] : w.index).filename().string());
    }
  } else if (!try_variant("")) {
    std::vector<std::string> variants = variant_files(dir, base);
    if (variants.size() == 1) {
      try_variant(variants[0]);
      log::info(where + ": " + comp + " has only the \"" + variants[0] + "\" variant; using " + comp + "/" +
                single_name(variants[0]));
    } else if (variants.size() > 1) {
      std::string list;
      for (const auto& v : variants) list += (list.empty() ? "" : ", ") + v;
      throw InputError(where + ": no " + comp + "/" + single_name("") + "; variants " + list +
                       " exist: choose one (--variant)");
    } else if (fs::exists(dir / (base + ".bin"))) {
      throw InputError(where + ": " + comp + "/" + base +
                       ".bin is a PyTorch pickle, which sd_mpi does not read; convert it to safetensors");
    } else {
      throw InputError(where + ": missing " + comp + "/" + single_name(""));
    }
  }
  return w;
}

// Single files: the family by the keys, as diffusers' infer_diffusers_model_type tells them apart
// (SDXL: a second, OpenCLIP embedder; SD 2.x: an OpenCLIP cond_stage_model or 1024-wide
// cross-attention), as the row of the config table whose configs it takes: "sdxl", "sd21" (768,
// v-prediction, as diffusers' from_single_file assumes for SD 2.x), "sdxl-refiner" (an OpenCLIP
// embedder 0 and no CLIP one: text_encoder_2 alone) or "sd15". Files without an LDM UNet are refused.
std::string checkpoint_family_row(const SafetensorsFile& f) {
  const std::string& p = f.path();
  bool sd_unet = false, diffusers_names = false, sdxl = false, sd2 = false, refiner = false;
  auto check = [&](const std::string& k, const Shape* shape) {
    if (has_prefix(k, "conditioner.embedders.1.")) sdxl = true;
    if (has_prefix(k, "conditioner.embedders.0.model.")) refiner = true;
    if (has_prefix(k, "cond_stage_model.model.")) sd2 = true;
    if (shape && has_prefix(k, "model.diffusion_model.") && has_suffix(k, ".attn2.to_k.weight") &&
        !shape->empty() && shape->back() == 1024)
      sd2 = true;
    if (has_prefix(k, "model.diffusion_model.input_blocks.")) sd_unet = true;
    if (has_prefix(k, "down_blocks.") || has_prefix(k, "decoder.up_blocks.") || has_prefix(k, "text_model."))
      diffusers_names = true;
  };
  for (const auto& kv : f.entries()) check(kv.first, &kv.second.shape);
  for (const auto& kv : f.unsupported()) check(kv.first, nullptr);
  if (!sd_unet) {
    if (diffusers_names)
      throw InputError(p + ": holds one diffusers component, not a whole single-file checkpoint; pass the "
                           "diffusers model folder instead");
    throw InputError(p + ": not a Stable Diffusion single-file checkpoint (no model.diffusion_model."
                         "input_blocks.* keys)");
  }
  if (refiner && !sdxl) return "sdxl-refiner";
  return sdxl ? "sdxl" : sd2 ? "sd21" : "sd15";
}

}  // namespace

ModelFiles ModelFiles::open(const std::string& path, const std::string& variant, bool weights_in_place) {
  auto s = std::make_shared<State>();
  s->path = path;
  s->variant = variant;
  s->in_place = weights_in_place;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw InputError("model path " + path + ": no such file or folder");

  if (fs::is_regular_file(st)) {
    s->single = true;
    std::string ext = fs::path(path).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (ext == ".ckpt" || ext == ".pt" || ext == ".pth" || ext == ".bin")
      throw InputError(path + ": PyTorch pickle checkpoints (" + ext +
                       ") are not supported; use the .safetensors form of the model");
    if (!variant.empty()) log::warn(path + ": --variant applies to model folders; ignored for a single file");
    s->checkpoint = SafetensorsFile::open(path, s->in_place);
    s->row = checkpoint_family_row(*s->checkpoint);
    const bool refiner = s->row == "sdxl-refiner";
    s->family = sd_family(sd_config(s->row, "unet"), refiner ? json() : sd_config(s->row, "text_encoder"));
    if (s->row == "sdxl" || refiner) {
      s->weight_components.push_back(kSecondTextEncoder);
      s->config_components.push_back(kSecondTextEncoder);
    }
    if (refiner)  // text_encoder_2 alone
      for (auto* list : {&s->weight_components, &s->config_components})
        list->erase(std::remove(list->begin(), list->end(), "text_encoder"), list->end());
    std::vector<std::string> keys;
    for (const auto& kv : s->checkpoint->entries()) keys.push_back(kv.first);
    s->layout = ckpt::detect_ldm_layout(keys);
    auto conv_in = s->checkpoint->entries().find("model.diffusion_model.input_blocks.0.0.weight");
    if (conv_in != s->checkpoint->entries().end() && conv_in->second.shape.size() == 4)
      s->unet_in_channels = conv_in->second.shape[1];
    s->opened[path] = s->checkpoint;
    ModelFiles m;
    m.state_ = s;
    return m;
  }
  if (!fs::is_directory(st)) throw InputError("model path " + path + ": neither a file nor a folder");

  const std::string where = "model folder " + path;
  const fs::path root(path);
  if (!fs::is_regular_file(root / "model_index.json")) {
    if (fs::is_regular_file(root / "config.json"))
      throw InputError(where + ": missing model_index.json (this looks like one component's folder; pass "
                               "the pipeline folder above it)");
    throw InputError(where + ": missing model_index.json (not a diffusers pipeline folder)");
  }
  json model_index = read_json_object(root / "model_index.json", where, "model_index.json");
  s->model_index = model_index;
  std::vector<std::string> tokenizer_folders{"tokenizer"};
  const TextEncoders encoders = check_folder_family(where, root, model_index);
  if (encoders != TextEncoders::One) {
    s->weight_components.push_back(kSecondTextEncoder);
    s->config_components.push_back(kSecondTextEncoder);
    tokenizer_folders.push_back("tokenizer_2");
  }
  if (encoders == TextEncoders::SecondOnly) {  // the refiner: no text_encoder/, no tokenizer/
    for (auto* list : {&s->weight_components, &s->config_components})
      list->erase(std::remove(list->begin(), list->end(), "text_encoder"), list->end());
    tokenizer_folders.erase(tokenizer_folders.begin());
  }
  for (const std::string& c : s->config_components) {
    const std::string rel = config_file_of(c);
    if (!fs::is_regular_file(root / rel)) throw InputError(where + ": missing " + rel);
    s->configs[c] = read_json_object(root / rel, where, rel);
  }
  s->family = sd_family(s->configs["unet"], s->configs.count("text_encoder") ? s->configs["text_encoder"] : json());
  // The tokenizer as CLIPTokenizer saves it (vocab.json + merges.txt) or as transformers 5 does
  // (tokenizer.json alone).
  for (const std::string& t : tokenizer_folders) {
    if (!fs::is_regular_file(root / t / "tokenizer.json"))
      for (const char* file : {"vocab.json", "merges.txt"})
        if (!fs::is_regular_file(root / t / file))
          throw InputError(where + ": missing " + t + "/" + file + " (and no " + t + "/tokenizer.json)");
    s->tokenizers[t] = (root / t).string();
  }
  for (const std::string& c : s->weight_components) s->weights[c] = resolve_component_weights(root, where, c, variant);
  ModelFiles m;
  m.state_ = s;
  return m;
}

bool ModelFiles::is_single_file() const { return state_->single; }
const std::string& ModelFiles::path() const { return state_->path; }
const std::string& ModelFiles::family() const { return state_->family; }

bool ModelFiles::has(const std::string& component) const {
  const auto& list = state_->config_components;
  return component == "model_index" || std::find(list.begin(), list.end(), component) != list.end();
}

nlohmann::json ModelFiles::config(const std::string& component) const {
  if (component == "model_index") {
    if (!state_->single) return state_->model_index;
    json index = sd_config_has(state_->row, "model_index") ? sd_config(state_->row, "model_index") : json::object();
    index["_class_name"] = state_->row == "sdxl"           ? "StableDiffusionXLPipeline"
                           : state_->row == "sdxl-refiner" ? "StableDiffusionXLImg2ImgPipeline"
                                                           : "StableDiffusionPipeline";
    return index;
  }
  if (!has(component)) throw Error("ModelFiles::config: model " + state_->path + " has no component '" + component + "'");
  if (!state_->single) return state_->configs.at(component);
  json c = sd_config(state_->row, component);  // the family's row (checkpoint_family_row)
  if (component == "unet") c["in_channels"] = state_->unet_in_channels;
  return c;
}

std::shared_ptr<WeightSource> ModelFiles::weights(const std::string& component) const {
  const State& s = *state_;
  if (std::find(s.weight_components.begin(), s.weight_components.end(), component) == s.weight_components.end())
    throw Error("ModelFiles::weights: model " + s.path + " has no weights for '" + component + "'");

  if (s.single) {
    auto src = std::make_shared<SafetensorsWeightSource>(s.path + " (" + component + ")");
    const SafetensorsFile& f = *s.checkpoint;
    // A text tower's layers beyond its config's (SD 2.x ships OpenCLIP ViT-H's 24; it conditions on
    // the 23rd, the config's last) are dropped, as diffusers' conversion drops them.
    int text_layers = std::numeric_limits<int>::max();
    if (component == "text_encoder" || component == kSecondTextEncoder)
      text_layers = sd_config(s.row, component).value("num_hidden_layers", text_layers);
    auto add_key = [&](const std::string& key, const Shape* shape) {
      auto d = ckpt::ldm_to_diffusers(key, s.layout);
      if (!d || component != ckpt::component_name(d->component)) return;
      if (d->text_layer >= text_layers) return;
      if (d->split_qkv) {
        const std::string marker = "{q,k,v}";
        const size_t at = d->name.find(marker);
        const char* parts[] = {"q", "k", "v"};
        for (int i = 0; i < 3; ++i)
          src->add_slice(d->name.substr(0, at) + parts[i] + d->name.substr(at + marker.size()), s.checkpoint, key, i, 3);
        return;
      }
      if (d->transpose) return src->add_transposed(d->name, s.checkpoint, key);
      Shape reshaped;
      if (d->squeeze_to_linear && shape) reshaped = squeezed_linear(*shape);
      src->add(d->name, s.checkpoint, key, reshaped);
    };
    for (const auto& kv : f.entries()) add_key(kv.first, &kv.second.shape);
    for (const auto& kv : f.unsupported()) add_key(kv.first, nullptr);
    if (src->names().empty()) {
      const char* prefix = component == "unet"                ? "model.diffusion_model.*"
                           : component == "vae"               ? "first_stage_model.*"
                           : component == kSecondTextEncoder  ? (s.row == "sdxl" ? "conditioner.embedders.1.model.*"
                                                                                        : "conditioner.embedders.0.model.*")
                           : s.row == "sdxl"                  ? "conditioner.embedders.0.transformer.*"
                           : s.row == "sd21"                  ? "cond_stage_model.model.*"
                                                              : "cond_stage_model.transformer.*";
      throw InputError(s.path + ": this checkpoint has no " + component + " weights (" + prefix + ")");
    }
    return src;
  }

  const ComponentWeights& w = s.weights.at(component);
  std::string desc = s.path + "/" + component + "/" +
                     fs::path(w.index.empty() ? w.files[0] : w.index).filename().string();
  auto src = std::make_shared<SafetensorsWeightSource>(desc);
  auto add_one = [&](const std::string& name, const std::shared_ptr<const SafetensorsFile>& f) {
    if (component == "unet") return src->add(name, f, name);
    if (is_text_encoder(component)) return src->add(ckpt::canonical_text_encoder_name(name), f, name);
    // The VAE may use diffusers' legacy attention names and 1×1-conv shapes: present the current.
    std::string modern = ckpt::modern_vae_attention_name(name);
    Shape reshaped;
    auto e = f->entries().find(name);
    if (e != f->entries().end() && ckpt::is_vae_attention_projection(modern)) reshaped = squeezed_linear(e->second.shape);
    src->add(modern, f, name, reshaped);
  };
  if (w.index.empty()) {
    auto f = s.file(w.files[0]);
    for (const auto& kv : f->entries()) add_one(kv.first, f);
    for (const auto& kv : f->unsupported()) add_one(kv.first, f);
  } else {
    for (const auto& [name, shard] : w.weight_map) {
      auto f = s.file(shard);
      if (!f->contains(name) && !f->unsupported().count(name))
        throw InputError(w.index + ": weight_map puts '" + name + "' in " + fs::path(shard).filename().string() +
                         ", which does not hold it");
      add_one(name, f);
    }
  }
  return src;
}

std::string ModelFiles::tokenizer_dir(const std::string& tokenizer) const {
  if (state_->single) return "";
  auto it = state_->tokenizers.find(tokenizer);
  if (it == state_->tokenizers.end()) throw Error("model " + state_->path + " has no " + tokenizer + "/");
  return it->second;
}

std::vector<std::string> ModelFiles::weight_files() const {
  if (state_->single) return {state_->path};
  std::vector<std::string> out;
  for (const std::string& c : state_->weight_components)
    for (const auto& f : state_->weights.at(c).files) out.push_back(f);
  return out;
}

std::string ModelFiles::describe() const {
  const State& s = *state_;
  if (s.single) {
    std::string d = "single-file " + s.family + " checkpoint " + s.path;
    if (s.unet_in_channels != 4) d += " (UNet in_channels " + std::to_string(s.unet_in_channels) + ")";
    return d;
  }
  std::string d = "diffusers folder " + s.path + " (";
  bool first = true;
  for (const std::string& c : s.weight_components) {
    const ComponentWeights& w = s.weights.at(c);
    d += std::string(first ? "" : ", ") + c + ": ";
    if (w.index.empty())
      d += fs::path(w.files[0]).filename().string();
    else
      d += fs::path(w.index).filename().string() + " (" + std::to_string(w.files.size()) + " shards)";
    first = false;
  }
  return d + ")";
}

}  // namespace sdmpi
