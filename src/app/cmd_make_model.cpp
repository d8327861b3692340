// sd_mpi make-model --preset tiny|sd15 --seed S OUT_DIR: random weights in the diffusers layout.
#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "sdmpi/log.h"
#include "sdmpi/make_model.h"

namespace sdmpi::app {

int cmd_make_model(int argc, char** argv) {
  CLI::App cli{"Writes a Stable Diffusion 1.x model with random weights in the diffusers folder layout\n"
               "(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), loadable by diffusers.\n"
               "  tiny: the built-in test model (--model tiny is the same weights with seed 0)\n"
               "  sd15: the real SD 1.5 shapes (UNet 860M, VAE, CLIP ViT-L/14 text tower) for benchmarks",
               "sd_mpi make-model"};
  std::string preset, out;
  uint64_t seed = 0;
  cli.add_option("--preset", preset, "one of the SD config table's presets")->required()->check(CLI::IsMember(model_preset_names()));
  cli.add_option("--seed", seed, "seed of the random weights");
  cli.add_option("OUT_DIR", out, "folder to create")->required();
  int rc = 0;
  if (!parse_cli(cli, argc, argv, &rc)) return rc;
  make_model(preset, seed, out);
  log::info("wrote the " + preset + " model (seed " + std::to_string(seed) + ") to " + out);
  return 0;
}

}  // namespace sdmpi::app
