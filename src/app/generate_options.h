// sd_mpi generate's command line: the options, their CLI11 declarations and the checks that need
// no file, model or other rank. What the options mean for the job is generate_plan's business.
#pragma once

#include <cstdint>
#include <cmath>
#include <string>
#include <vector>

#include "sdmpi/cluster.h"

namespace sdmpi::app {

// Where PNG files go when the command line names no output (as sd.cpp and diffusers scripts write
// an image without being asked): a folder in the working directory, said on the first line.
inline constexpr const char* kDefaultOutDir = "sd_mpi-out";
// The largest image side accepted on the command line (the resource plan then checks the memory).
inline constexpr int kMaxImageSide = 16384;

struct GenerateOptions {
  std::string model, variant;
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::string negative_prompt;
  int images_per_prompt = 1;
  int64_t seed = 0;
  int steps = 0;         // 0: the model's default (job_defaults: 50, the demo model its own)
  float guidance = NAN;  // NaN: the model's default (7.5, the demo model its own)
  float guidance_rescale = 0;
  std::string prompt_weighting = "none";  // none | a1111 (items without a JSONL prompt_weighting)
  std::string init_image;  // img2img for every item without its own init_image
  std::vector<std::string> loras;  // --lora PATH[:scale], for items without a JSONL "lora" list
  std::string lora_dir;            // where the prompts' <lora:NAME:scale> tags find NAME.safetensors
  float strength = 0.8f;
  // Two stages: an SDXL refiner (or any SDXL model) continuing every item from --refiner-start
  // (the share of the schedule the base runs); "" = none.
  std::string refiner;
  float refiner_start = 0.8f;
  // The refiner's aesthetic-score conditioning (diffusers' defaults).
  float aesthetic_score = 6.0f, negative_aesthetic_score = 2.5f;
  // SDXL micro-conditioning for every item without its own (0 = the image's size, crop 0,0), from
  // --original-size WxH, --target-size WxH, --crop-top-left TOP,LEFT.
  std::string original_size, target_size, crop_top_left;
  int width = 0, height = 0;  // 0: the model's default size
  std::string sampler = "default", schedule = "default";
  float eta = 0;
  int clip_skip = 0;
  int batch_size = 1;
  std::string device = "auto", precision = "auto";
  int threads = 0;
  std::string out_dir, archive, shard;
  bool out_dir_defaulted = false;  // neither --out-dir nor --archive: PNG files go to kDefaultOutDir
  bool resume = false, overwrite = false, fail_fast = false, allow_gpu_sharing = false;
  bool no_shared_weights = false;  // CPU ranks of one node each convert their own weights
  bool map_weights = false;        // F32 weights computed from the files' mappings, no copy
  std::string progress = "auto", distribution = "dynamic";
  bool quiet = false, verbose = false;

  // How run_job distributes the items and reports progress.
  RunOptions run_options() const;
};

// Parses argv into *options. Only rank 0 (`talk`) prints help or a parse error. Returns false
// when the caller should return *exit_code (0 after --help, kExitUsage after a parse error).
bool parse_generate_options(int argc, char** argv, bool talk, GenerateOptions* options, int* exit_code);

// The checks between options (something to read, something to write, features this build has);
// throws InputError naming the option at fault.
// The command line's SDXL micro-conditioning (0 = default), parsed from --original-size WxH,
// --target-size WxH and --crop-top-left TOP,LEFT; InputError naming the option otherwise.
struct MicroConditioning {
  int original_width = 0, original_height = 0, crop_top = 0, crop_left = 0, target_width = 0, target_height = 0;
};
MicroConditioning micro_conditioning(const GenerateOptions& o);

void validate_generate_options(const GenerateOptions& o);

}  // namespace sdmpi::app
