// LoRA files: reading, mapping onto a model's weights, and merging in float32.
//
// A LoRA adds a low-rank update to some of a model's weights: W' = W + scale · (alpha / rank) ·
// up @ down. Two key layouts exist and both are read:
//   kohya / A1111:      lora_unet_<module path with '_' for '.'>.lora_down.weight / .lora_up.weight
//                       / .alpha; lora_te_* (SD 1.x/2.x text encoder), lora_te1_* / lora_te2_* (SDXL)
//   diffusers / PEFT:   unet.<module>.lora_A.weight / .lora_B.weight (older diffusers:
//                       .lora.down.weight / .lora.up.weight), text_encoder.*, text_encoder_2.*,
//                       optional .alpha
// The prefixes and suffixes live in one table (src/io/lora.cpp). A module is resolved against the
// names its component's WeightSource actually has (diffusers names, docs/architecture.md), so the
// underscored kohya form needs no list of its own: "down_blocks_0_attentions_0_proj_in" is the
// weight whose dotted name, underscored, reads the same. kohya's SDXL files name the UNet in the
// LDM layout (lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q): a UNet module found no
// other way goes through the single-file checkpoint table (src/io/checkpoint_keys.h). Every key
// that maps to nothing, every module without both halves and every shape that does not fit its
// weight is named in one InputError, all at once; a file of another adapter kind (LoHa, LoKr, DoRA,
// IA3, ...) is refused naming a key and the kind.
// Conv LoRAs are merged as diffusers and kohya compute them: down [r, in, kh, kw], up [out, r, 1, 1]
// and delta = up.reshape(out, r) @ down.reshape(r, in·kh·kw), reshaped to the weight's shape.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/job.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/weights.h"

namespace sdmpi {

// One LoRA as a user names it: a file and its strength.
struct LoraSpec {
  std::string path;
  float scale = 1.0f;
};

// Parses "PATH[:scale]" (the scale is the text after the last ':' when it reads as a number, so
// Windows-free paths with ':' elsewhere still work); throws InputError naming `where` and the text.
LoraSpec parse_lora_spec(const std::string& text, const std::string& where);

// AUTOMATIC1111's extra-network tags in a prompt: every "<lora:NAME>" or "<lora:NAME:SCALE>" is
// removed from `prompt` (replaced by nothing, as A1111 does) and returned as (NAME, SCALE) in
// order; tags of other networks ("<hypernet:...>") are left in the text. InputError naming
// `where` for a scale that is not a number.
std::vector<std::pair<std::string, float>> extract_lora_tags(std::string& prompt, const std::string& where);

// AUTOMATIC1111's LoRA hash: the SHA-256 (hex) of a safetensors file's bytes after its header
// (the tensor data, so editing the metadata keeps it); its first 12 digits are what A1111's
// "Lora hashes" field shows. "" without OpenSSL; InputError when the file is unreadable or not
// safetensors.
std::string lora_file_hash(const std::string& path);

// An item's LoRAs as the archive's /loras column holds them: a JSON list of {"name" (the file's
// stem), "sha256" (lora_file_hash), "scale"}, "" for none. Reading back gives the name as path (the
// archive records no folder); InputError naming `where` for text that is not such a list.
std::string loras_to_archive_text(const std::vector<ItemLora>& loras);
std::vector<ItemLora> loras_from_archive_text(const std::string& text, const std::string& where);

// One low-rank update of one weight, in float32 and PyTorch shapes.
struct LoraLayer {
  std::string component;  // "unet", "text_encoder" or "text_encoder_2"
  std::string target;     // the weight's name in that component, e.g. "...attn1.to_q.weight"
  std::string module;     // the module's key stem in the file (for messages)
  Shape down_shape, up_shape;
  std::vector<float> down, up;
  float alpha = 0.0f;  // the file's alpha, or the rank when it has none (factor 1)
  int64_t rank() const { return down_shape.empty() ? 0 : down_shape[0]; }
};

struct LoraFile {
  std::string path;
  std::string name;  // the file name without folder and extension (A1111's LoRA name)
  std::vector<LoraLayer> layers;
};

// Reads `file` and resolves each module against `components` (component name → the model's
// weights; only those present are targets). Throws InputError naming the file and every key at
// fault: unknown prefixes or suffixes, modules no weight matches, missing down/up halves,
// components the model lacks, shapes that do not fit.
LoraFile read_lora(const SafetensorsFile& file,
                   const std::map<std::string, const WeightSource*>& components);
LoraFile read_lora(const std::string& path,
                   const std::map<std::string, const WeightSource*>& components);

// (alpha / rank) · up @ down as a tensor of `target_shape` (PyTorch layout), float32, times
// `scale`, with the factor rounded to float first as torch multiplies a float tensor by a scalar.
std::vector<float> lora_delta(const LoraLayer& layer, const Shape& target_shape, float scale);

// A component's weights with LoRAs merged: each targeted weight is read in float32, gets each
// LoRA's delta added in the order given (as diffusers fuses one adapter after another) and is
// answered from its own copy; the original source, and any shared read-only block behind it, is
// never written. Other weights pass through unchanged.
class LoraMergedWeightSource : public WeightSource {
 public:
  // `loras` pairs a read file with its scale; only layers of `component` are merged.
  LoraMergedWeightSource(std::shared_ptr<const WeightSource> original, const std::string& component,
                         const std::vector<std::pair<std::shared_ptr<const LoraFile>, float>>& loras);
  std::vector<std::string> names() const override { return original_->names(); }
  bool has(const std::string& name) const override { return original_->has(name); }
  WeightView get(const std::string& name) const override;
  std::string describe() const override;
  size_t merged_count() const { return merged_.size(); }

 private:
  struct Merged {
    Shape shape;
    bool backend_layout = false;
    std::shared_ptr<std::vector<float>> values;
  };
  std::shared_ptr<const WeightSource> original_;
  std::string lora_names_;
  std::map<std::string, Merged> merged_;
};

}  // namespace sdmpi
