// make-model's folder writer (see include/sdmpi/make_model.h): configs, weights as safetensors,
// the built-in tokenizer and the preset's scheduler config in diffusers' layout, model_index.json
// last. It lives in the pipeline layer because it writes files (io) and the tokenizer (text) as
// well as listing the networks (models).
#include <filesystem>
#include <fstream>

#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/dtype.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "sdmpi/make_model.h"
#include "sdmpi/safetensors.h"

namespace sdmpi {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// ---- writing ------------------------------------------------------------------------------------

void write_text_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(path.string() + ": cannot create the file");
    out << text;
    if (!out.flush()) throw Error(path.string() + ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(path.string() + ": cannot rename the temporary file (" + ec.message() + ")");
}

void write_json(const fs::path& path, const json& j) { write_text_file(path, j.dump(2) + "\n"); }

void write_weights(const fs::path& path, const std::vector<ParamSpec>& params, uint64_t seed,
                   DType dtype) {
  SafetensorsWriter writer;
  writer.set_metadata("format", "pt");
  std::vector<uint16_t> half;
  for (const ParamSpec& p : params) {
    std::vector<float> values = random_parameter(p, seed);
    if (dtype == DType::F32) {
      writer.add(p.name, DType::F32, p.shape, values.data());
    } else {
      half.resize(values.size());
      convert_from_f32(dtype, values.data(), half.data(), values.size());
      writer.add(p.name, dtype, p.shape, half.data());
    }
  }
  writer.write(path.string());
}

json model_index(const ModelPreset& preset) {
  const std::string scheduler_class = preset.scheduler.value("_class_name", std::string("PNDMScheduler"));
  json j;
  if (preset.text_encoder_2) {  // StableDiffusionXLPipeline's components and flags
    // The refiner: StableDiffusionXLImg2ImgPipeline without text_encoder/tokenizer, its flags.
    const bool refiner = !preset.has_text_encoder;
    j["_class_name"] = refiner ? "StableDiffusionXLImg2ImgPipeline" : "StableDiffusionXLPipeline";
    j["_diffusers_version"] = "0.42.1";
    j["feature_extractor"] = json::array({nullptr, nullptr});
    j["force_zeros_for_empty_prompt"] = preset.model_index.value("force_zeros_for_empty_prompt", true);
    j["image_encoder"] = json::array({nullptr, nullptr});
    j["scheduler"] = json::array({"diffusers", scheduler_class});
    if (refiner) j["requires_aesthetics_score"] = preset.model_index.value("requires_aesthetics_score", true);
    j["text_encoder"] = refiner ? json::array({nullptr, nullptr}) : json::array({"transformers", "CLIPTextModel"});
    j["text_encoder_2"] = json::array({"transformers", "CLIPTextModelWithProjection"});
    j["tokenizer"] = refiner ? json::array({nullptr, nullptr}) : json::array({"transformers", "CLIPTokenizer"});
    j["tokenizer_2"] = json::array({"transformers", "CLIPTokenizer"});
    j["unet"] = json::array({"diffusers", "UNet2DConditionModel"});
    j["vae"] = json::array({"diffusers", "AutoencoderKL"});
    return j;
  }
  j["_class_name"] = "StableDiffusionPipeline";
  j["_diffusers_version"] = "0.42.1";
  j["feature_extractor"] = json::array({nullptr, nullptr});
  j["image_encoder"] = json::array({nullptr, nullptr});
  j["requires_safety_checker"] = false;
  j["safety_checker"] = json::array({nullptr, nullptr});
  j["scheduler"] = json::array({"diffusers", scheduler_class});
  j["text_encoder"] = json::array({"transformers", "CLIPTextModel"});
  j["tokenizer"] = json::array({"transformers", "CLIPTokenizer"});
  j["unet"] = json::array({"diffusers", "UNet2DConditionModel"});
  j["vae"] = json::array({"diffusers", "AutoencoderKL"});
  return j;
}

}  // namespace

void make_model(const std::string& preset_name, uint64_t seed, const std::string& out_dir) {
  const ModelPreset preset = model_preset(preset_name);
  // The real-size rows are written in float16, as their model repositories ship them.
  const DType dtype = preset_name == "sd15" || preset_name == "sd21" || preset_name == "sdxl" || preset_name == "sdxl-refiner"
                          ? DType::F16
                          : DType::F32;
  const fs::path root(out_dir);
  std::error_code ec;
  if (fs::exists(root, ec)) {
    if (!fs::is_directory(root, ec)) throw InputError(out_dir + ": exists and is not a directory");
    if (!fs::is_empty(root, ec)) throw InputError(out_dir + ": exists and is not empty (make-model writes a new folder)");
  }
  std::vector<std::string> subdirs{"unet", "vae", "scheduler"};
  if (preset.has_text_encoder) subdirs.insert(subdirs.end(), {"text_encoder", "tokenizer"});
  if (preset.text_encoder_2) subdirs.insert(subdirs.end(), {"text_encoder_2", "tokenizer_2"});
  for (const std::string& sub : subdirs) {
    fs::create_directories(root / sub, ec);
    if (ec) throw Error((root / sub).string() + ": cannot create the directory (" + ec.message() + ")");
  }

  const auto unet = unet_parameters(preset.unet);
  const auto vae = vae_parameters(preset.vae);
  const auto text = preset.has_text_encoder ? clip_text_parameters(preset.text_encoder) : std::vector<ParamSpec>{};
  const auto text2 = preset.text_encoder_2 ? clip_text_parameters(*preset.text_encoder_2) : std::vector<ParamSpec>{};
  log::info("make-model " + preset_name + " seed " + std::to_string(seed) + ": unet " +
            std::to_string(count_parameters(unet)) + ", vae " + std::to_string(count_parameters(vae)) +
            (preset.has_text_encoder ? ", text_encoder " + std::to_string(count_parameters(text)) : std::string()) +
            (preset.text_encoder_2 ? ", text_encoder_2 " + std::to_string(count_parameters(text2)) : std::string()) +
            " parameters, " + dtype_name(dtype) + " → " + out_dir);

  write_json(root / "unet" / "config.json", preset.unet.to_json());
  write_weights(root / "unet" / "diffusion_pytorch_model.safetensors", unet, seed, dtype);
  write_json(root / "vae" / "config.json", preset.vae.to_json());
  write_weights(root / "vae" / "diffusion_pytorch_model.safetensors", vae, seed, dtype);
  const char* dtype_text = dtype == DType::F16 ? "float16" : "float32";
  if (preset.has_text_encoder) {
    json text_config = preset.text_encoder.to_json();
    text_config["dtype"] = dtype_text;
    write_json(root / "text_encoder" / "config.json", text_config);
    write_weights(root / "text_encoder" / "model.safetensors", text, seed, dtype);
    ClipTokenizer::builtin().write_dir((root / "tokenizer").string());
  }
  if (preset.text_encoder_2) {
    json text2_config = preset.text_encoder_2->to_json();
    text2_config["dtype"] = dtype_text;
    write_json(root / "text_encoder_2" / "config.json", text2_config);
    write_weights(root / "text_encoder_2" / "model.safetensors", text2, seed, dtype);
    sdxl_tokenizer_2().write_dir((root / "tokenizer_2").string());
  }
  write_json(root / "scheduler" / "scheduler_config.json", preset.scheduler);
  write_json(root / "model_index.json", model_index(preset));  // last: the folder is complete
}

}  // namespace sdmpi
