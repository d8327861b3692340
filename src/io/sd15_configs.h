// The SD 1.5 component configs that single-file checkpoints imply (they carry no configs).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace sdmpi {

// "unet", "vae", "text_encoder" or "scheduler"; throws Error for anything else.
nlohmann::json sd15_default_config(const std::string& component);

}  // namespace sdmpi
