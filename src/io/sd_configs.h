// The one table of Stable Diffusion configs: per family or preset, the config.json of each
// component as the pinned diffusers / transformers write it.
//
// Single-file checkpoints carry no configs, so their family's row supplies them; the typed presets
// (UNetConfig::sd15(), ...) are these rows parsed by the configs' own from_json(); make-model's
// presets are rows too. A new family (SD 2.x, SDXL with its text_encoder_2) is a new row, with
// whatever components it has.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sdmpi {

// The rows' names, in table order ("sd15", "tiny", "sd21", "tiny-sd2", "sdxl", "tiny-sdxl",
// "sdxl-refiner", "tiny-sdxl-refiner").
std::vector<std::string> sd_config_names();

// The config of `component` ("unet", "vae", "text_encoder", "scheduler", ...) in row `name`.
// InputError for an unknown row (naming the known ones); Error for a component the row lacks.
nlohmann::json sd_config(const std::string& name, const std::string& component);
// Whether row `name` (or a row it is based on) has `component` (e.g. "text_encoder_2", "model_index").
bool sd_config_has(const std::string& name, const std::string& component);

// The family of a UNet pipeline from its unet and text_encoder configs: "SDXL" when the UNet has
// the "text_time" added conditioning ("SDXL refiner" when there is no text_encoder: null), else "SD 2.x" when the text
// encoder is OpenCLIP's (exact GELU) or the UNet cross-attends to 1024-wide states, else "SD 1.x".
// The networks are the same code either way; the family is what inspect and the outputs report.
std::string sd_family(const nlohmann::json& unet_config, const nlohmann::json& text_encoder_config);

}  // namespace sdmpi
