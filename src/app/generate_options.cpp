// sd_mpi generate's options (see generate_options.h): declared once here with their help text
// and defaults, which --help shows.
#include "app/generate_options.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "pipeline/demo_model.h"
#include "sdmpi/archive.h"
#include "sdmpi/error.h"
#include "sdmpi/png.h"

namespace sdmpi::app {
namespace {
// "AxB" (or "A,B") → two integers in [lo, 16384]; `option` names the flag in the message.
void parse_pair(const std::string& text, const char* option, char sep, int lo, int& a, int& b) {
  if (text.empty()) return;
  const size_t at = text.find(sep);
  size_t used_a = 0, used_b = 0;
  try {
    if (at == std::string::npos) throw std::invalid_argument(text);
    a = std::stoi(text.substr(0, at), &used_a);
    b = std::stoi(text.substr(at + 1), &used_b);
  } catch (const std::exception&) {
    used_a = used_b = std::string::npos;
  }
  const bool ok = at != std::string::npos && used_a == at && used_b == text.size() - at - 1 && a >= lo && b >= lo &&
                  a <= 16384 && b <= 16384;
  if (!ok)
    throw InputError(std::string(option) + " " + text + ": expected " +
                     (sep == 'x' ? "WIDTHxHEIGHT, e.g. 1024x1024" : "TOP,LEFT, e.g. 0,0") + " (integers " +
                     std::to_string(lo) + "..16384)");
}

}  // namespace

MicroConditioning micro_conditioning(const GenerateOptions& o) {
  MicroConditioning m;
  parse_pair(o.original_size, "--original-size", 'x', 1, m.original_width, m.original_height);
  parse_pair(o.target_size, "--target-size", 'x', 1, m.target_width, m.target_height);
  parse_pair(o.crop_top_left, "--crop-top-left", ',', 0, m.crop_top, m.crop_left);
  return m;
}

namespace {

void add_options(CLI::App& cli, GenerateOptions& o) {
  cli.option_defaults()->always_capture_default();  // --help shows each default
  cli.add_option("--model", o.model, "diffusers folder, single-file .safetensors checkpoint, or 'tiny' (built-in test model)")
      ->required();
  cli.add_option("--variant", o.variant, "weight variant of a diffusers folder, e.g. fp16 (*.fp16.safetensors)");
  auto* prompt = cli.add_option("--prompt", o.prompts, "prompt text (repeatable: one prompt per occurrence)");
  auto* file = cli.add_option("--prompts", o.prompts_file, "prompt file: .txt (one per line) or .jsonl (see README)");
  prompt->excludes(file);
  cli.add_option("--negative-prompt", o.negative_prompt, "negative prompt for every item without its own (default: empty)");
  cli.add_option("-n,--images-per-prompt", o.images_per_prompt, "images per prompt")->check(CLI::Range(1, 1000000));
  cli.add_option("--seed", o.seed, "base seed: item g gets seed+g unless its JSONL line gives one; -1 = random")
      ->check(CLI::Range(int64_t{-1}, int64_t{INT64_MAX}));
  // Unset (0, NaN) means the model's default: shown in the text, not as "=0" / "=nan".
  cli.add_option("--steps", o.steps,
                 "denoising steps (default: " + std::to_string(kDefaultSteps) + "; the demo model: " +
                     std::to_string(kDemoSteps) + ")")
      ->check(CLI::Range(1, 1000))
      ->default_str("");
  char guidance_defaults[64];
  std::snprintf(guidance_defaults, sizeof guidance_defaults, "(default: %g; the demo model: %g)",
                static_cast<double>(kDefaultGuidance), static_cast<double>(kDemoGuidance));
  cli.add_option("--guidance", o.guidance,
                 std::string("classifier-free guidance scale, <= 1 skips the unconditional pass ") + guidance_defaults)
      ->check(CLI::Validator(
          [](std::string& text) {  // NaN would pass a range check, and reads as "unset"
            char* end = nullptr;
            const float v = std::strtof(text.c_str(), &end);
            return std::isfinite(v) && v >= -1000.0f && v <= 1000.0f ? std::string()
                                                                    : "Value " + text + " is not a number in [-1000, 1000]";
          },
          "FLOAT in [-1000 - 1000]"))
      ->default_str("");
  cli.add_option("--guidance-rescale", o.guidance_rescale,
                 "diffusers' guidance_rescale phi in [0, 1] (CFG rescale for v-prediction models; 0 = off)")
      ->check(CLI::Range(0.0f, 1.0f));
  cli.add_option("--prompt-weighting", o.prompt_weighting,
                 "none (default: plain text, as diffusers) or a1111: AUTOMATIC1111's (word:1.2), (word), [word], "
                 "\\( escapes, BREAK and prompts past 75 tokens, for items without a JSONL prompt_weighting")
      ->check(CLI::IsMember({"none", "a1111"}));
  cli.add_option("--init-image", o.init_image,
                 "img2img: start each item (without a JSONL init_image) from this PNG or JPEG; the image's size "
                 "is the output size");
  cli.add_option("--strength", o.strength,
                 "img2img strength in (0, 1]: the share of the steps run from the noised init image (diffusers' strength)");
  cli.add_option("--refiner", o.refiner,
                 "SDXL two stages: this SDXL refiner (folder or single file) continues every item from "
                 "--refiner-start on the base model's latents, and decodes");
  cli.add_option("--refiner-start", o.refiner_start,
                 "with --refiner: the share of the schedule the base model runs, in (0, 1) (diffusers' "
                 "denoising_end / denoising_start; default 0.8)");
  cli.add_option("--aesthetic-score", o.aesthetic_score,
                 "SDXL refiner conditioning: the aesthetic score of the positive half (default 6.0, as diffusers)");
  cli.add_option("--negative-aesthetic-score", o.negative_aesthetic_score,
                 "SDXL refiner conditioning: the aesthetic score of the negative half (default 2.5, as diffusers)");
  cli.add_option("--lora", o.loras,
                 "LoRA PATH[:scale] merged into the model (repeatable, merged in order; kohya/A1111 or diffusers "
                 "format) for items without a JSONL lora list");
  cli.add_option("--lora-dir", o.lora_dir, "folder where a prompt's <lora:NAME:scale> finds NAME.safetensors");
  cli.add_option("--original-size", o.original_size,
                 "SDXL micro-conditioning: the original_size WxH the UNet is told (default: the image's size)");
  cli.add_option("--target-size", o.target_size,
                 "SDXL micro-conditioning: the target_size WxH the UNet is told (default: the image's size)");
  cli.add_option("--crop-top-left", o.crop_top_left,
                 "SDXL micro-conditioning: crops_coords_top_left TOP,LEFT in pixels (default: 0,0)");
  cli.add_option("--width", o.width, "image width in pixels, a multiple of 8 (default: the model's)");
  cli.add_option("--height", o.height, "image height in pixels, a multiple of 8 (default: the model's)");
  cli.add_option("--sampler", o.sampler,
                 std::string("pndm|ddim|euler|euler_a|dpm++2m|lcm or an AUTOMATIC1111 name (\"Euler a\", \"DPM++ 2M "
                             "Karras\"); default: the model's scheduler (the demo model: ") +
                     kDemoSampler + ")");
  cli.add_option("--schedule", o.schedule, "default|karras (sigma schedule for euler, euler_a, dpm++2m)");
  cli.add_option("--eta", o.eta, "DDIM eta (0 = deterministic)");
  cli.add_option("--clip-skip", o.clip_skip, "skip the last N CLIP layers (A1111 'Clip skip' N+1)")->check(CLI::Range(0, 11));
  cli.add_option("--batch-size", o.batch_size, "items per UNet call (same image whatever the batch size)")
      ->check(CLI::Range(1, 4096));
  cli.add_option("--device", o.device, "auto|cpu|cuda (auto: a working GPU, else the CPU)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cli.add_option("--precision", o.precision, "fp32|fp16|bf16 (default: fp16 on a GPU, fp32 on the CPU)")
      ->check(CLI::IsMember({"auto", "fp32", "fp16", "bf16"}));
  cli.add_option("--threads", o.threads, "CPU threads per rank (default: cores / ranks on the node)")->check(CLI::Range(0, 4096));
  cli.add_option("--out-dir", o.out_dir, "write one PNG per image, named by global index (000042.png)");
  cli.add_option("--archive", o.archive, "write every image into this HDF5 archive (rank 0 gathers)");
  cli.add_option("--shard", o.shard, "i/K: make only shard i of K (default: from SLURM_ARRAY_TASK_ID/COUNT)");
  cli.add_flag("--resume", o.resume, "continue the archive / out-dir of this job: skip finished images");
  cli.add_flag("--overwrite", o.overwrite, "replace an existing archive and PNG files");
  cli.add_flag("--fail-fast", o.fail_fast, "stop the whole job at the first failed image (default: record and go on)");
  cli.add_flag("--allow-gpu-sharing", o.allow_gpu_sharing, "allow more ranks than GPUs on a node");
  cli.add_flag("--no-shared-weights", o.no_shared_weights,
               "CPU ranks of one node each hold their own copy of the weights (default: one shared copy per node)");
  cli.add_flag("--map-weights", o.map_weights,
               "CPU: compute from float32 weight files in place, no copy (the files must not change during the job)");
  cli.add_option("--distribution", o.distribution, "static (contiguous blocks) | dynamic (rank 0 hands out batches)")
      ->check(CLI::IsMember({"static", "dynamic"}));
  cli.add_option("--progress", o.progress, "auto|bar|lines|none (auto: a bar on a terminal, lines in batch logs)")
      ->check(CLI::IsMember({"auto", "bar", "lines", "none"}));
  cli.add_flag("-q,--quiet", o.quiet, "only warnings and errors");
  cli.add_flag("-v,--verbose", o.verbose, "debug messages");
}

}  // namespace

bool parse_generate_options(int argc, char** argv, bool talk, GenerateOptions* options, int* exit_code) {
  CLI::App cli{"Generates images from prompts with Stable Diffusion 1.x, on every MPI rank at once.\n"
               "Each item (prompt × image) gets seed base+index and the same image as diffusers whatever the\n"
               "number of ranks, batch size or shard. Examples:\n"
               "  sd_mpi --model tiny --prompt \"a cat\" --steps 4 --out-dir out\n"
               "  mpirun -np 8 sd_mpi --model ./sd15 --prompts prompts.jsonl --archive run.h5 --resume",
               "sd_mpi generate"};
  add_options(cli, *options);
  if (!talk) cli.set_help_flag();  // only rank 0 talks about the command line
  try {
    cli.parse(argc, argv);
    if (options->out_dir.empty() && options->archive.empty() && kPngSupported) {
      options->out_dir = kDefaultOutDir;
      options->out_dir_defaulted = true;
    }
    return true;
  } catch (const CLI::CallForHelp& e) {
    if (talk) cli.exit(e);
    *exit_code = 0;
  } catch (const CLI::ParseError& e) {
    if (talk) std::fprintf(stderr, "sd_mpi: error: %s (see 'sd_mpi generate --help')\n", e.what());
    *exit_code = kExitUsage;
  }
  return false;
}

void validate_generate_options(const GenerateOptions& o) {
  if (o.prompts.empty() && o.prompts_file.empty()) throw InputError("give --prompt TEXT or --prompts FILE");
  if (o.out_dir.empty() && o.archive.empty()) throw InputError("nothing to write: give --out-dir DIR and/or --archive FILE.h5");
  // (a multiple of 8 is checked with each item's size, which a JSONL line may also set)
  for (auto [name, side] : {std::pair{"--width", o.width}, std::pair{"--height", o.height}})
    if (side > kMaxImageSide)
      throw InputError(std::string(name) + " " + std::to_string(side) + ": at most " + std::to_string(kMaxImageSide) +
                       " pixels per side");
  if (!o.archive.empty() && !kArchiveSupported) throw InputError("this sd_mpi was built without HDF5: --archive is not available");
  if (!o.out_dir.empty() && !kPngSupported) throw InputError("this sd_mpi was built without libpng: --out-dir is not available");
  if (o.resume && o.overwrite) throw InputError("--resume and --overwrite contradict each other");
  micro_conditioning(o);  // throws on a malformed value
  if (!(o.strength > 0.0f && o.strength <= 1.0f)) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", static_cast<double>(o.strength));
    throw InputError(std::string("--strength ") + value + " is outside (0, 1]");
  }
  if (!o.refiner.empty() && !(o.refiner_start > 0.0f && o.refiner_start < 1.0f)) {
    char value[32];
    std::snprintf(value, sizeof value, "%g", static_cast<double>(o.refiner_start));
    throw InputError(std::string("--refiner-start ") + value + " is outside (0, 1)");
  }
}

RunOptions GenerateOptions::run_options() const {
  RunOptions run;
  run.distribution = distribution == "static" ? Distribution::Static : Distribution::Dynamic;
  run.batch_size = batch_size;
  run.fail_fast = fail_fast;
  run.progress = progress == "bar"     ? ProgressMode::Bar
                 : progress == "lines" ? ProgressMode::Lines
                 : progress == "none"  ? ProgressMode::None
                                       : ProgressMode::Auto;
  return run;
}

}  // namespace sdmpi::app
