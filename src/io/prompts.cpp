// Prompt files (.txt, .jsonl) → prompt records → work items.
//
// Every error names the file and line; a job is either read whole or not at all, so nothing is
// generated from half a file.
#include "sdmpi/prompts.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/image_file.h"
#include "sdmpi/lora.h"
#include "sdmpi/utf8.h"

namespace sdmpi {
namespace {

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw InputError("prompt file " + path + " is a folder, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot open prompt file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InputError("cannot read prompt file " + path);
  return ss.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\f' && c != '\v') return false;
  return true;
}

// Splits text into lines (\n; a trailing \r is dropped) and calls fn(line, line_number).
template <class Fn>
void for_each_line(const std::string& text, Fn&& fn) {
  size_t start = 0;
  int64_t number = 1;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    fn(line, number);
    start = end + 1;
    ++number;
  }
}

void check_utf8(const std::string& text, const std::string& where) {
  size_t bad = 0;
  if (!valid_utf8(text, &bad))
    throw InputError(where + ": invalid UTF-8 at byte " + std::to_string(bad + 1) + " of the line");
}

const char* json_type(const nlohmann::json& v) { return v.type_name(); }

template <class T>
T json_int(const nlohmann::json& v, const std::string& where, const std::string& key, int64_t lo, int64_t hi) {
  if (!v.is_number_integer())
    throw InputError(where + ": \"" + key + "\" must be an integer, got " + json_type(v) + " " + v.dump());
  int64_t x;
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi)) throw InputError(where + ": \"" + key + "\" = " + v.dump() + " is out of range");
    x = static_cast<int64_t>(u);
  } else {
    x = v.get<int64_t>();
  }
  if (x < lo || x > hi)
    throw InputError(where + ": \"" + key + "\" = " + v.dump() + " is out of range [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return static_cast<T>(x);
}

float json_float(const nlohmann::json& v, const std::string& where, const std::string& key) {
  if (!v.is_number()) throw InputError(where + ": \"" + key + "\" must be a number, got " + json_type(v) + " " + v.dump());
  double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > 1e6) throw InputError(where + ": \"" + key + "\" = " + v.dump() + " is out of range");
  return static_cast<float>(d);
}

std::string json_string(const nlohmann::json& v, const std::string& where, const std::string& key) {
  if (!v.is_string()) throw InputError(where + ": \"" + key + "\" must be a string, got " + json_type(v) + " " + v.dump());
  return v.get<std::string>();
}

}  // namespace

std::vector<PromptRecord> parse_prompts_txt(const std::string& text, const std::string& origin) {
  std::vector<PromptRecord> out;
  for_each_line(text, [&](const std::string& line, int64_t number) {
    std::string where = origin + ":" + std::to_string(number);
    check_utf8(line, where);
    if (is_blank(line)) return;
    PromptRecord r;
    r.prompt = line;
    r.origin = where;
    out.push_back(std::move(r));
  });
  return out;
}

std::vector<PromptRecord> parse_prompts_jsonl(const std::string& text, const std::string& origin) {
  std::vector<PromptRecord> out;
  for_each_line(text, [&](const std::string& line, int64_t number) {
    std::string where = origin + ":" + std::to_string(number);
    check_utf8(line, where);
    if (is_blank(line)) return;
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      // e.byte is 1-based within the line.
      throw InputError(where + ": malformed JSON at column " + std::to_string(e.byte) + " (each line must be one JSON object)");
    } catch (const nlohmann::json::exception&) {
      // out_of_range: a number literal too large for a double (e.g. 1e999).
      throw InputError(where + ": malformed JSON: a number is out of range");
    }
    if (!obj.is_object()) throw InputError(where + ": expected a JSON object, got " + std::string(json_type(obj)));
    PromptRecord r;
    r.origin = where;
    bool has_prompt = false;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      const std::string& key = it.key();
      const auto& v = it.value();
      if (key == "prompt") {
        r.prompt = json_string(v, where, key);
        has_prompt = true;
      } else if (key == "negative_prompt") {
        r.negative_prompt = json_string(v, where, key);
      } else if (key == "seed") {
        if (!v.is_number_integer() || (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0))
          throw InputError(where + ": \"seed\" must be a non-negative integer, got " + v.dump());
        r.seed = v.get<uint64_t>();
      } else if (key == "steps") {
        r.steps = json_int<int>(v, where, key, 1, 1000);
      } else if (key == "width") {
        r.width = json_int<int>(v, where, key, 8, 16384);
      } else if (key == "height") {
        r.height = json_int<int>(v, where, key, 8, 16384);
      } else if (key == "clip_skip") {
        r.clip_skip = json_int<int>(v, where, key, 0, 64);
      } else if (key == "guidance") {
        r.guidance = json_float(v, where, key);
      } else if (key == "eta") {
        r.eta = json_float(v, where, key);
      } else if (key == "guidance_rescale") {
        r.guidance_rescale = json_float(v, where, key);
      } else if (key == "sampler") {
        r.sampler = json_string(v, where, key);
      } else if (key == "schedule") {
        r.schedule = json_string(v, where, key);
      } else if (key == "init_image") {
        r.init_image = json_string(v, where, key);
        if (r.init_image->empty()) throw InputError(where + ": \"init_image\" is empty");
      } else if (key == "prompt_weighting") {
        r.prompt_weighting = json_string(v, where, key);
        check_prompt_weighting(*r.prompt_weighting, where);
      } else if (key == "strength") {
        r.strength = json_float(v, where, key);
      } else if (key == "aesthetic_score" || key == "negative_aesthetic_score") {
        (key == "aesthetic_score" ? r.aesthetic_score : r.negative_aesthetic_score) = json_float(v, where, key);
      } else if (key == "lora") {  // [{"path": ..., "scale": 0.8}] or ["path:0.8"]
        if (!v.is_array()) throw InputError(where + ": \"lora\" must be a list, got " + v.dump());
        std::vector<ItemLora> loras;
        for (const auto& e : v) {
          if (e.is_string()) {
            const LoraSpec spec = parse_lora_spec(e.get<std::string>(), where + ": \"lora\"");
            loras.push_back({spec.path, spec.scale, ""});
          } else if (e.is_object() && e.contains("path")) {
            ItemLora l;
            for (auto f = e.begin(); f != e.end(); ++f) {
              if (f.key() == "path") l.path = json_string(f.value(), where, "lora path");
              else if (f.key() == "scale") l.scale = json_float(f.value(), where, "lora scale");
              else throw InputError(where + ": unknown key \"" + f.key() + "\" in a \"lora\" entry (known: path, scale)");
            }
            if (l.path.empty()) throw InputError(where + ": a \"lora\" entry has an empty path");
            if (!std::isfinite(l.scale)) throw InputError(where + ": a \"lora\" scale is not finite");
            loras.push_back(l);
          } else {
            throw InputError(where + ": each \"lora\" entry must be \"path[:scale]\" or {\"path\": ..., \"scale\": ...}, got " + e.dump());
          }
        }
        r.loras = std::move(loras);
      } else if (key == "original_width" || key == "original_height" || key == "target_width" ||
                 key == "target_height") {  // SDXL micro-conditioning, in pixels
        std::optional<int>& field = key == "original_width"    ? r.original_width
                                    : key == "original_height" ? r.original_height
                                    : key == "target_width"    ? r.target_width
                                                               : r.target_height;
        field = json_int<int>(v, where, key, 1, 16384);
      } else if (key == "crop_top" || key == "crop_left") {
        (key == "crop_top" ? r.crop_top : r.crop_left) = json_int<int>(v, where, key, 0, 16384);
      } else {
        throw InputError(where + ": unknown key \"" + key +
                         "\" (known: prompt, negative_prompt, seed, steps, guidance, width, height, sampler, "
                         "schedule, eta, clip_skip, guidance_rescale, init_image, strength, original_width, original_height, "
                         "crop_top, crop_left, target_width, target_height, prompt_weighting, lora, aesthetic_score, "
                         "negative_aesthetic_score)");
      }
    }
    if (!has_prompt) throw InputError(where + ": missing \"prompt\"");
    out.push_back(std::move(r));
  });
  return out;
}

std::vector<PromptRecord> read_prompt_file(const std::string& path) {
  std::string text = read_whole_file(path);
  std::vector<PromptRecord> prompts =
      ends_with(path, ".jsonl") ? parse_prompts_jsonl(text, path) : parse_prompts_txt(text, path);
  if (prompts.empty()) throw InputError("prompt file " + path + " holds no prompts");
  // Init images are named relative to the prompt file, so a job folder can move as a whole.
  const std::filesystem::path folder = std::filesystem::path(path).parent_path();
  for (PromptRecord& r : prompts) {
    if (r.init_image && std::filesystem::path(*r.init_image).is_relative())
      r.init_image = (folder / *r.init_image).string();
    if (r.loras)  // LoRA files too
      for (ItemLora& l : *r.loras)
        if (std::filesystem::path(l.path).is_relative()) l.path = (folder / l.path).string();
  }
  return prompts;
}

void validate_params(const GenerationParams& p, const std::string& origin) {
  if (p.width <= 0 || p.width % 8 != 0)
    throw InputError(origin + ": width " + std::to_string(p.width) + " is not a positive multiple of 8");
  if (p.height <= 0 || p.height % 8 != 0)
    throw InputError(origin + ": height " + std::to_string(p.height) + " is not a positive multiple of 8");
  if (p.steps < 1 || p.steps > 1000)
    throw InputError(origin + ": steps " + std::to_string(p.steps) + " is outside [1, 1000]");
  if (!std::isfinite(p.guidance)) throw InputError(origin + ": guidance is not a finite number");
  if (!std::isfinite(p.eta) || p.eta < 0) throw InputError(origin + ": eta must be a finite number >= 0");
  if (p.clip_skip < 0) throw InputError(origin + ": clip_skip must be >= 0");
  if (!(p.guidance_rescale >= 0.0f && p.guidance_rescale <= 1.0f))
    throw InputError(origin + ": guidance_rescale must lie in [0, 1]");
  check_prompt_weighting(p.prompt_weighting, origin);
  if (!(p.strength > 0.0f && p.strength <= 1.0f)) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", static_cast<double>(p.strength));
    throw InputError(origin + ": strength " + value + " is outside (0, 1]");
  }
  size_t bad = 0;
  if (!valid_utf8(p.prompt, &bad))
    throw InputError(origin + ": invalid UTF-8 in the prompt at byte " + std::to_string(bad + 1));
  if (!valid_utf8(p.negative_prompt, &bad))
    throw InputError(origin + ": invalid UTF-8 in the negative prompt at byte " + std::to_string(bad + 1));
}

std::vector<WorkItem> expand_job(const std::vector<PromptRecord>& prompts, int images_per_prompt,
                                 uint64_t base_seed, const GenerationParams& defaults) {
  if (images_per_prompt < 1) throw InputError("--images-per-prompt must be >= 1");
  std::vector<WorkItem> items;
  items.reserve(prompts.size() * static_cast<size_t>(images_per_prompt));
  for (size_t p = 0; p < prompts.size(); ++p) {
    const PromptRecord& r = prompts[p];
    GenerationParams params = defaults;
    params.prompt = r.prompt;
    if (r.negative_prompt) params.negative_prompt = *r.negative_prompt;
    if (r.steps) params.steps = *r.steps;
    if (r.width) params.width = *r.width;
    if (r.height) params.height = *r.height;
    if (r.clip_skip) params.clip_skip = *r.clip_skip;
    if (r.guidance) params.guidance = *r.guidance;
    if (r.eta) params.eta = *r.eta;
    if (r.guidance_rescale) params.guidance_rescale = *r.guidance_rescale;
    if (r.sampler) params.sampler = *r.sampler;
    if (r.schedule) params.schedule = *r.schedule;
    if (r.init_image) params.init_image = *r.init_image;
    if (r.strength) params.strength = *r.strength;
    if (r.aesthetic_score) params.aesthetic_score = *r.aesthetic_score;
    if (r.negative_aesthetic_score) params.negative_aesthetic_score = *r.negative_aesthetic_score;
    if (r.loras) params.loras = *r.loras;
    if (r.prompt_weighting) params.prompt_weighting = *r.prompt_weighting;
    if (r.original_width) params.original_width = *r.original_width;
    if (r.original_height) params.original_height = *r.original_height;
    if (r.crop_top) params.crop_top = *r.crop_top;
    if (r.crop_left) params.crop_left = *r.crop_left;
    if (r.target_width) params.target_width = *r.target_width;
    if (r.target_height) params.target_height = *r.target_height;
    validate_params(params, r.origin);
    for (int k = 0; k < images_per_prompt; ++k) {
      WorkItem item;
      item.prompt_index = static_cast<int64_t>(p);
      item.sample = k;
      item.index = static_cast<int64_t>(p) * images_per_prompt + k;
      item.params = params;
      item.params.seed = r.seed ? *r.seed + static_cast<uint64_t>(k) : base_seed + static_cast<uint64_t>(item.index);
      items.push_back(std::move(item));
    }
  }
  return items;
}

void resolve_init_images(std::vector<WorkItem>& items, const std::vector<PromptRecord>& prompts, int requested_width,
                         int requested_height) {
  struct Known {
    int width = 0, height = 0;
    std::string sha256;
  };
  std::map<std::string, Known> files;  // absolute path → what it holds
  for (WorkItem& it : items) {
    GenerationParams& p = it.params;
    if (p.init_image.empty()) continue;
    const PromptRecord& r = prompts.at(static_cast<size_t>(it.prompt_index));
    std::error_code ec;
    const std::filesystem::path absolute = std::filesystem::absolute(p.init_image, ec);
    if (!ec) p.init_image = absolute.lexically_normal().string();
    auto known = files.find(p.init_image);
    if (known == files.end()) {
      if (std::filesystem::is_directory(p.init_image, ec))
        throw InputError(r.origin + ": init image " + p.init_image + " is a folder, not an image file");
      errno = 0;
      std::ifstream in(p.init_image, std::ios::binary);
      if (!in)
        throw InputError(r.origin + ": init image " + p.init_image + " cannot be opened (" +
                         (errno ? std::strerror(errno) : "unknown reason") + ")");
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      DecodedImage image;
      try {
        image = decode_image(std::vector<uint8_t>(bytes.begin(), bytes.end()), p.init_image);
      } catch (const InputError& e) {
        throw InputError(r.origin + ": init image " + e.what());
      }
      if (image.width % 8 || image.height % 8)
        throw InputError(r.origin + ": init image " + p.init_image + " is " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) +
                         "; img2img needs sides that are multiples of 8 (diffusers would resize it: crop or resize it first)");
      known = files.emplace(p.init_image, Known{image.width, image.height, sha256_hex(bytes)}).first;
    }
    const Known& k = known->second;
    const int want_w = r.width ? *r.width : requested_width, want_h = r.height ? *r.height : requested_height;
    if ((want_w && want_w != k.width) || (want_h && want_h != k.height))
      throw InputError(r.origin + ": init image " + p.init_image + " is " + std::to_string(k.width) + "x" +
                       std::to_string(k.height) + " but the item asks for " +
                       (want_w ? std::to_string(want_w) : std::string("its")) + "x" +
                       (want_h ? std::to_string(want_h) : std::string("its")) +
                       " (img2img keeps the init image's size; drop the width/height or resize the image)");
    p.width = k.width;
    p.height = k.height;
    p.init_image_sha256 = k.sha256;
    try {
      img2img_first_call(p.steps, p.strength);
    } catch (const InputError& e) {
      throw InputError(r.origin + ": " + e.what());
    }
  }
}

}  // namespace sdmpi
