// LoRA files: one table of key forms, resolution against the model's own weight names, the
// float32 delta, and a WeightSource that answers merged copies (include/sdmpi/lora.h).
#include "sdmpi/lora.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/checkpoint_keys.h"
#include "sdmpi/dtype.h"
#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/tensor.h"

namespace sdmpi {
namespace {

// Where a key's module lives and how its path is spelled. Longer prefixes that share a start with
// shorter ones need no ordering: "lora_te_" does not start "lora_te1_", "text_encoder." does not
// start "text_encoder_2.".
struct PrefixRule {
  const char* prefix;
  const char* component;
  bool underscored;  // kohya: the module path with '_' for '.'
};
constexpr PrefixRule kPrefixes[] = {
    {"lora_unet_", "unet", true},
    {"lora_te_", "text_encoder", true},
    {"lora_te1_", "text_encoder", true},
    {"lora_te2_", "text_encoder_2", true},
    {"unet.", "unet", false},
    {"text_encoder.", "text_encoder", false},
    {"text_encoder_2.", "text_encoder_2", false},
};

enum class Part { Down, Up, Alpha };
struct SuffixRule {
  const char* suffix;
  Part part;
};
constexpr SuffixRule kSuffixes[] = {
    {".lora_down.weight", Part::Down},  // kohya
    {".lora_up.weight", Part::Up},
    {".lora_A.weight", Part::Down},  // PEFT
    {".lora_B.weight", Part::Up},
    {".lora.down.weight", Part::Down},  // diffusers before PEFT
    {".lora.up.weight", Part::Up},
    {".alpha", Part::Alpha},
};

// Keys of other adapter kinds (LyCORIS and PEFT variants) that are not a low-rank up @ down: each is
// refused by name rather than merged wrongly or listed as an unknown key. A key is of a kind when
// one of its '.'-separated parts is a marker.
struct OtherKind {
  const char* marker;
  const char* kind;
};
constexpr OtherKind kOtherKinds[] = {
    {"hada_w1_a", "LoHa (LyCORIS)"}, {"hada_w1_b", "LoHa (LyCORIS)"}, {"hada_w2_a", "LoHa (LyCORIS)"},
    {"hada_w2_b", "LoHa (LyCORIS)"}, {"hada_t1", "LoHa (LyCORIS)"},   {"hada_t2", "LoHa (LyCORIS)"},
    {"lokr_w1", "LoKr (LyCORIS)"},   {"lokr_w2", "LoKr (LyCORIS)"},   {"lokr_w1_a", "LoKr (LyCORIS)"},
    {"lokr_w1_b", "LoKr (LyCORIS)"}, {"lokr_w2_a", "LoKr (LyCORIS)"}, {"lokr_w2_b", "LoKr (LyCORIS)"},
    {"lokr_t2", "LoKr (LyCORIS)"},   {"dora_scale", "DoRA"},          {"lora_magnitude_vector", "DoRA (PEFT)"},
    {"on_input", "IA3 (LyCORIS)"},   {"ia3_l", "IA3 (PEFT)"},         {"oft_blocks", "OFT (LyCORIS)"},
    {"oft_diag", "OFT (LyCORIS)"},   {"a1", "GLoRA (LyCORIS)"},       {"b1", "GLoRA (LyCORIS)"},
    {"diff", "a full weight difference (LyCORIS)"}, {"diff_b", "a full weight difference (LyCORIS)"},
    {"w_norm", "a norm adapter (LyCORIS)"}, {"b_norm", "a norm adapter (LyCORIS)"},
};

const OtherKind* other_kind_of(const std::string& key) {
  size_t start = key.find('.');
  while (start != std::string::npos) {
    const size_t end = key.find('.', start + 1);
    const std::string part = key.substr(start + 1, end == std::string::npos ? std::string::npos : end - start - 1);
    for (const OtherKind& k : kOtherKinds)
      if (part == k.marker) return &k;
    start = end;
  }
  return nullptr;
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
bool starts_with(const std::string& s, const std::string& head) { return s.rfind(head, 0) == 0; }

bool is_text_component(const std::string& c) { return c == "text_encoder" || c == "text_encoder_2"; }

std::string underscored(std::string s) {
  for (char& ch : s)
    if (ch == '.') ch = '_';
  return s;
}

std::string shape_text(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// A component's weight names (".weight" stripped), dotted and underscored, in the canonical text
// encoder form; underscored names two weights share are left out (an ambiguous kohya key then
// names itself as unknown rather than landing on either).
struct ModuleIndex {
  const WeightSource* source = nullptr;
  std::map<std::string, std::string> by_dotted;      // module → weight name in the source
  std::map<std::string, std::string> by_underscored;
  ckpt::LdmLayout layout;  // a UNet's, for kohya's LDM-named modules (SDXL LoRAs)
};

ModuleIndex index_component(const std::string& component, const WeightSource* source) {
  ModuleIndex index;
  index.source = source;
  std::set<std::string> clashes;
  for (const std::string& name : source->names()) {
    if (!ends_with(name, ".weight")) continue;
    std::string canonical = is_text_component(component) ? ckpt::canonical_text_encoder_name(name) : name;
    std::string module = canonical.substr(0, canonical.size() - 7);
    index.by_dotted[module] = name;
    std::string u = underscored(module);
    if (!index.by_underscored.emplace(u, name).second) clashes.insert(u);
  }
  for (const std::string& u : clashes) index.by_underscored.erase(u);
  // ResNets per down block, as the LDM input-block numbering counts them.
  int resnets = 0;
  const std::string first_block = "down_blocks.0.resnets.";
  for (const auto& [module, name] : index.by_dotted)
    if (starts_with(module, first_block)) resnets = std::max(resnets, std::atoi(module.c_str() + first_block.size()) + 1);
  if (resnets > 0) index.layout.unet_layers_per_block = resnets;
  return index;
}

struct PendingModule {
  std::string component, stem;
  std::string down_key, up_key, alpha_key;
};

std::string list_lines(const std::vector<std::string>& items) {
  std::string out;
  size_t shown = 0;
  for (const std::string& s : items) {
    if (shown == 12) {
      out += "; … and " + std::to_string(items.size() - shown) + " more";
      break;
    }
    out += (shown ? "; " : "") + s;
    ++shown;
  }
  return out;
}

}  // namespace

LoraSpec parse_lora_spec(const std::string& text, const std::string& where) {
  LoraSpec spec{text, 1.0f};
  size_t colon = text.rfind(':');
  if (colon != std::string::npos) {
    std::string tail = text.substr(colon + 1);
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(tail.c_str(), &end);
    bool numeric = !tail.empty() && end == tail.c_str() + tail.size();
    if (numeric) {
      if (!std::isfinite(v) || std::fabs(v) > 100.0)
        throw InputError(where + ": LoRA scale '" + tail + "' in '" + text + "' is not a finite number in [-100, 100]");
      spec.path = text.substr(0, colon);
      spec.scale = static_cast<float>(v);
    }
  }
  if (spec.path.empty()) throw InputError(where + ": LoRA '" + text + "' names no file");
  return spec;
}

std::vector<std::pair<std::string, float>> extract_lora_tags(std::string& prompt, const std::string& where) {
  std::vector<std::pair<std::string, float>> tags;
  std::string kept;
  size_t pos = 0;
  while (pos < prompt.size()) {
    const size_t open = prompt.find("<lora:", pos);
    const size_t close = open == std::string::npos ? std::string::npos : prompt.find('>', open);
    if (close == std::string::npos) {
      kept += prompt.substr(pos);
      break;
    }
    kept += prompt.substr(pos, open - pos);
    const std::string body = prompt.substr(open + 6, close - open - 6);  // NAME[:SCALE[:...]]
    const size_t colon = body.find(':');
    const std::string name = body.substr(0, colon);
    float scale = 1.0f;
    if (colon != std::string::npos) {
      const std::string text = body.substr(colon + 1, body.find(':', colon + 1) - colon - 1);
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
        throw InputError(where + ": <lora:" + body + ">: scale '" + text + "' is not a number");
      scale = static_cast<float>(v);
    }
    if (name.empty()) throw InputError(where + ": <lora:" + body + "> names no LoRA");
    tags.emplace_back(name, scale);
    pos = close + 1;
  }
  prompt = kept;
  return tags;
}

std::string lora_file_hash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("LoRA " + path + ": cannot be opened");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t header = 0;
  if (bytes.size() < 8) throw InputError("LoRA " + path + ": not a safetensors file (" + std::to_string(bytes.size()) + " bytes)");
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  if (header > bytes.size() - 8) throw InputError("LoRA " + path + ": its header length runs past the end of the file");
  return sha256_hex(bytes.substr(8 + header));
}

namespace {

// The decimal a user wrote for a float32 scale (its shortest form that reads back the same), so the
// archive shows 0.8 rather than 0.800000011920929.
double written_decimal(float v) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, static_cast<double>(v));
    if (std::strtof(text, nullptr) == v) break;
  }
  return std::strtod(text, nullptr);
}

}  // namespace

std::string loras_to_archive_text(const std::vector<ItemLora>& loras) {
  if (loras.empty()) return "";
  nlohmann::json list = nlohmann::json::array();
  for (const ItemLora& l : loras)
    list.push_back({{"name", std::filesystem::path(l.path).stem().string()}, {"sha256", l.sha256},
                    {"scale", written_decimal(l.scale)}});
  return list.dump();
}

std::vector<ItemLora> loras_from_archive_text(const std::string& text, const std::string& where) {
  std::vector<ItemLora> loras;
  if (text.empty()) return loras;
  try {
    for (const auto& e : nlohmann::json::parse(text))
      loras.push_back({e.at("name").get<std::string>(), e.at("scale").get<float>(), e.at("sha256").get<std::string>()});
  } catch (const nlohmann::json::exception&) {
    throw InputError(where + ": not a list of {name, sha256, scale}: " + text.substr(0, 80));
  }
  return loras;
}

LoraFile read_lora(const std::string& path, const std::map<std::string, const WeightSource*>& components) {
  return read_lora(*SafetensorsFile::open(path), components);
}

LoraFile read_lora(const SafetensorsFile& file, const std::map<std::string, const WeightSource*>& components) {
  LoraFile out;
  out.path = file.path();
  out.name = std::filesystem::path(file.path()).stem().string();

  std::vector<std::string> unknown, problems;
  std::map<std::string, PendingModule> modules;  // by key stem
  auto all_keys = file.entries();
  std::vector<std::string> keys;
  for (const auto& [k, e] : all_keys) keys.push_back(k);
  for (const auto& [k, dtype] : file.unsupported()) keys.push_back(k);
  std::vector<std::string> other_kind_keys;
  const OtherKind* other = nullptr;
  for (const std::string& key : keys)
    if (const OtherKind* k = other_kind_of(key)) {
      other = other ? other : k;
      other_kind_keys.push_back(key);
    }
  if (other)
    throw InputError("LoRA " + file.path() + ": key " + other_kind_keys.front() + " is " + other->kind +
                     ", not a plain LoRA (" + std::to_string(other_kind_keys.size()) +
                     " such key(s)); sd_mpi merges plain LoRA only: lora_down/lora_up or lora_A/lora_B, with alpha");
  for (const std::string& key : keys) {
    const SuffixRule* suffix = nullptr;
    for (const SuffixRule& r : kSuffixes)
      if (ends_with(key, r.suffix)) suffix = &r;
    const PrefixRule* prefix = nullptr;
    for (const PrefixRule& r : kPrefixes)
      if (starts_with(key, r.prefix)) prefix = &r;
    if (!suffix || !prefix) {
      unknown.push_back(key);
      continue;
    }
    std::string stem = key.substr(0, key.size() - std::string(suffix->suffix).size());
    PendingModule& m = modules[stem];
    m.stem = stem;
    m.component = prefix->component;
    (suffix->part == Part::Down ? m.down_key : suffix->part == Part::Up ? m.up_key : m.alpha_key) = key;
  }

  std::map<std::string, ModuleIndex> indexes;
  for (const auto& [component, source] : components)
    if (source) indexes[component] = index_component(component, source);

  for (const auto& [stem, m] : modules) {
    if (m.down_key.empty() || m.up_key.empty()) {
      problems.push_back(stem + ": has no " + std::string(m.down_key.empty() ? "down (lora_down / lora_A)" : "up (lora_up / lora_B)") + " weight");
      continue;
    }
    auto idx = indexes.find(m.component);
    if (idx == indexes.end()) {
      problems.push_back(stem + ": the model has no " + m.component);
      continue;
    }
    // The module path after the prefix, in the form the table says.
    const PrefixRule* prefix = nullptr;
    for (const PrefixRule& r : kPrefixes)
      if (starts_with(stem, r.prefix)) prefix = &r;
    std::string path = stem.substr(std::string(prefix->prefix).size());
    const std::map<std::string, std::string>& lookup = prefix->underscored ? idx->second.by_underscored : idx->second.by_dotted;
    if (!prefix->underscored && is_text_component(m.component)) {
      const std::string canonical = ckpt::canonical_text_encoder_name(path + ".weight");
      path = canonical.substr(0, canonical.size() - 7);
    }
    auto hit = lookup.find(path);
    if (hit == lookup.end() && prefix->underscored && m.component == "unet")
      if (const auto ldm = ckpt::ldm_unet_module_underscored(path, idx->second.layout)) hit = lookup.find(*ldm);
    if (hit == lookup.end()) {
      unknown.push_back(stem + " (no " + m.component + " weight " + path + ")");
      continue;
    }
    const WeightView w = idx->second.source->get(hit->second);
    const SafetensorsFile::Entry& down = file.entries().at(m.down_key);
    const SafetensorsFile::Entry& up = file.entries().at(m.up_key);
    // Target [out, in, (kh, kw)]; down [r, in, (kh, kw)]; up [out, r, (1, 1)].
    const Shape& ws = w.shape;
    int64_t r = down.shape.empty() ? 0 : down.shape[0];
    int64_t w_inner = 1;
    for (size_t i = 1; i < ws.size(); ++i) w_inner *= ws[i];
    int64_t down_inner = 1;
    for (size_t i = 1; i < down.shape.size(); ++i) down_inner *= down.shape[i];
    int64_t up_inner = 1;
    for (size_t i = 2; i < up.shape.size(); ++i) up_inner *= up.shape[i];
    bool fits = ws.size() >= 2 && down.shape.size() >= 2 && up.shape.size() >= 2 && r > 0 &&
                up.shape[0] == ws[0] && up.shape[1] == r && up_inner == 1 && down.shape[1] == ws[1] &&
                down_inner == w_inner;
    if (!fits) {
      problems.push_back(stem + ": down " + shape_text(down.shape) + " and up " + shape_text(up.shape) +
                         " do not fit " + m.component + " " + hit->second + " " + shape_text(ws));
      continue;
    }
    LoraLayer layer;
    layer.component = m.component;
    layer.target = hit->second;
    layer.module = stem;
    layer.down_shape = down.shape;
    layer.up_shape = up.shape;
    layer.down = file.to_f32(m.down_key);
    layer.up = file.to_f32(m.up_key);
    layer.alpha = static_cast<float>(r);
    if (!m.alpha_key.empty()) {
      std::vector<float> a = file.to_f32(m.alpha_key);
      if (a.size() != 1 || !std::isfinite(a[0])) {
        problems.push_back(m.alpha_key + ": alpha must be one finite number");
        continue;
      }
      layer.alpha = a[0];
    }
    out.layers.push_back(std::move(layer));
  }
  if (!unknown.empty() || !problems.empty()) {
    std::string msg = "LoRA " + file.path() + ":";
    if (!unknown.empty())
      msg += " " + std::to_string(unknown.size()) + " key(s) map to no weight of the model: " + list_lines(unknown) + ".";
    if (!problems.empty()) msg += " " + std::to_string(problems.size()) + " module(s) unusable: " + list_lines(problems) + ".";
    throw InputError(msg);
  }
  if (out.layers.empty()) throw InputError("LoRA " + file.path() + ": holds no LoRA weights");
  return out;
}

std::vector<float> lora_delta(const LoraLayer& layer, const Shape& target_shape, float scale) {
  const int64_t out_rows = target_shape.at(0);
  const int64_t r = layer.rank();
  int64_t inner = 1;
  for (size_t i = 1; i < target_shape.size(); ++i) inner *= target_shape[i];
  SDMPI_CHECK(static_cast<int64_t>(layer.up.size()) == out_rows * r &&
                  static_cast<int64_t>(layer.down.size()) == r * inner,
              "lora_delta: " + layer.module + " does not fit " + shape_text(target_shape));
  // diffusers/PEFT: scaling = lora_alpha / r, times the fuse scale, a Python float; torch rounds
  // it to the tensor's float32 when multiplying.
  const float factor = static_cast<float>(static_cast<double>(layer.alpha) / static_cast<double>(r) * scale);
  std::vector<float> delta(static_cast<size_t>(out_rows * inner), 0.0f);
  for (int64_t o = 0; o < out_rows; ++o) {
    float* row = delta.data() + o * inner;
    for (int64_t k = 0; k < r; ++k) {
      const float u = layer.up[static_cast<size_t>(o * r + k)];
      const float* d = layer.down.data() + k * inner;
      for (int64_t i = 0; i < inner; ++i) row[i] += u * d[i];
    }
    for (int64_t i = 0; i < inner; ++i) row[i] *= factor;
  }
  return delta;
}

LoraMergedWeightSource::LoraMergedWeightSource(
    std::shared_ptr<const WeightSource> original, const std::string& component,
    const std::vector<std::pair<std::shared_ptr<const LoraFile>, float>>& loras)
    : original_(std::move(original)) {
  for (const auto& [file, scale] : loras) {
    std::ostringstream label;
    label << file->name << ":" << scale;
    lora_names_ += (lora_names_.empty() ? "" : ", ") + label.str();
    for (const LoraLayer& layer : file->layers) {
      if (layer.component != component) continue;
      auto it = merged_.find(layer.target);
      if (it == merged_.end()) {
        const WeightView w = original_->get(layer.target);
        Merged m;
        m.shape = w.shape;
        m.backend_layout = w.backend_layout;
        m.values = std::make_shared<std::vector<float>>(static_cast<size_t>(shape_numel(w.shape)));
        convert_to_f32(w.dtype, w.data, m.values->data(), m.values->size());
        it = merged_.emplace(layer.target, std::move(m)).first;
      }
      Merged& m = it->second;
      std::vector<float> delta = lora_delta(layer, m.shape, scale);
      std::vector<float>& v = *m.values;
      if (m.backend_layout && m.shape.size() == 4) {
        // Bytes already [out, kh, kw, in] (shared weights); the delta is [out, in, kh, kw].
        const int64_t O = m.shape[0], I = m.shape[1], H = m.shape[2], W = m.shape[3];
        for (int64_t o = 0; o < O; ++o)
          for (int64_t i = 0; i < I; ++i)
            for (int64_t y = 0; y < H; ++y)
              for (int64_t x = 0; x < W; ++x)
                v[static_cast<size_t>(((o * H + y) * W + x) * I + i)] += delta[static_cast<size_t>(((o * I + i) * H + y) * W + x)];
      } else {
        for (size_t i = 0; i < v.size(); ++i) v[i] += delta[i];
      }
    }
  }
}

WeightView LoraMergedWeightSource::get(const std::string& name) const {
  auto it = merged_.find(name);
  if (it == merged_.end()) return original_->get(name);
  WeightView view(name, DType::F32, it->second.shape, it->second.values->data());
  view.backend_layout = it->second.backend_layout;
  view.keep_alive = it->second.values;
  return view;
}

std::string LoraMergedWeightSource::describe() const {
  return original_->describe() + " with LoRA " + lora_names_;
}

}  // namespace sdmpi
