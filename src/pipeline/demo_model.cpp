// The built-in demo model: tools/demo_model/model/ (configs and fp16 safetensors) linked into the
// binary by CMakeLists.txt (tools/cmake/embed_file.cmake), read back here with the same
// safetensors and config readers a model folder goes through, so it is checked like any folder.
#include "pipeline/demo_model.h"

#include <string>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/model_files.h"
#include "sdmpi/safetensors.h"

#define SDMPI_DEMO_SYMBOL(name)                       \
  extern "C" const unsigned char sdmpi_demo_##name[]; \
  extern "C" const unsigned long sdmpi_demo_##name##_size;
SDMPI_DEMO_SYMBOL(unet_config)
SDMPI_DEMO_SYMBOL(unet_weights)
SDMPI_DEMO_SYMBOL(vae_config)
SDMPI_DEMO_SYMBOL(vae_weights)
SDMPI_DEMO_SYMBOL(text_encoder_config)
SDMPI_DEMO_SYMBOL(text_encoder_weights)
SDMPI_DEMO_SYMBOL(scheduler_config)
#undef SDMPI_DEMO_SYMBOL

namespace sdmpi {
namespace {

struct Embedded {
  const unsigned char* bytes;
  unsigned long size;
};

nlohmann::json parse_config(const Embedded& e, const std::string& label) {
  try {
    return nlohmann::json::parse(e.bytes, e.bytes + e.size);
  } catch (const nlohmann::json::exception& ex) {
    throw Error("the built-in demo model's " + label + " is not valid JSON: " + ex.what());
  }
}

std::shared_ptr<WeightSource> weights(const Embedded& e, const std::string& label) {
  auto file = SafetensorsFile::from_bytes("built-in demo model " + label, std::vector<uint8_t>(e.bytes, e.bytes + e.size));
  auto source = std::make_shared<SafetensorsWeightSource>("built-in demo model " + label);
  source->add_file(file);
  return source;
}

}  // namespace

ModelSource open_demo_model() {
  // CMake embeds empty files when tools/demo_model/model/ is absent (an untrained checkout).
  if (sdmpi_demo_unet_weights_size == 0 || sdmpi_demo_unet_config_size == 0)
    throw InputError("this sd_mpi was built without the demo model (tools/demo_model/model/ was missing at build time; "
                     "train it with tools/demo_model/train.sh and rebuild)");
  std::map<std::string, nlohmann::json> configs{
      {"unet", parse_config({sdmpi_demo_unet_config, sdmpi_demo_unet_config_size}, "unet/config.json")},
      {"vae", parse_config({sdmpi_demo_vae_config, sdmpi_demo_vae_config_size}, "vae/config.json")},
      {"text_encoder",
       parse_config({sdmpi_demo_text_encoder_config, sdmpi_demo_text_encoder_config_size}, "text_encoder/config.json")},
      {"scheduler",
       parse_config({sdmpi_demo_scheduler_config, sdmpi_demo_scheduler_config_size}, "scheduler/scheduler_config.json")},
  };
  std::map<std::string, std::shared_ptr<WeightSource>> sources{
      {"unet", weights({sdmpi_demo_unet_weights, sdmpi_demo_unet_weights_size}, "unet/diffusion_pytorch_model.safetensors")},
      {"vae", weights({sdmpi_demo_vae_weights, sdmpi_demo_vae_weights_size}, "vae/diffusion_pytorch_model.safetensors")},
      {"text_encoder",
       weights({sdmpi_demo_text_encoder_weights, sdmpi_demo_text_encoder_weights_size}, "text_encoder/model.safetensors")},
  };
  return ModelSource::from_memory(kDemoModelName, std::move(configs), std::move(sources));
}

}  // namespace sdmpi
