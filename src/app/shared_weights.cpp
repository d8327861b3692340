// One copy of the weights per node (see shared_weights.h).
//
// The block a node shares: 64 bytes of header (the plan's fingerprint), then every readable tensor
// of the UNet, the VAE and the text encoder(s), float32 in the backend layout, each in a 64-byte
// aligned slot. Every rank plans the same layout from the same files on its own; the writer (the
// node's rank 0) stamps its plan's fingerprint into the header, and a rank whose own plan differs
// (a file changed between the ranks' opens) does not trust the block and loads its own copy.
#include "app/shared_weights.h"

#include <omp.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "sdmpi/comm.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "sdmpi/weights.h"

namespace sdmpi::app {
namespace {

constexpr const char* kComponents[] = {"unet", "vae", "text_encoder", "text_encoder_2"};  // the last: SDXL's
constexpr uint64_t kHeaderBytes = 64;

struct ComponentPlan {
  std::shared_ptr<WeightSource> source;
  std::vector<PreparedWeightSource::Slot> slots;
};

std::string gib(uint64_t bytes) {
  std::string s = std::to_string(static_cast<double>(bytes) / double(uint64_t{1} << 30));
  return s.substr(0, s.find('.') + 3) + " GiB";
}

}  // namespace

bool shares_weights_on_node(const Backend* backend) {
  return backend && (backend->device() != Device::CPU || backend->compute_dtype() == DType::F32);
}

ModelSource share_weights_on_node(const World& world, const ModelSource& model, const Backend* backend, bool enabled,
                                  int threads) {
  // Host ranks computing in float32 use the block in place. GPU ranks upload from it: the node's
  // first rank reads and converts the files once, the others copy from the node's memory instead of
  // reading the files again (the CUDA upload turns these float32 bytes into the compute dtype, the
  // same bits as from the file: F16/BF16 → F32 is exact). The block then stays for the job (the
  // lazily loaded VAE encoder, LoRA merges read it).
  const bool eligible = shares_weights_on_node(backend);
  // Plan first: every rank must know the block's size before the collective allocation, and no
  // rank may leave between collectives, so a failure here is only agreed on, never thrown.
  std::map<std::string, ComponentPlan> plans;
  std::vector<PreparedWeightSource::Slot> all_slots;
  uint64_t end = kHeaderBytes;
  bool planned = false;
  if (eligible && enabled && world.size() > 1) {
    try {
      for (const char* c : kComponents) {
        if (!model.has(c)) continue;
        ComponentPlan& p = plans[c];
        p.source = model.weights(c);
        end = PreparedWeightSource::plan(*p.source, DType::F32, end, &p.slots);
        all_slots.insert(all_slots.end(), p.slots.begin(), p.slots.end());
      }
      planned = true;
    } catch (const std::exception& e) {
      // The loader will meet the same problem and report it properly, on every rank.
      log::debug(std::string("shared weights: not planned: ") + e.what());
    }
  }
  if (!world.all_true(planned)) return model;

  std::shared_ptr<NodeSharedBuffer> buffer = world.comm().node_shared_buffer(end);
  if (!buffer) {
    if (world.rank() == 0)
      log::info("weights: one copy per rank (no other rank on this node, or no shared memory for " + gib(end) + ")");
    return model;
  }
  const uint64_t fingerprint = PreparedWeightSource::fingerprint(all_slots, DType::F32);
  uint8_t* block = static_cast<uint8_t*>(buffer->data());
  bool filled = true;
  std::string why;
  if (buffer->writer()) {
    auto t0 = std::chrono::steady_clock::now();
    try {
      for (const auto& [component, p] : plans)
        PreparedWeightSource::fill(*p.source, DType::F32, p.slots, block, threads > 0 ? threads : omp_get_num_procs());
      std::memcpy(block, &fingerprint, sizeof fingerprint);
    } catch (const std::exception& e) {
      filled = false;
      why = e.what();
    }
    if (filled)
      log::debug("shared weights: " + gib(end) + " converted in " +
                 std::to_string(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()) + " s");
  }
  if (!buffer->publish(filled)) {
    // Each rank loads its own copy, and its loader names the problem (a file changed on disk...).
    if (buffer->writer()) log::warn("weights: could not fill this node's shared copy (" + why + "); one copy per rank");
    return model;
  }
  uint64_t stamped = 0;
  std::memcpy(&stamped, block, sizeof stamped);
  if (stamped != fingerprint) {
    log::warn("weights: this rank's model files differ from those its node's rank 0 read (changed on disk?); "
              "loading a copy of its own");
    return model;
  }
  std::map<std::string, std::shared_ptr<WeightSource>> shared;
  for (auto& [component, p] : plans)
    shared[component] =
        std::make_shared<PreparedWeightSource>(p.source, DType::F32, std::move(p.slots), block, buffer);
  if (world.rank() == 0)
    log::info("weights: one copy per node in shared memory (" + gib(end) + ", read and converted by each node's first rank" +
              (backend->device() == Device::CPU ? "" : ", uploaded from there by each GPU rank") +
              "; --no-shared-weights: one read per rank)");
  return model.with_weights(std::move(shared));
}

}  // namespace sdmpi::app
