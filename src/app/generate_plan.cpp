// The plan of a generate job (see generate_plan.h). Rank 0 alone reads files (the prompts, the
// archive, the weights for their hash) and decides; the other ranks take its items as JSON, so
// every rank runs exactly the same list.
#include "app/generate_plan.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "app/device.h"
#include "pipeline/demo_model.h"
#include "pipeline/memory_plan.h"
#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/log.h"
#include "sdmpi/lora.h"
#include "sdmpi/prompts.h"
#include "sdmpi/prompt_weighting.h"
#include "sdmpi/scheduler.h"

namespace sdmpi::app {
namespace fs = std::filesystem;

namespace {

// An item as it enters the job's fingerprint: changing this changes every archive's identity, so
// --resume of an existing archive would refuse it. Parameters added later (guidance_rescale,
// prompt_weighting) enter only where they differ from their default, so earlier archives keep
// their identity.
nlohmann::json fingerprint_json(const WorkItem& it) {
  const GenerationParams& p = it.params;
  nlohmann::json j = {{"index", it.index}, {"prompt", p.prompt}, {"negative_prompt", p.negative_prompt},
                      {"seed", p.seed}, {"steps", p.steps}, {"guidance", p.guidance}, {"width", p.width},
                      {"height", p.height}, {"sampler", p.sampler}, {"schedule", p.schedule}, {"eta", p.eta},
                      {"clip_skip", p.clip_skip}};
  if (p.guidance_rescale != 0.0f) j["guidance_rescale"] = p.guidance_rescale;
  if (p.prompt_weighting != "none") j["prompt_weighting"] = p.prompt_weighting;
  const std::vector<int> micro{p.original_width, p.original_height, p.crop_top, p.crop_left, p.target_width, p.target_height};
  if (std::any_of(micro.begin(), micro.end(), [](int v) { return v != 0; }))  // SDXL micro-conditioning, 0 = default
    j["micro_conditioning"] = micro;
  if (p.img2img()) {  // the init image by content: a moved file is the same job
    j["init_image_sha256"] = p.init_image_sha256;
    j["strength"] = p.strength;
  }
  // The refiner (its weights enter the job's identity beside the model's) and its conditioning,
  // where they differ from the defaults.
  if (p.refiner_start != 0.0f) j["refiner_start"] = p.refiner_start;
  if (p.aesthetic_score != GenerationParams{}.aesthetic_score) j["aesthetic_score"] = p.aesthetic_score;
  if (p.negative_aesthetic_score != GenerationParams{}.negative_aesthetic_score)
    j["negative_aesthetic_score"] = p.negative_aesthetic_score;
  if (!p.loras.empty()) {  // LoRAs by content and scale, in merge order
    nlohmann::json loras = nlohmann::json::array();
    for (const ItemLora& l : p.loras) loras.push_back({{"sha256", l.sha256}, {"scale", l.scale}});
    j["loras"] = loras;
  }
  return j;
}

// An item as rank 0 sends it to the others: every field (floats survive the round trip exactly,
// float → double → text → double → float).
nlohmann::json item_to_json(const WorkItem& it) {
  nlohmann::json j = fingerprint_json(it);
  j["prompt_index"] = it.prompt_index;
  j["sample"] = it.sample;
  if (!it.params.init_image.empty()) j["init_image"] = it.params.init_image;
  if (!it.params.loras.empty()) {
    nlohmann::json paths = nlohmann::json::array();
    for (const ItemLora& l : it.params.loras) paths.push_back(l.path);
    j["lora_paths"] = paths;
  }
  return j;
}

WorkItem item_from_json(const nlohmann::json& j) {
  WorkItem it;
  it.index = j.at("index");
  it.prompt_index = j.at("prompt_index");
  it.sample = j.at("sample");
  GenerationParams& p = it.params;
  p.prompt = j.at("prompt");
  p.negative_prompt = j.at("negative_prompt");
  p.seed = j.at("seed");
  p.steps = j.at("steps");
  p.guidance = j.at("guidance");
  p.width = j.at("width");
  p.height = j.at("height");
  p.sampler = j.at("sampler");
  p.schedule = j.at("schedule");
  p.eta = j.at("eta");
  p.clip_skip = j.at("clip_skip");
  p.guidance_rescale = j.value("guidance_rescale", 0.0f);
  p.prompt_weighting = j.value("prompt_weighting", std::string("none"));
  p.init_image = j.value("init_image", std::string());
  p.init_image_sha256 = j.value("init_image_sha256", std::string());
  p.strength = j.value("strength", GenerationParams{}.strength);
  p.refiner_start = j.value("refiner_start", 0.0f);
  p.aesthetic_score = j.value("aesthetic_score", GenerationParams{}.aesthetic_score);
  p.negative_aesthetic_score = j.value("negative_aesthetic_score", GenerationParams{}.negative_aesthetic_score);
  if (j.contains("loras")) {
    const auto& loras = j.at("loras");
    const auto& paths = j.at("lora_paths");
    for (size_t i = 0; i < loras.size(); ++i)
      p.loras.push_back({paths.at(i).get<std::string>(), loras[i].at("scale").get<float>(), loras[i].at("sha256").get<std::string>()});
  }
  if (j.contains("micro_conditioning")) {
    const std::vector<int> m = j.at("micro_conditioning").get<std::vector<int>>();
    if (m.size() == 6) {
      p.original_width = m[0], p.original_height = m[1], p.crop_top = m[2], p.crop_left = m[3];
      p.target_width = m[4], p.target_height = m[5];
    }
  }
  return it;
}

std::vector<PromptRecord> job_prompts(const GenerateOptions& o) {
  if (!o.prompts_file.empty()) return read_prompt_file(o.prompts_file);
  std::vector<PromptRecord> records;
  for (size_t i = 0; i < o.prompts.size(); ++i) {
    PromptRecord r;
    r.prompt = o.prompts[i];
    r.origin = "--prompt #" + std::to_string(i + 1);
    records.push_back(r);
  }
  return records;
}

uint64_t job_base_seed(const GenerateOptions& o) {
  if (o.seed >= 0) return static_cast<uint64_t>(o.seed);
  uint64_t seed = std::random_device{}() % 4294967296ull;
  log::info("random base seed: " + std::to_string(seed));
  return seed;
}

// The command line's parameters for items whose prompt sets none; the size defaults to the
// model's (unet sample_size × the VAE's downscale factor, 2^(levels-1)).
GenerationParams job_defaults(const GenerateOptions& o, const ModelSource& model) {
  nlohmann::json unet_cfg = model.config("unet"), vae_cfg = model.config("vae"), sched_cfg = model.config("scheduler");
  int vae_scale = 1 << (static_cast<int>(vae_cfg.value("block_out_channels", std::vector<int>{1, 1, 1, 1}).size()) - 1);
  int sample_size = unet_cfg.value("sample_size", 64);
  GenerationParams defaults;
  defaults.negative_prompt = o.negative_prompt;
  // Unset on the command line (0, NaN, "default"): the model's own (sampling_defaults).
  const SamplingDefaults model_defaults = sampling_defaults(model);
  defaults.steps = o.steps > 0 ? o.steps : model_defaults.steps;
  defaults.guidance = !std::isnan(o.guidance) ? o.guidance : model_defaults.guidance;
  defaults.width = o.width ? o.width : sample_size * vae_scale;
  defaults.height = o.height ? o.height : sample_size * vae_scale;
  defaults.sampler = o.sampler != "default"          ? o.sampler
                     : !model_defaults.sampler.empty() ? model_defaults.sampler
                                                       : default_sampler(sched_cfg);
  defaults.schedule = o.schedule;
  defaults.eta = o.eta;
  defaults.clip_skip = o.clip_skip;
  defaults.guidance_rescale = o.guidance_rescale;
  defaults.prompt_weighting = o.prompt_weighting;
  defaults.init_image = o.init_image;
  defaults.strength = o.strength;
  defaults.refiner_start = o.refiner.empty() ? 0.0f : o.refiner_start;
  defaults.aesthetic_score = o.aesthetic_score;
  defaults.negative_aesthetic_score = o.negative_aesthetic_score;
  for (const std::string& text : o.loras) {
    const LoraSpec spec = parse_lora_spec(text, "--lora");
    defaults.loras.push_back({fs::absolute(spec.path).lexically_normal().string(), spec.scale, ""});
  }
  const MicroConditioning micro = micro_conditioning(o);
  defaults.original_width = micro.original_width, defaults.original_height = micro.original_height;
  defaults.crop_top = micro.crop_top, defaults.crop_left = micro.crop_left;
  defaults.target_width = micro.target_width, defaults.target_height = micro.target_height;
  return defaults;
}

// LoRAs: the prompt's <lora:NAME:scale> tags (removed from the text, as A1111 does) join the item's
// list as --lora-dir/NAME.safetensors; each distinct file is hashed once (A1111's LoRA hash, which
// the outputs record and the job's identity uses). Missing files fail here, naming the item.
void resolve_loras(std::vector<WorkItem>& items, const std::string& lora_dir) {
  std::map<std::string, std::string> hashes;  // absolute path → hash
  for (WorkItem& it : items) {
    const std::string where = "item " + std::to_string(it.index) + " (prompt " + std::to_string(it.prompt_index + 1) + ")";
    for (const auto& [name, scale] : extract_lora_tags(it.params.prompt, where)) {
      if (lora_dir.empty()) throw InputError(where + ": the prompt's <lora:" + name + "> needs --lora-dir");
      it.params.loras.push_back({(fs::path(lora_dir) / (name + ".safetensors")).string(), scale, ""});
    }
    for (ItemLora& l : it.params.loras) {
      l.path = fs::absolute(l.path).lexically_normal().string();
      auto known = hashes.find(l.path);
      if (known == hashes.end()) {
        std::error_code ec;
        if (!fs::is_regular_file(l.path, ec)) throw InputError(where + ": LoRA file " + l.path + " does not exist");
        known = hashes.emplace(l.path, lora_file_hash(l.path)).first;
      }
      l.sha256 = known->second;
    }
  }
}

// Every item of the job, with canonical sampler names: an unknown sampler fails here, before any
// work starts.
std::vector<WorkItem> job_items(const std::vector<PromptRecord>& records, const GenerateOptions& o, uint64_t base_seed,
                                const GenerationParams& defaults) {
  std::vector<WorkItem> items = expand_job(records, o.images_per_prompt, base_seed, defaults);
  // img2img: each init image read once here (decodes, its size becomes the item's, its hash is recorded).
  resolve_init_images(items, records, o.width, o.height);
  resolve_loras(items, o.lora_dir);
  for (WorkItem& it : items) {
    SamplerChoice choice;
    try {
      choice = parse_sampler(it.params.sampler, it.params.schedule);
    } catch (const InputError& e) {
      throw InputError("item " + std::to_string(it.index) + " (prompt " + std::to_string(it.prompt_index + 1) + "): " + e.what());
    }
    it.params.sampler = choice.name;
    it.params.schedule = choice.karras ? "karras" : "default";
    // A1111 prompt weighting: a weight that is not a number ("(cat:1.2.3)") is refused here, once
    // per prompt, not when its batch is encoded.
    if (it.params.prompt_weighting == "a1111" && it.sample == 0) {
      try {
        parse_prompt_attention(it.params.prompt);
        parse_prompt_attention(it.params.negative_prompt);
      } catch (const InputError& e) {
        throw InputError(records.at(static_cast<size_t>(it.prompt_index)).origin + ": " + e.what());
      }
    }
  }
  return items;
}

std::vector<WorkItem> shard_items(const std::vector<WorkItem>& all, const Shard& shard) {
  auto [begin, end] = split_block(static_cast<int64_t>(all.size()), shard.count, shard.index);
  std::vector<WorkItem> items(all.begin() + begin, all.begin() + end);
  std::string name = std::to_string(shard.index) + "/" + std::to_string(shard.count);
  if (shard.count > 1 && !items.empty())
    log::info("shard " + name + ": items " + std::to_string(begin) + ".." + std::to_string(end - 1) + " of " +
              std::to_string(all.size()));
  if (items.empty())
    log::warn("shard " + name + " holds no items (the job has " + std::to_string(all.size()) + "); writing an empty result");
  return items;
}

void check_writable_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("cannot create output folder " + dir + ": " + ec.message());
  std::string probe = (fs::path(dir) / (".sd_mpi_write_test." + std::to_string(getpid()))).string();
  FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) throw InputError("output folder " + dir + " is not writable: " + std::strerror(errno));
  std::fclose(f);
  std::remove(probe.c_str());
}

// The outputs' description of the job: what the archive records, and the fingerprint that
// --resume checks (the weights, the precision and every item of the whole job, all shards).
OutputSink::Setup output_setup(const World& world, const GenerateOptions& o, const GeneratePlan& plan,
                               uint64_t base_seed, const std::vector<WorkItem>& all_items, const Shard& shard) {
  std::string weights = plan.model->weights_hash();
  nlohmann::json config = {{"model", o.model}, {"model_family", plan.model->family()}, {"variant", o.variant},
                           {"weights_sha256", weights},
                           {"precision", dtype_name(plan.precision)}, {"images_per_prompt", o.images_per_prompt},
                           {"base_seed", base_seed}, {"prompts_file", o.prompts_file}, {"total_items", all_items.size()},
                           {"shard", std::to_string(shard.index) + "/" + std::to_string(shard.count)},
                           {"world_size", world.size()}, {"batch_size", o.batch_size}, {"device", o.device}};
  nlohmann::json identity = {{"weights", weights}, {"precision", dtype_name(plan.precision)}, {"items", nlohmann::json::array()}};
  OutputSink::Setup setup;
  if (plan.refiner) {  // the second stage's model: recorded, and part of the job's identity
    const std::string refiner_weights = plan.refiner->weights_hash();
    config["refiner"] = o.refiner;
    config["refiner_family"] = plan.refiner->family();
    config["refiner_weights_sha256"] = refiner_weights;
    identity["refiner_weights"] = refiner_weights;
    const bool hex = !refiner_weights.empty() && refiner_weights.find(':') == std::string::npos;
    setup.refiner = plan.refiner->name() + (hex ? " [" + refiner_weights.substr(0, 10) + "]" : "");
  }
  for (const WorkItem& it : all_items) identity["items"].push_back(fingerprint_json(it));
  setup.archive_path = o.archive;
  setup.out_dir = o.out_dir;
  setup.resume = o.resume;
  setup.overwrite = o.overwrite;
  setup.model_spec = o.model;
  setup.model_name = plan.model->name();
  setup.model_family = plan.model->family();
  setup.weights_hash = weights;
  setup.config_json = config.dump();
  setup.fingerprint = hex64(fnv1a64(identity.dump()));
  setup.world_size = world.size();
  setup.shard_index = shard.index;
  setup.shard_count = shard.count;
  setup.total_items = static_cast<int64_t>(all_items.size());
  return setup;
}

// What the resource plan (src/pipeline/memory_plan.h) compares with a rank's memory: the largest image and guidance of any
// item, and how many items (the largest batch is min(--batch-size, items)). Shared with every rank
// as JSON, so the ranks check their devices without receiving the items themselves.
struct JobSize {
  int width = 0, height = 0;
  bool cfg = false;
  int64_t items = 0;
  bool init_images = false;  // some item is img2img: the VAE encoder is loaded
  int64_t lora_bytes = 0;    // merging the largest LoRA set (lora_merge_bytes), host memory
  nlohmann::json to_json() const {
    return {{"width", width}, {"height", height}, {"cfg", cfg}, {"items", items}, {"init_images", init_images},
            {"lora_bytes", lora_bytes}};
  }
  static JobSize from_json(const nlohmann::json& j) {
    return JobSize{j.at("width").get<int>(), j.at("height").get<int>(), j.at("cfg").get<bool>(),
                   j.at("items").get<int64_t>(), j.at("init_images").get<bool>(), j.at("lora_bytes").get<int64_t>()};
  }
};

JobSize job_size(const std::vector<WorkItem>& items) {
  JobSize size;
  size.items = static_cast<int64_t>(items.size());
  for (const WorkItem& it : items) {
    size.width = std::max(size.width, it.params.width);
    size.height = std::max(size.height, it.params.height);
    size.cfg = size.cfg || it.params.guidance > 1.0f;
    size.init_images = size.init_images || it.params.img2img();
  }
  return size;
}

// The resource plan of a job of `size` in batches of --batch-size at `precision`, on a GPU or the
// CPU, against `available` bytes (-1: unknown, nothing checked); `where` says whose memory that is.
// Throws InputError "<request> needs about N GiB per rank (weights X + activations Y); this rank
// has Z GiB ..." when the job cannot fit.
// `weight_sharers`: ranks holding one copy of the model's weights between them (node-shared
// weights), each counting its share; merged LoRA copies stay each rank's own.
// job_memory_need: the estimate alone; *what (optional) gets the request's description.
MemoryNeed job_memory_need(const GenerateOptions& o, const ModelSource& model, const JobSize& size, DType precision,
                           bool gpu, const ModelSource* refiner, int weight_sharers, std::string* what_out) {
  MemoryRequest request;
  request.width = size.width;
  request.height = size.height;
  request.cfg = size.cfg;
  request.batch = static_cast<int>(std::min<int64_t>(o.batch_size, size.items));
  request.dtype = precision;
  request.gpu = gpu;
  request.init_images = size.init_images;
  request.lora_bytes = gpu ? 0 : size.lora_bytes;  // merged copies live on the host
  std::string what = std::to_string(request.width) + "x" + std::to_string(request.height) + " images, batch " +
                     std::to_string(request.batch) + (request.cfg ? " (x2 for guidance)" : "") + ", " +
                     dtype_name(precision) + (gpu ? " on the GPU" : " on the CPU") +
                     (request.init_images ? ", init images" : "") + (request.lora_bytes > 0 ? ", LoRA merged" : "");
  MemoryNeed need = estimate_memory(model, request);
  if (refiner) {  // both models stay loaded for the job; one runs at a time
    MemoryRequest refiner_request = request;
    refiner_request.lora_bytes = 0;  // LoRAs merge into the base model only (generate_run.cpp)
    const MemoryNeed second = estimate_memory(*refiner, refiner_request);
    need.weight_bytes += second.weight_bytes;
    need.activation_bytes = std::max(need.activation_bytes, second.activation_bytes);
    what += ", with the refiner";
  }
  if (weight_sharers > 1) {
    const int64_t model_weights = need.weight_bytes - request.lora_bytes;
    need.weight_bytes = (model_weights + weight_sharers - 1) / weight_sharers + request.lora_bytes;
    what += ", weights shared by " + std::to_string(weight_sharers) + " ranks";
  }
  if (what_out) *what_out = what;
  return need;
}

void check_job_size(const GenerateOptions& o, const ModelSource& model, const JobSize& size, DType precision, bool gpu,
                    int64_t available, const std::string& where, const ModelSource* refiner = nullptr,
                    int weight_sharers = 1) {
  if (size.items == 0) return;
  std::string what;
  const MemoryNeed need = job_memory_need(o, model, size, precision, gpu, refiner, weight_sharers, &what);
  std::string shortfall = memory_shortfall(what, need, available, where);
  if (!shortfall.empty()) throw InputError(shortfall);
}

// Several CPU ranks on a node hold one copy of the weights in shared memory (src/app/
// shared_weights.h) unless --no-shared-weights: each counts its share of it.
int cpu_weight_sharers(const World& world, const GenerateOptions& o) {
  const int ranks = std::max(1, world.info().local_size);
  return ranks > 1 && !o.no_shared_weights ? ranks : 1;
}

// What a CPU rank may keep Winograd's transformed weights in (src/backend/cpu/cpu_memory.h): half
// of what its share of the node's available memory leaves beyond the resource plan's estimate
// (itself an upper bound), so the copies never make a job that fits not fit. -1: unknown (the
// backend then decides from the memory it sees).
// A CPU rank's share of the node's available memory (-1: unknown).
int64_t host_memory_per_rank(const World& world) {
  const int64_t available = host_memory_available();
  return available < 0 ? -1 : available / std::max(1, world.info().local_size);
}

int64_t cpu_winograd_budget(const World& world, const GenerateOptions& o, const GeneratePlan& plan,
                            const JobSize& size) {
  const int64_t available = host_memory_per_rank(world);
  if (available < 0 || size.items == 0) return -1;
  const ModelSource* refiner = plan.refiner ? &*plan.refiner : nullptr;
  const MemoryNeed need =
      job_memory_need(o, *plan.model, size, plan.precision, false, refiner, cpu_weight_sharers(world, o), nullptr);
  return std::max<int64_t>(0, (available - need.total()) / 2);
}

// The resource plan against this node's RAM, before anything is written, when the ranks compute
// on the CPU (a GPU's memory is checked once each rank has bound its device, in bind_device).
void check_host_memory(const World& world, const GenerateOptions& o, const GeneratePlan& plan,
                       const std::vector<WorkItem>& items, int64_t lora_bytes) {
  if (o.device != "cpu" && probe_cuda().usable()) return;
  const int ranks = std::max(1, world.info().local_size);
  const int64_t available = host_memory_per_rank(world);
  JobSize size = job_size(items);
  size.lora_bytes = lora_bytes;
  const int sharers = cpu_weight_sharers(world, o);
  check_job_size(o, *plan.model, size, plan.precision, false, available,
                 "(available memory of " + world.info().host + " shared by " + std::to_string(ranks) + " rank(s))",
                 plan.refiner ? &*plan.refiner : nullptr, sharers);
}

// Each distinct LoRA file read once against the model's UNet and text encoders, so unknown keys and
// misfit shapes fail before any output is made (the workers read them again when they merge).
// Returns what merging the largest LoRA set of `items` holds (lora_merge_bytes; 0 without LoRAs).
int64_t check_loras_fit(const ModelSource& model, const std::vector<WorkItem>& items) {
  std::map<std::string, LoraFile> files;  // by path; only the shapes are kept
  std::map<std::string, std::shared_ptr<WeightSource>> sources;
  std::map<std::string, const WeightSource*> targets;
  int64_t largest = 0;
  std::set<std::string> sets;
  for (const WorkItem& it : items) {
    std::vector<const LoraFile*> set;
    for (const ItemLora& l : it.params.loras) {
      auto file = files.find(l.path);
      if (file == files.end()) {
        if (targets.empty())
          for (const char* c : {"unet", "text_encoder", "text_encoder_2"})
            if (model.has(c)) targets[c] = (sources[c] = model.weights(c)).get();
        LoraFile read = read_lora(l.path, targets);
        for (LoraLayer& layer : read.layers) {  // lora_merge_bytes needs the shapes only
          std::vector<float>().swap(layer.down);
          std::vector<float>().swap(layer.up);
        }
        file = files.emplace(l.path, std::move(read)).first;
      }
      set.push_back(&file->second);
    }
    if (!set.empty() && sets.insert(lora_set_key(it.params.loras)).second) largest = std::max(largest, lora_merge_bytes(set));
  }
  return largest;
}

// SDXL refiners (src/pipeline/txt2img.cpp): one given as --model runs img2img only, so every item
// needs an init image; --refiner needs an SDXL base as --model and an SDXL model (a refiner, or a
// base) as the second stage.
void check_refiner_use(const GenerateOptions& o, const GeneratePlan& plan, const std::vector<WorkItem>& items) {
  const std::string family = plan.model->family();
  if (family == "SDXL refiner")
    for (const WorkItem& it : items)
      if (!it.params.img2img())
        throw InputError("item " + std::to_string(it.index) + " (prompt " + std::to_string(it.prompt_index + 1) +
                         "): " + o.model + " is an SDXL refiner, which runs img2img only: give an init image "
                         "(--init-image, JSONL init_image), or use it as --refiner with an SDXL base model");
  if (!plan.refiner) return;
  if (family != "SDXL")
    throw InputError("--refiner " + o.refiner + ": the base model " + o.model + " is " + family +
                     "; the refiner stage follows an SDXL base model");
  const std::string second = plan.refiner->family();
  if (second != "SDXL refiner" && second != "SDXL")
    throw InputError("--refiner " + o.refiner + " is " + second + ", not an SDXL refiner (or SDXL model)");
}

// What rank 0 decided in the first phase and needs again when it opens the outputs.
struct RootJob {
  uint64_t base_seed = 0;
  std::vector<WorkItem> all_items;  // the whole job, every shard
  Shard shard;
  std::vector<WorkItem> in_shard;  // this shard's items, before --resume skips any
};

// Rank 0's first part: reads the prompts and the model, makes the items, checks the CPU's memory.
// Writes nothing. Returns the size of this shard's job for every rank.
nlohmann::json plan_items_on_root(const World& world, const GenerateOptions& o, GeneratePlan* plan, RootJob* job) {
  std::vector<PromptRecord> records = job_prompts(o);
  job->base_seed = job_base_seed(o);
  plan->model = ModelSource::open(o.model, o.variant, o.map_weights);
  if (!o.refiner.empty()) plan->refiner = ModelSource::open(o.refiner, o.variant, o.map_weights);
  job->all_items = job_items(records, o, job->base_seed, job_defaults(o, *plan->model));
  check_refiner_use(o, *plan, job->all_items);
  job->shard = parse_shard(o.shard);
  job->in_shard = shard_items(job->all_items, job->shard);
  const int64_t lora_bytes = check_loras_fit(*plan->model, job->all_items);
  check_host_memory(world, o, *plan, job->all_items, lora_bytes);
  JobSize size = job_size(job->in_shard);
  size.lora_bytes = lora_bytes;
  return size.to_json();
}

// Every rank: its device, bound now, and the resource plan against that device's free memory, so
// that a GPU too small for the job is refused before rank 0 creates any output (a CPU rank was
// checked against the node's RAM in plan_items_on_root). Nothing to bind for an empty shard. The
// line naming the device goes to *device_line, logged once the outputs are open.
void bind_device(const World& world, const GenerateOptions& o, const JobSize& size, GeneratePlan* plan,
                 std::string* device_line) {
  if (size.items == 0) return;
  plan->backend = select_backend(o.device, plan->precision, world.info(), o.allow_gpu_sharing, o.threads,
                                 cpu_winograd_budget(world, o, *plan, size), device_line);
  if (plan->backend->device() != Device::CPU)
    check_job_size(o, *plan->model, size, plan->precision, true, plan->backend->memory_available(),
                   "(free memory of " + plan->backend->name() + ")", plan->refiner ? &*plan->refiner : nullptr);
}

// Rank 0's second part, once every rank's device has passed: opens the outputs (creating or
// resuming them), fills plan->sink, ->items and ->format and returns what the other ranks need.
nlohmann::json open_outputs_on_root(const World& world, const GenerateOptions& o, GeneratePlan* plan,
                                    const RootJob& job) {
  OutputSink::Setup setup = output_setup(world, o, *plan, job.base_seed, job.all_items, job.shard);
  if (!o.out_dir.empty()) check_writable_dir(o.out_dir);
  plan->sink = std::make_unique<OutputSink>(setup, job.in_shard);
  plan->format = plan->sink->format();
  std::set<int64_t> todo(plan->sink->todo().begin(), plan->sink->todo().end());
  for (const WorkItem& it : job.in_shard)
    if (todo.count(it.index)) plan->items.push_back(it);
  if (plan->items.size() < job.in_shard.size())
    log::info("resume: " + std::to_string(job.in_shard.size() - plan->items.size()) + " of " +
              std::to_string(job.in_shard.size()) + " images already finished; making the other " +
              std::to_string(plan->items.size()));

  nlohmann::json shared = {{"format", plan->format.to_json()}, {"items", nlohmann::json::array()}};
  for (const WorkItem& it : plan->items) shared["items"].push_back(item_to_json(it));
  return shared;
}

}  // namespace

int plan_generate(const World& world, const GenerateOptions& o, GeneratePlan* plan) {
  // Three phases, each agreed by every rank, so that a refusal in any of them leaves no output
  // behind: the items (and the CPU's memory), every rank's device (and its memory), the outputs.
  RootJob job;
  JobSize size;
  int code = agree(world, [&] {
    validate_generate_options(o);
    plan->precision = resolve_precision(o.precision, o.device);
    std::string shared_text = on_root(world, [&] { return plan_items_on_root(world, o, plan, &job).dump(); });
    size = JobSize::from_json(nlohmann::json::parse(shared_text));
    if (world.rank() != 0) plan->model = ModelSource::open(o.model, o.variant, o.map_weights);
    if (world.rank() != 0 && !o.refiner.empty()) plan->refiner = ModelSource::open(o.refiner, o.variant, o.map_weights);
  });
  if (code) return code;
  std::string device_line;
  if ((code = agree(world, [&] { bind_device(world, o, size, plan, &device_line); })) != 0) return code;
  code = agree(world, [&] {
    std::string shared_text = on_root(world, [&] { return open_outputs_on_root(world, o, plan, job).dump(); });
    if (world.rank() == 0) return;
    nlohmann::json shared = nlohmann::json::parse(shared_text);
    plan->format = OutputFormat::from_json(shared.at("format"));
    for (const nlohmann::json& j : shared.at("items")) plan->items.push_back(item_from_json(j));
  });
  if (code) return code;
  // Said once the job has its outputs, so an error before is the only line: where the PNG files
  // go (first), then each rank's device.
  if (o.out_dir_defaulted && world.rank() == 0)
    log::info(std::string("sd_mpi: writing PNG files to ./") + kDefaultOutDir + "/ (give --out-dir or --archive to choose)");
  if (!device_line.empty()) log::info(device_line);
  return 0;
}

}  // namespace sdmpi::app
