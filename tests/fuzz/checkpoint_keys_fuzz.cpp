// libFuzzer target for the single-file checkpoint key mapper (src/io/checkpoint_keys.cpp).
//
// The input is a list of tensors, one a line: "KEY", "KEY<TAB>d0,d1,..." or
// "KEY<TAB>d0,...<TAB>DTYPE" (default shape [1], dtype F16; a shape of more than 64 Ki elements
// becomes [1] so files stay small). Two uses of the same keys:
//   1. the mapper's functions on the raw names (any bytes): detect_ldm_layout, ldm_to_diffusers
//      (with the detected and the SD 1.x layout), modern_vae_attention_name,
//      canonical_text_encoder_name, is_vae_attention_projection;
//   2. the keys that are valid UTF-8 written as a zero-filled .safetensors checkpoint and opened as
//      `--model file.safetensors` is: ModelFiles::open (family checks, layout detection), the
//      unet config it derives (in_channels from the checkpoint), weights() of every component it
//      has and get() of every mapped name (renamed, 1×1 convs squeezed).
// Asserted: names, an InputError, never a crash, leak or sanitizer report; a mapped name is never
// empty, and a squeezed tensor keeps its element count. Seeds: tests/data/malformed/checkpoint_keys/.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_files.h"
#include "io/checkpoint_keys.h"
#include "sdmpi/error.h"
#include "sdmpi/model_config.h"
#include "sdmpi/model_files.h"

namespace fs = std::filesystem;
using sdmpi::ckpt::LdmLayout;

namespace {

struct Tensor {
  std::string key;
  std::vector<int64_t> shape{1};
  std::string dtype = "F16";
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) out.push_back(part);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

Tensor parse_line(const std::string& line) {
  Tensor t;
  const auto fields = split(line, '\t');
  t.key = fields.empty() ? "" : fields[0];
  if (fields.size() > 1) {
    t.shape.clear();
    int64_t elements = 1;
    for (const std::string& d : split(fields[1], ',')) {
      if (d.empty() || d.size() > 6 || d.find_first_not_of("0123456789") != std::string::npos) continue;
      t.shape.push_back(std::stoll(d));
      elements *= t.shape.back();
      if (elements > 65536 || t.shape.size() > 8) {
        t.shape = {1};
        break;
      }
    }
  }
  if (fields.size() > 2 && !fields[2].empty()) t.dtype = fields[2];
  return t;
}

size_t dtype_bytes(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  return 1;
}

bool valid_utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump();
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path file = sdmpi_fuzz::scratch_dir("checkpoint_keys") / "model.safetensors";
  std::vector<Tensor> tensors;
  std::vector<std::string> keys;
  for (const std::string& line : split(std::string(reinterpret_cast<const char*>(data), size), '\n')) {
    tensors.push_back(parse_line(line));
    keys.push_back(tensors.back().key);
  }

  // 1. The mapper on raw names.
  const LdmLayout detected = sdmpi::ckpt::detect_ldm_layout(keys);
  for (const std::string& key : keys) {
    for (const LdmLayout& layout : {detected, LdmLayout{}}) {
      if (auto d = sdmpi::ckpt::ldm_to_diffusers(key, layout)) {
        if (d->name.empty()) __builtin_trap();
        (void)sdmpi::ckpt::component_name(d->component);
        (void)sdmpi::ckpt::is_vae_attention_projection(d->name);
      }
    }
    bool legacy = false;
    (void)sdmpi::ckpt::modern_vae_attention_name(key, &legacy);
    (void)sdmpi::ckpt::canonical_text_encoder_name(key);
    (void)sdmpi::ckpt::is_vae_attention_projection(key);
  }

  // 2. The same keys as a checkpoint file.
  nlohmann::json header = nlohmann::json::object();
  size_t offset = 0;
  for (const Tensor& t : tensors) {
    // Keys (and dtypes) JSON cannot hold, and repeats (a JSON object keeps one), are left out of the file.
    if (!valid_utf8(t.key) || !valid_utf8(t.dtype) || t.key == "__metadata__" || header.contains(t.key)) continue;
    size_t n = dtype_bytes(t.dtype);
    for (int64_t d : t.shape) n *= static_cast<size_t>(d);
    header[t.key] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header_text = header.dump();
  std::string bytes(8, '\0');
  const uint64_t header_size = header_text.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header_size >> (8 * i));
  bytes += header_text;
  bytes.append(offset, '\0');
  sdmpi_fuzz::write_bytes(file, bytes);
  try {
    const sdmpi::ModelFiles model = sdmpi::ModelFiles::open(file.string());
    (void)sdmpi::UNetConfig::from_json(model.config("unet"), "fuzz unet config");
    // Only the components the model has, as every caller asks (has() first): an SDXL refiner
    // checkpoint has no text_encoder, only text_encoder_2 (seed sdxl_refiner.keys).
    for (const char* component : {"unet", "vae", "text_encoder", "text_encoder_2"}) {
      if (!model.has(component)) continue;
      try {
        auto weights = model.weights(component);
        for (const std::string& name : weights->names()) {
          try {
            const auto view = weights->get(name);
            int64_t elements = 1;
            for (int64_t d : view.shape) elements *= d;
            if (view.data == nullptr && elements > 0) __builtin_trap();
          } catch (const sdmpi::InputError&) {
            // An unsupported dtype, named.
          }
        }
      } catch (const sdmpi::InputError&) {
      }
    }
  } catch (const sdmpi::InputError&) {
  }
  return 0;
}
