// Prompt files and the expansion of a job into work items.
//
// Formats:
//   .txt    one prompt per line (UTF-8; CRLF accepted; blank lines skipped)
//   .jsonl  one JSON object per line: {"prompt": str (required), "negative_prompt": str,
//           "seed": int, "steps": int, "guidance": number, "width": int, "height": int,
//           "sampler": str, "schedule": str, "eta": number, "clip_skip": int,
//           "guidance_rescale": number in [0, 1], "init_image": str (img2img: a PNG or JPEG file,
//           relative to the prompt file's folder), "strength": number in (0, 1], "prompt_weighting":
//           "none" | "a1111", "lora": [{"path": str, "scale": number} or "path[:scale]", ...]
//           (LoRA files relative to the prompt file's folder; the list replaces --lora's),
//           "aesthetic_score", "negative_aesthetic_score": numbers (an SDXL refiner's conditioning)};
//           blank lines skipped.
// Keys a line does not give take the job's defaults (the command line). A "seed" in a line is the
// seed of that prompt's first image; image k of the prompt gets seed + k. Without one, item g gets
// base_seed + g. Errors name the file and line ("prompts.jsonl:7: ...") and never leave a partial
// job behind.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sdmpi/job.h"
#include "sdmpi/utf8.h"  // valid_utf8, which callers of this header check prompts with

namespace sdmpi {

// One prompt of a job with the parameters it sets; unset fields fall back to the job defaults.
struct PromptRecord {
  std::string prompt;
  std::optional<std::string> negative_prompt;
  std::optional<uint64_t> seed;
  std::optional<int> steps, width, height, clip_skip;
  // SDXL micro-conditioning (GenerationParams): original_width/height, crop_top/left, target_width/height.
  std::optional<int> original_width, original_height, crop_top, crop_left, target_width, target_height;
  std::optional<float> guidance, eta, guidance_rescale, strength;
  std::optional<float> aesthetic_score, negative_aesthetic_score;  // the SDXL refiner's conditioning
  std::optional<std::string> sampler, schedule, init_image, prompt_weighting;
  std::optional<std::vector<ItemLora>> loras;  // "lora"; paths as written until read_prompt_file resolves them
  std::string origin;  // "prompts.jsonl:7" or "--prompt #2", for messages
};

// Reads a .txt or .jsonl prompt file (chosen by extension; anything else is read as .txt).
std::vector<PromptRecord> read_prompt_file(const std::string& path);
// Parses JSONL text (for tests and the fuzz target); `origin` names the source in messages.
std::vector<PromptRecord> parse_prompts_jsonl(const std::string& text, const std::string& origin);
std::vector<PromptRecord> parse_prompts_txt(const std::string& text, const std::string& origin);

// Validates one item's parameters; throws InputError naming `origin` and the field at fault.
void validate_params(const GenerationParams& p, const std::string& origin);

// Expands prompts × images_per_prompt into work items in global-index order.
std::vector<WorkItem> expand_job(const std::vector<PromptRecord>& prompts, int images_per_prompt,
                                 uint64_t base_seed, const GenerationParams& defaults);

// img2img items (init_image set), checked before the job starts: each distinct file is read once
// and must decode (PNG or JPEG), have sides that are multiples of 8 (diffusers would resize it; we
// refuse) and leave a denoising step at the item's strength. Each item gets the image's absolute
// path, its size as width and height, and the SHA-256 of the file's bytes. A size the job asks for
// explicitly that differs from the image's is refused: the record's own width/height, else
// `requested_width`/`requested_height` (the command line's; 0 = not given). InputErrors name the
// record and the file.
void resolve_init_images(std::vector<WorkItem>& items, const std::vector<PromptRecord>& prompts, int requested_width,
                         int requested_height);

}  // namespace sdmpi
