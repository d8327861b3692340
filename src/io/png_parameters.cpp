// a1111_parameters: the AUTOMATIC1111 "infotext" of one image (format in include/sdmpi/png.h).
//
// A1111 builds it as "<prompt>\nNegative prompt: <neg>\n" followed by "Key: value" pairs joined
// with ", ", in a fixed key order, skipping absent values, quoting a value as JSON when it holds
// ',', ':' or '\n', and stripping whitespace from both ends of the whole text. Tools parse it
// back with a regex over those pairs, so the order, spelling and quoting matter.
#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "sdmpi/png.h"
#include "sdmpi/samplers.h"
#include "sdmpi/utf8.h"

namespace sdmpi {

namespace {

// A1111's quoting of one value.
std::string quote(const std::string& value) {
  if (value.find_first_of(",:\n") == std::string::npos) return value;
  return nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Python's float repr of the value as A1111 holds it: the shortest round-trip decimal, with ".0"
// for whole numbers.
std::string python_float(float v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // 'n': nan/inf stay as they are
  return s;
}

// Python's str.strip(): whitespace off both ends. Invalid UTF-8 is left as it is (the PNG writer
// rejects it with a clear message).
std::string python_strip(const std::string& s) {
  size_t begin = s.size(), end = 0;  // byte range of the first/last non-space code points
  size_t pos = 0;
  while (pos < s.size()) {
    const Utf8CodePoint c = decode_utf8_at(s, pos);
    const size_t len = c.length > 0 ? c.length : 1;
    if (c.length == 0 || !is_python_space(c.code_point)) {
      if (begin == s.size()) begin = pos;
      end = pos + len;
    }
    pos += len;
  }
  return begin >= end ? std::string() : s.substr(begin, end - begin);
}

// A LoRA's name as A1111 shows it: the file name without folder and extension.
std::string lora_name(const std::string& path) { return std::filesystem::path(path).stem().string(); }

}  // namespace

std::string a1111_sampler_name(const std::string& sampler) {
  const SamplerInfo* info = find_sampler(sampler);
  return info ? info->a1111_name : sampler;
}

std::string a1111_parameters(const GenerationParams& params, const std::string& model_name,
                             const std::string& model_hash, const std::string& version,
                             const std::string& model_family, const std::string& refiner) {
  std::vector<std::pair<std::string, std::string>> fields;
  fields.emplace_back("Steps", std::to_string(params.steps));
  fields.emplace_back("Sampler", a1111_sampler_name(params.sampler));
  fields.emplace_back("Schedule type", params.schedule == "karras" ? "Karras"
                                       : params.schedule == "default" || params.schedule.empty() ? "Automatic"
                                                                                                 : params.schedule);
  fields.emplace_back("CFG scale", python_float(params.guidance));
  fields.emplace_back("Seed", std::to_string(params.seed));
  fields.emplace_back("Size", std::to_string(params.width) + "x" + std::to_string(params.height));
  if (!model_hash.empty()) fields.emplace_back("Model hash", model_hash.substr(0, 10));
  if (!model_name.empty()) fields.emplace_back("Model", model_name);
  if (params.img2img()) {
    fields.emplace_back("Denoising strength", python_float(params.strength));
    if (!params.init_image_sha256.empty()) fields.emplace_back("Init image hash", params.init_image_sha256);
  }
  if (params.clip_skip >= 1) fields.emplace_back("Clip skip", std::to_string(params.clip_skip + 1));
  fields.emplace_back("RNG", "CPU");
  if (params.sampler == "ddim" && params.eta != 0.0f) fields.emplace_back("Eta DDIM", python_float(params.eta));
  if (params.guidance_rescale > 0.0f) fields.emplace_back("CFG Rescale phi", python_float(params.guidance_rescale));
  if (params.prompt_weighting != "none") fields.emplace_back("Prompt weighting", params.prompt_weighting);
  if (!params.loras.empty()) {  // A1111's "name: first 12 digits of its LoRA hash", comma-separated
    std::string hashes;
    for (const ItemLora& l : params.loras)
      hashes += (hashes.empty() ? "" : ", ") + lora_name(l.path) + ": " + l.sha256.substr(0, 12);
    fields.emplace_back("Lora hashes", hashes);
  }
  // SDXL micro-conditioning, where it differs from the defaults (sizes W x H, crop TOP x LEFT).
  if (params.original_width || params.original_height)
    fields.emplace_back("SDXL original size", std::to_string(params.original_width ? params.original_width : params.width) +
                                                  "x" + std::to_string(params.original_height ? params.original_height : params.height));
  if (params.crop_top || params.crop_left)
    fields.emplace_back("SDXL crop top-left", std::to_string(params.crop_top) + "x" + std::to_string(params.crop_left));
  if (params.target_width || params.target_height)
    fields.emplace_back("SDXL target size", std::to_string(params.target_width ? params.target_width : params.width) + "x" +
                                                std::to_string(params.target_height ? params.target_height : params.height));
  if (params.refiner_start > 0.0f) {
    if (!refiner.empty()) fields.emplace_back("Refiner", refiner);
    fields.emplace_back("Refiner switch at", python_float(params.refiner_start));
  }
  if (params.refiner_start > 0.0f || model_family == "SDXL refiner") {
    fields.emplace_back("Aesthetic score", python_float(params.aesthetic_score));
    fields.emplace_back("Negative aesthetic score", python_float(params.negative_aesthetic_score));
  }
  if (!model_family.empty()) fields.emplace_back("Model family", model_family);
  if (!version.empty()) fields.emplace_back("Version", version);

  std::string text = params.prompt;
  // The LoRAs as A1111 writes them, tags in the prompt (which the job's prompt no longer holds).
  for (const ItemLora& l : params.loras) text += " <lora:" + lora_name(l.path) + ":" + python_float(l.scale) + ">";
  if (!params.negative_prompt.empty()) text += "\nNegative prompt: " + params.negative_prompt;
  text += '\n';
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) text += ", ";
    // A1111 writes a bare key when key == value; no field of ours can do that.
    text += fields[i].first + ": " + quote(fields[i].second);
  }
  return python_strip(text);
}

}  // namespace sdmpi
