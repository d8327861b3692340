// Weights by name: where a model's parameters come from, and how a model takes them.
//
// A WeightSource answers "which tensors exist and where are their bytes" for one component (UNet,
// VAE, text encoder) under the diffusers names, whatever the files were: a diffusers folder
// (one or sharded safetensors, .fp16 variants), a single-file LDM checkpoint whose keys were
// converted (src/io/checkpoint_keys.cpp, one table), or tensors in memory (tests, make-model).
// A model asks a WeightLoader for each parameter with the shape its config implies; the loader
// collects every problem and finish() reports all of them at once, by name: missing tensors,
// mis-shaped tensors and tensors nobody asked for.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sdmpi/backend.h"

namespace sdmpi {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual std::vector<std::string> names() const = 0;  // sorted
  virtual bool has(const std::string& name) const = 0;
  virtual WeightView get(const std::string& name) const = 0;  // throws InputError if absent
  virtual std::string describe() const = 0;                  // e.g. the file path(s), for messages
  // A hint after a backend made its own copy of `name`: the source may let its bytes leave memory
  // if it can get them back unchanged (a mapped file: SafetensorsFile::drop_resident). Default: no-op.
  virtual void release(const std::string& /*name*/) const {}
};

// Tensors held in memory (tests, the built-in tiny model).
class MemoryWeightSource : public WeightSource {
 public:
  explicit MemoryWeightSource(std::string description = "memory") : description_(std::move(description)) {}
  void add(const std::string& name, DType dtype, const Shape& shape, std::vector<uint8_t> bytes);
  void add_f32(const std::string& name, const Shape& shape, const std::vector<float>& values);
  std::vector<std::string> names() const override;
  bool has(const std::string& name) const override;
  WeightView get(const std::string& name) const override;
  std::string describe() const override { return description_; }

 private:
  struct Item {
    DType dtype;
    Shape shape;
    std::vector<uint8_t> bytes;
  };
  std::string description_;
  std::map<std::string, Item> items_;
};

// Tensors converted once to one dtype and the backend layout (WeightView::backend_layout), each in
// its slot of one block of memory that someone else owns: a node's shared weights
// (src/app/shared_weights.cpp), which every rank of the node then uses in place. plan() lays the
// readable tensors of a source out in a block, fill() converts them into it, and the source made
// from the block answers with views into it that keep the block's owner alive. Tensors that are
// not in the block (of dtypes nobody reads, like CLIP's I64 position_ids) are answered by the
// original source, so the loader's messages stay the same.
class PreparedWeightSource : public WeightSource {
 public:
  struct Slot {
    std::string name;
    Shape shape;  // PyTorch's
    uint64_t offset = 0;  // in the block, 64-byte aligned
  };
  // Slots for every readable tensor of `source` in name order, converted to `dtype`, starting at
  // `offset` in the block; returns the block's end. Tensors get() refuses (unsupported dtypes, a
  // file changed on disk) get no slot: the original source answers for them.
  static uint64_t plan(const WeightSource& source, DType dtype, uint64_t offset, std::vector<Slot>* slots);
  // Converts the slots' tensors from `source` into `block` with `threads` threads (OpenMP).
  static void fill(const WeightSource& source, DType dtype, const std::vector<Slot>& slots, void* block,
                   int threads);
  // A number that differs when two plans differ (names, shapes, offsets, dtype): ranks that planned
  // on their own compare it before they trust a block another rank filled.
  static uint64_t fingerprint(const std::vector<Slot>& slots, DType dtype);

  PreparedWeightSource(std::shared_ptr<const WeightSource> original, DType dtype, std::vector<Slot> slots,
                       const void* block, std::shared_ptr<const void> block_owner);
  std::vector<std::string> names() const override { return original_->names(); }
  bool has(const std::string& name) const override { return original_->has(name); }
  WeightView get(const std::string& name) const override;
  std::string describe() const override { return original_->describe(); }

 private:
  std::shared_ptr<const WeightSource> original_;
  DType dtype_;
  std::map<std::string, Slot> slots_;
  const uint8_t* block_;
  std::shared_ptr<const void> block_owner_;
};

class WeightLoader {
 public:
  // `component` names the part in messages ("unet", "vae", "text_encoder"); `model_dtype` is what
  // the component computes in (Backend::upload_weight), the backend's compute dtype when unset.
  WeightLoader(const WeightSource& source, Backend& backend, std::string component,
               std::optional<DType> model_dtype = std::nullopt);

  // The tensor `name` with PyTorch shape `shape` (e.g. conv [out, in, kh, kw]), uploaded for
  // `kind`. On a problem it records it and returns an undefined tensor; finish() throws.
  Tensor load(const std::string& name, const Shape& shape, WeightKind kind);
  // Marks names that the file may carry but the model does not use (e.g. the VAE encoder,
  // text_model.embeddings.position_ids), so finish() does not call them unexpected.
  void ignore_prefix(const std::string& prefix);
  void ignore(const std::string& name);
  // Throws InputError listing every missing, mis-shaped, unreadable (unsupported dtype) and
  // unexpected tensor by name, with the counts; long lists are cut after a few names.
  void finish();

 private:
  const WeightSource& source_;
  Backend& backend_;
  std::string component_;
  std::optional<DType> model_dtype_;
  std::vector<std::string> requested_, ignored_prefixes_;
  std::vector<std::string> missing_, misshaped_;
  std::vector<std::string> unreadable_;  // present but not loadable ("name: dtype I64 ...")
  std::vector<std::string> ignored_names_;
};

}  // namespace sdmpi
