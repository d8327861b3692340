// libFuzzer target for a model folder's JSON: model_index.json and the unet/vae/text_encoder
// config.json and scheduler/scheduler_config.json readers.
//
// The input packs those five files (fuzz_files.h: "@@ unet/config.json" starts that file); each
// iteration writes them over the files of one scratch diffusers folder (made once; its weight and
// tokenizer files are empty placeholders, as open() only checks that they exist), then does what
// loading does before any weight is read: ModelFiles::open (model_index.json, family checks), the configs through
// UNetConfig/VAEConfig/ClipTextConfig/SchedulerConfig::from_json as Txt2ImgPipeline does, a
// scheduler for every sampler (as generate would, 20 steps), and the networks' parameter lists as
// `sd_mpi inspect` builds them (unet_parameters, ...: declarations, no tensors). Asserted: an
// InputError or a usable config, never a crash, leak, UB or huge allocation; absurd values
// (channels = 1e9, 10^6 layers) must be refused by the readers, not reach an allocation (the
// 2 GB rss limit and -malloc_limit_mb catch one). Seeds: tests/data/malformed/model_config/.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "fuzz_files.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/error.h"
#include "sdmpi/model_config.h"
#include "sdmpi/model_files.h"
#include "sdmpi/param_sink.h"
#include "sdmpi/scheduler.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

namespace fs = std::filesystem;

namespace {

const char* const kConfigFiles[] = {"model_index.json", "unet/config.json", "vae/config.json",
                                    "text_encoder/config.json", "scheduler/scheduler_config.json"};

// The folder skeleton: everything open() looks for besides the configs, as empty files.
fs::path make_folder() {
  const fs::path root = sdmpi_fuzz::scratch_dir("model_config") / "model";
  for (const char* dir : {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}) fs::create_directories(root / dir);
  for (const char* f : {"unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                        "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"})
    sdmpi_fuzz::write_bytes(root / f, "");
  return root;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path root = make_folder();
  // Each config the input gives overwrites the one file kept for it (truncated in place: no file
  // is created or deleted per execution unless the set of files changes, which made this target
  // slow); a config the input lacks is removed. The last copy of a name given twice wins.
  std::map<std::string, std::string> given;
  for (auto& [name, content] : sdmpi_fuzz::unpack_files(data, size)) given[name] = std::move(content);
  for (const char* f : kConfigFiles) {
    std::error_code ec;
    if (auto it = given.find(f); it != given.end()) sdmpi_fuzz::write_bytes(root / f, it->second);
    else if (fs::exists(root / f, ec)) fs::remove(root / f, ec);
  }

  try {
    const sdmpi::ModelFiles model = sdmpi::ModelFiles::open(root.string());
    const auto text = sdmpi::ClipTextConfig::from_json(model.config("text_encoder"), "fuzz text_encoder/config.json");
    const auto unet = sdmpi::UNetConfig::from_json(model.config("unet"), "fuzz unet/config.json");
    const auto vae = sdmpi::VAEConfig::from_json(model.config("vae"), "fuzz vae/config.json");
    const auto sched = sdmpi::SchedulerConfig::from_json(model.config("scheduler"), "fuzz scheduler_config.json");
    for (const char* sampler : {"pndm", "ddim", "euler", "euler_a", "dpm++2m", "lcm"}) {
      try {
        auto s = sdmpi::make_scheduler(sampler, "default", sched, 20);
        (void)s;
      } catch (const sdmpi::InputError&) {
      }
    }
    // What inspect and make-model derive from the configs; to_json must give a config that reads back.
    const int64_t params = sdmpi::count_parameters(sdmpi::unet_parameters(unet)) +
                           sdmpi::count_parameters(sdmpi::vae_parameters(vae)) +
                           sdmpi::count_parameters(sdmpi::clip_text_parameters(text, "text_model."));
    if (params <= 0) __builtin_trap();
    (void)sdmpi::UNetConfig::from_json(unet.to_json(), "round trip unet");
    (void)sdmpi::VAEConfig::from_json(vae.to_json(), "round trip vae");
    (void)sdmpi::ClipTextConfig::from_json(text.to_json(), "round trip text_encoder");
  } catch (const sdmpi::InputError&) {
  }
  return 0;
}
