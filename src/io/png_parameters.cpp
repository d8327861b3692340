// a1111_parameters: the AUTOMATIC1111 "infotext" of one image (format in include/sdmpi/png.h).
//
// A1111 builds it as "<prompt>\nNegative prompt: <neg>\n" followed by "Key: value" pairs joined
// with ", ", in a fixed key order, skipping absent values, quoting a value as JSON when it holds
// ',', ':' or '\n', and stripping whitespace from both ends of the whole text. Tools parse it
// back with a regex over those pairs, so the order, spelling and quoting matter.
#include <utf8proc.h>

#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "sdmpi/png.h"

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

// Python's str.isspace() for one code point: general category Zs or bidi class WS, B or S.
bool python_space(utf8proc_int32_t cp) {
  const utf8proc_property_t* prop = utf8proc_get_property(cp);
  return prop->category == UTF8PROC_CATEGORY_ZS || prop->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         prop->bidi_class == UTF8PROC_BIDI_CLASS_B || prop->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

// Python's str.strip(): whitespace off both ends. Invalid UTF-8 is left as it is (the PNG writer
// rejects it with a clear message).
std::string python_strip(const std::string& s) {
  const auto* base = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  size_t begin = s.size(), end = 0;  // byte range of the first/last non-space code points
  size_t pos = 0;
  while (pos < s.size()) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t n = utf8proc_iterate(base + pos, static_cast<utf8proc_ssize_t>(s.size() - pos), &cp);
    const size_t len = n > 0 ? static_cast<size_t>(n) : 1;
    if (n <= 0 || !python_space(cp)) {
      if (begin == s.size()) begin = pos;
      end = pos + len;
    }
    pos += len;
  }
  return begin >= end ? std::string() : s.substr(begin, end - begin);
}

}  // namespace

std::string a1111_sampler_name(const std::string& sampler) {
  static const std::pair<const char*, const char*> names[] = {
      {"pndm", "PLMS"}, {"ddim", "DDIM"},         {"euler", "Euler"},
      {"euler_a", "Euler a"}, {"dpm++2m", "DPM++ 2M"}, {"lcm", "LCM"},
  };
  for (const auto& [ours, theirs] : names)
    if (sampler == ours) return theirs;
  return sampler;
}

std::string a1111_parameters(const GenerationParams& params, const std::string& model_name,
                             const std::string& model_hash, const std::string& version) {
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
  if (params.clip_skip >= 1) fields.emplace_back("Clip skip", std::to_string(params.clip_skip + 1));
  fields.emplace_back("RNG", "CPU");
  if (params.sampler == "ddim" && params.eta != 0.0f) fields.emplace_back("Eta DDIM", python_float(params.eta));
  if (!version.empty()) fields.emplace_back("Version", version);

  std::string text = params.prompt;
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
