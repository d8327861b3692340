// Where a model's files are: a diffusers folder or one single-file LDM checkpoint.
//
// `--model PATH` names either
//   (a) a diffusers pipeline folder: model_index.json, unet/ vae/ text_encoder/ tokenizer/
//       scheduler/, each weight component as diffusion_pytorch_model.safetensors (unet, vae) or
//       model.safetensors (text_encoder), or a `.<variant>.safetensors` form of it, or shards
//       listed by a `*.safetensors.index[.<variant>].json` (weight_map: name → shard file); or
//   (b) one `.safetensors` checkpoint with the original LDM key names (model.diffusion_model.*,
//       first_stage_model.*, cond_stage_model.transformer.*), which the table in
//       src/io/checkpoint_keys.cpp maps to diffusers names; its configs are the SD 1.5 ones.
// Either way the rest of the program sees diffusers names and diffusers configs. Everything that
// can be checked without reading weights is checked by open(), so a broken model fails at once
// with one message naming the path ("model folder ./x: missing vae/config.json").
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sdmpi/safetensors.h"
#include "sdmpi/weights.h"

namespace sdmpi {

// Tensors of safetensors files under chosen names: each name is one tensor of one file, perhaps
// renamed (LDM checkpoints, legacy VAE names) and reshaped (a 1×1 conv presented as a linear).
// Views are zero-copy into the files' maps, which live as long as this source.
class SafetensorsWeightSource : public WeightSource {
 public:
  explicit SafetensorsWeightSource(std::string description) : description_(std::move(description)) {}
  // Every tensor of `file` under its own name (tensors of unsupported dtypes too: has() is true,
  // get() names the dtype).
  void add_file(const std::shared_ptr<const SafetensorsFile>& file);
  // Tensor `file_key` of `file` as `name`; a non-empty `shape` replaces the file's shape (same
  // element count). Throws InputError if `name` is already taken.
  void add(const std::string& name, const std::shared_ptr<const SafetensorsFile>& file,
           const std::string& file_key, const Shape& shape = {});
  // Part `part` of `parts` equal slices of the file's tensor along its first dimension (OpenCLIP's
  // stacked q, k, v), zero-copy.
  void add_slice(const std::string& name, const std::shared_ptr<const SafetensorsFile>& file,
                 const std::string& file_key, int part, int parts);
  // The file's 2-D tensor transposed (OpenCLIP's text_projection), materialised on first use.
  void add_transposed(const std::string& name, const std::shared_ptr<const SafetensorsFile>& file,
                      const std::string& file_key);
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  WeightView get(const std::string& name) const override;
  std::string describe() const override { return description_; }
  // Drops the file pages of `name` (its slice, for add_slice) from memory: SafetensorsFile::drop_resident.
  void release(const std::string& name) const override;
  // Where `name` comes from: "file.safetensors:key" (messages, tests).
  std::string origin(const std::string& name) const;

 private:
  struct Item {
    std::shared_ptr<const SafetensorsFile> file;
    std::string key;
    Shape shape;  // empty: the file's
    int part = 0, parts = 1;  // add_slice
    bool transpose = false;   // add_transposed
  };
  void insert(const std::string& name, Item item);
  std::string description_;
  std::map<std::string, Item> items_;
  mutable std::mutex transposed_mutex_;
  mutable std::map<std::string, std::shared_ptr<std::vector<uint8_t>>> transposed_;
};

class ModelFiles {
 public:
  // Opens a diffusers folder or a single-file checkpoint. `variant` ("fp16", ...) picks
  // `*.<variant>.safetensors` weight files in a folder; without one the plain files are used (a
  // folder that has only one variant falls back to it, with a note in the log). Throws
  // InputError naming the path for anything missing or malformed, and for model families that
  // are not supported (SDXL refiners, SD3, Flux, SDXL/SD 2.x single files). With
  // `weights_in_place` the weight files are opened so that a backend may compute from their
  // mapping instead of a copy (SafetensorsFile::open's in_place; --map-weights).
  static ModelFiles open(const std::string& path, const std::string& variant = "", bool weights_in_place = false);

  bool is_single_file() const;
  const std::string& path() const;
  // "SD 1.x", "SD 2.x" or "SDXL" (folders: sd_family() of the unet and text_encoder configs; single
  // files: SD 1.x).
  const std::string& family() const;

  // The component's config as diffusers reads it: unet/vae/text_encoder config.json,
  // scheduler/scheduler_config.json. For single files: the SD 1.5 configs (unet in_channels taken
  // from the checkpoint, so inpainting checkpoints get 9). Components: "unet", "vae",
  // "text_encoder", "scheduler".
  // SDXL folders add "text_encoder_2"; "model_index" is model_index.json (a single file: a
  // StableDiffusionPipeline's).
  nlohmann::json config(const std::string& component) const;
  // Whether the model has the component (config and, for networks, weights).
  bool has(const std::string& component) const;
  // The component's weights under diffusers names ("unet", "vae", "text_encoder"). Names are
  // canonical whatever the file's spelling: the VAE attention is to_q/to_k/to_v/to_out.0 with
  // [out, in] weights (legacy query/key/value/proj_attn and 1×1-conv shapes are mapped), the text
  // encoder's names start with `text_model.` (transformers >= 5.6 saves them without it).
  std::shared_ptr<WeightSource> weights(const std::string& component) const;
  // The tokenizer folder (vocab.json + merges.txt, or transformers 5's tokenizer.json alone);
  // empty for single files, whose caller uses the built-in CLIP vocabulary.
  // `tokenizer`: "tokenizer", or SDXL's "tokenizer_2".
  std::string tokenizer_dir(const std::string& tokenizer = "tokenizer") const;
  // Every weight file the model reads, in a fixed order (hashing, provenance).
  std::vector<std::string> weight_files() const;
  // One line: what was opened and which files.
  std::string describe() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace sdmpi
