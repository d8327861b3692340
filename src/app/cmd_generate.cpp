// sd_mpi generate: the main job. Every rank parses the same command line; rank 0 reads the prompt
// file and the archive and tells the others what to do; each rank binds its device and loads
// the model; the cluster layer runs the items and gathers every image to rank 0's outputs.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "app/commands.h"
#include "app/device.h"
#include "app/output_sink.h"
#include "sdmpi/archive.h"
#include "sdmpi/cluster.h"
#include "sdmpi/hash.h"
#include "sdmpi/log.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/prompts.h"
#include "sdmpi/scheduler.h"
#include "sdmpi/version.h"

namespace sdmpi::app {
namespace fs = std::filesystem;

namespace {

struct GenerateOptions {
  std::string model, variant;
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::string negative_prompt;
  int images_per_prompt = 1;
  int64_t seed = 0;
  int steps = 50;
  float guidance = 7.5f;
  int width = 0, height = 0;  // 0: the model's default size
  std::string sampler = "default", schedule = "default";
  float eta = 0;
  int clip_skip = 0;
  int batch_size = 1;
  std::string device = "auto", precision = "auto";
  int threads = 0;
  std::string out_dir, archive, shard;
  bool resume = false, overwrite = false, fail_fast = false, allow_gpu_sharing = false;
  std::string progress = "auto", distribution = "dynamic";
  bool quiet = false, verbose = false;
};

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
  cli.add_option("--steps", o.steps, "denoising steps")->check(CLI::Range(1, 1000));
  cli.add_option("--guidance", o.guidance, "classifier-free guidance scale (<= 1 skips the unconditional pass)");
  cli.add_option("--width", o.width, "image width in pixels, a multiple of 8 (default: the model's)");
  cli.add_option("--height", o.height, "image height in pixels, a multiple of 8 (default: the model's)");
  cli.add_option("--sampler", o.sampler,
                 "pndm|ddim|euler|euler_a|dpm++2m|lcm or an AUTOMATIC1111 name (\"Euler a\", \"DPM++ 2M Karras\"); "
                 "default: the model's scheduler");
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
  cli.add_option("--distribution", o.distribution, "static (contiguous blocks) | dynamic (rank 0 hands out batches)")
      ->check(CLI::IsMember({"static", "dynamic"}));
  cli.add_option("--progress", o.progress, "auto|bar|lines|none (auto: a bar on a terminal, lines in batch logs)")
      ->check(CLI::IsMember({"auto", "bar", "lines", "none"}));
  cli.add_flag("-q,--quiet", o.quiet, "only warnings and errors");
  cli.add_flag("-v,--verbose", o.verbose, "debug messages");
}

// Runs fn on rank 0 and shares its outcome: every rank returns rank 0's value or throws rank
// 0's error (printed by rank 0 only, see cmd_generate's catch).
struct RootError : Error {
  using Error::Error;
};
std::string on_root(const World& world, const std::function<std::string()>& fn) {
  std::string payload;
  if (world.rank() == 0) {
    try {
      payload = "K" + fn();
    } catch (const Error& e) {
      payload = "E" + std::to_string(e.exit_code()) + ":" + e.what();
    } catch (const std::exception& e) {
      payload = "E1:" + std::string(e.what());
    }
  }
  payload = world.broadcast(payload);
  if (payload[0] == 'E') {
    size_t colon = payload.find(':');
    int code = std::atoi(payload.substr(1, colon - 1).c_str());
    std::string msg = payload.substr(colon + 1);
    if (world.rank() == 0) throw Error(msg, code);
    throw RootError(msg, code);
  }
  return payload.substr(1);
}

// Runs a phase on every rank and agrees on its outcome, so one rank's failure never leaves the
// others waiting in a collective. Returns 0 or the worst exit code; prints each distinct failure
// once (rank 0's message, or a failing rank's own when rank 0 succeeded).
int agree(const World& world, const std::function<void()>& phase) {
  int code = 0;
  std::string msg;
  try {
    phase();
  } catch (const RootError& e) {
    code = e.exit_code();  // rank 0 prints it
  } catch (const Error& e) {
    code = e.exit_code();
    msg = e.what();
  } catch (const std::bad_alloc&) {
    code = kExitFailure;
    msg = "out of memory";
  } catch (const std::exception& e) {
    code = kExitFailure;
    msg = e.what();
  }
  int root_code = 0;
  if (world.size() > 1) root_code = std::stoi(world.broadcast(std::to_string(code)));
  int worst = world.max_int(code);
  if (code && !msg.empty() && (world.rank() == 0 || root_code == 0)) std::fprintf(stderr, "sd_mpi: error: %s\n", msg.c_str());
  if (worst && !code && world.rank() == 0) log::error("another rank failed (see its message); stopping");
  return worst;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot open prompt file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
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

nlohmann::json item_json(const WorkItem& it) {
  const GenerationParams& p = it.params;
  return {{"index", it.index}, {"prompt", p.prompt}, {"negative_prompt", p.negative_prompt}, {"seed", p.seed},
          {"steps", p.steps}, {"guidance", p.guidance}, {"width", p.width}, {"height", p.height},
          {"sampler", p.sampler}, {"schedule", p.schedule}, {"eta", p.eta}, {"clip_skip", p.clip_skip}};
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  std::unique_ptr<World> world_holder;
  try {
    world_holder = std::make_unique<World>(&argc, &argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "sd_mpi: error: %s\n", e.what());
    return kExitFailure;
  }
  World& world = *world_holder;
  const bool root = world.rank() == 0;
  install_stop_handlers();

  CLI::App cli{"Generates images from prompts with Stable Diffusion 1.x, on every MPI rank at once.\n"
               "Each item (prompt × image) gets seed base+index and the same image as diffusers whatever the\n"
               "number of ranks, batch size or shard. Examples:\n"
               "  sd_mpi --model tiny --prompt \"a cat\" --steps 4 --out-dir out\n"
               "  mpirun -np 8 sd_mpi --model ./sd15 --prompts prompts.jsonl --archive run.h5 --resume",
               "sd_mpi generate"};
  GenerateOptions o;
  add_options(cli, o);
  if (!root) {  // only rank 0 talks about the command line
    cli.set_help_flag();
  }
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    if (root) cli.exit(e);
    return 0;
  } catch (const CLI::ParseError& e) {
    if (root) std::fprintf(stderr, "sd_mpi: error: %s (see 'sd_mpi generate --help')\n", e.what());
    return kExitUsage;
  }
  if (o.quiet) log::set_level(log::Level::Warn);
  if (o.verbose) log::set_level(log::Level::Debug);

  // ---- phase 1: the job's items (every rank computes the same list from rank 0's bytes) ------------
  std::vector<WorkItem> all_items, shard_items;
  std::optional<ModelSource> model;
  Shard shard;
  uint64_t base_seed = 0;
  DType precision = DType::F32;
  int code = agree(world, [&] {
    if (o.prompts.empty() && o.prompts_file.empty()) throw InputError("give --prompt TEXT or --prompts FILE");
    if (o.out_dir.empty() && o.archive.empty()) throw InputError("nothing to write: give --out-dir DIR and/or --archive FILE.h5");
    if (!o.archive.empty() && !kArchiveSupported) throw InputError("this sd_mpi was built without HDF5: --archive is not available");
    if (!o.out_dir.empty() && !kPngSupported) throw InputError("this sd_mpi was built without libpng: --out-dir is not available");
    if (o.resume && o.overwrite) throw InputError("--resume and --overwrite contradict each other");
    precision = resolve_precision(o.precision, o.device);
    std::vector<PromptRecord> records;
    if (!o.prompts_file.empty()) {
      std::string text = on_root(world, [&] { return read_text_file(o.prompts_file); });
      records = ends_with(o.prompts_file, ".jsonl") ? parse_prompts_jsonl(text, o.prompts_file)
                                                    : parse_prompts_txt(text, o.prompts_file);
      if (records.empty()) throw InputError("prompt file " + o.prompts_file + " holds no prompts");
    } else {
      for (size_t i = 0; i < o.prompts.size(); ++i) {
        PromptRecord r;
        r.prompt = o.prompts[i];
        r.origin = "--prompt #" + std::to_string(i + 1);
        records.push_back(r);
      }
    }
    base_seed = static_cast<uint64_t>(o.seed);
    if (o.seed < 0) {
      base_seed = std::stoull(on_root(world, [] { return std::to_string(std::random_device{}() % 4294967296ull); }));
      if (root) log::info("random base seed: " + std::to_string(base_seed));
    }
    model = ModelSource::open(o.model, o.variant);
    nlohmann::json unet_cfg = model->config("unet"), vae_cfg = model->config("vae"), sched_cfg = model->config("scheduler");
    int vae_scale = 1 << (static_cast<int>(vae_cfg.value("block_out_channels", std::vector<int>{1, 1, 1, 1}).size()) - 1);
    int sample_size = unet_cfg.value("sample_size", 64);
    GenerationParams defaults;
    defaults.negative_prompt = o.negative_prompt;
    defaults.steps = o.steps;
    defaults.guidance = o.guidance;
    defaults.width = o.width ? o.width : sample_size * vae_scale;
    defaults.height = o.height ? o.height : sample_size * vae_scale;
    defaults.sampler = o.sampler == "default" ? default_sampler(sched_cfg) : o.sampler;
    defaults.schedule = o.schedule;
    defaults.eta = o.eta;
    defaults.clip_skip = o.clip_skip;
    all_items = expand_job(records, o.images_per_prompt, base_seed, defaults);
    for (WorkItem& it : all_items) {  // canonical names; an unknown sampler fails here, before any work
      SamplerChoice choice;
      try {
        choice = parse_sampler(it.params.sampler, it.params.schedule);
      } catch (const InputError& e) {
        throw InputError("item " + std::to_string(it.index) + " (prompt " + std::to_string(it.prompt_index + 1) + "): " + e.what());
      }
      it.params.sampler = choice.name;
      it.params.schedule = choice.karras ? "karras" : "default";
    }
    shard = parse_shard(o.shard);
    auto [begin, end] = split_block(static_cast<int64_t>(all_items.size()), shard.count, shard.index);
    shard_items.assign(all_items.begin() + begin, all_items.begin() + end);
    if (root && shard.count > 1 && !shard_items.empty())
      log::info("shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count) + ": items " + std::to_string(begin) +
                ".." + std::to_string(end - 1) + " of " + std::to_string(all_items.size()));
    if (root && shard_items.empty())
      log::warn("shard " + std::to_string(shard.index) + "/" + std::to_string(shard.count) + " holds no items (the job has " +
                std::to_string(all_items.size()) + "); writing an empty result");
  });
  if (code) return code;

  // ---- phase 2: outputs on rank 0 (archive / out-dir, resume) → the items still to make ------------
  std::unique_ptr<OutputSink> sink;
  std::vector<WorkItem> items;
  OutputFormat format;
  code = agree(world, [&] {
    std::string plan_text = on_root(world, [&] {
      std::string weights = model->weights_hash();
      nlohmann::json config = {{"model", o.model}, {"variant", o.variant}, {"weights_sha256", weights},
                               {"precision", dtype_name(precision)}, {"images_per_prompt", o.images_per_prompt},
                               {"base_seed", base_seed}, {"prompts_file", o.prompts_file}, {"total_items", all_items.size()},
                               {"shard", std::to_string(shard.index) + "/" + std::to_string(shard.count)},
                               {"world_size", world.size()}, {"batch_size", o.batch_size}, {"device", o.device}};
      nlohmann::json identity = {{"weights", weights}, {"precision", dtype_name(precision)}, {"items", nlohmann::json::array()}};
      for (const WorkItem& it : all_items) identity["items"].push_back(item_json(it));
      OutputSink::Setup setup;
      setup.archive_path = o.archive;
      setup.out_dir = o.out_dir;
      setup.resume = o.resume;
      setup.overwrite = o.overwrite;
      setup.model_spec = o.model;
      setup.model_name = model->name();
      setup.weights_hash = weights;
      setup.config_json = config.dump();
      setup.fingerprint = hex64(fnv1a64(identity.dump()));
      setup.world_size = world.size();
      setup.shard_index = shard.index;
      setup.shard_count = shard.count;
      setup.total_items = static_cast<int64_t>(all_items.size());
      if (!o.out_dir.empty()) check_writable_dir(o.out_dir);
      sink = std::make_unique<OutputSink>(setup, shard_items);
      nlohmann::json plan = {{"todo", sink->todo()}, {"format", sink->format().to_json()}};
      return plan.dump();
    });
    nlohmann::json plan = nlohmann::json::parse(plan_text);
    format = OutputFormat::from_json(plan["format"]);
    std::set<int64_t> todo_set;
    for (int64_t v : plan["todo"]) todo_set.insert(v);
    for (const WorkItem& it : shard_items)
      if (todo_set.count(it.index)) items.push_back(it);
    if (root && items.size() < shard_items.size())
      log::info("resume: " + std::to_string(shard_items.size() - items.size()) + " of " + std::to_string(shard_items.size()) +
                " images already finished; making the other " + std::to_string(items.size()));
  });
  if (code) return code;

  // ---- phase 3: device and model on every rank ------------------------------------------------------
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Txt2ImgPipeline> pipeline;
  code = agree(world, [&] {
    if (items.empty()) return;
    backend = select_backend(o.device, precision, world.info(), o.allow_gpu_sharing, o.threads);
    auto t0 = std::chrono::steady_clock::now();
    pipeline = std::make_unique<Txt2ImgPipeline>(*model, *backend);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (root) log::info("model " + model->describe() + " loaded in " + std::to_string(s).substr(0, 5) + " s");
  });
  if (code) return code;

  // ---- phase 4: run -----------------------------------------------------------------------------------
  try {
    RunOptions run;
    run.distribution = o.distribution == "static" ? Distribution::Static : Distribution::Dynamic;
    run.batch_size = o.batch_size;
    run.fail_fast = o.fail_fast;
    run.progress = o.progress == "bar" ? ProgressMode::Bar
                   : o.progress == "lines" ? ProgressMode::Lines
                   : o.progress == "none" ? ProgressMode::None
                                          : ProgressMode::Auto;
    BatchGenerator gen = [&](const std::vector<WorkItem>& batch, const StepCallback& step) {
      auto t0 = std::chrono::steady_clock::now();
      std::vector<GeneratedImage> images;
      try {
        images = pipeline->generate(batch, step);
      } catch (const GenerationCancelled&) {
        throw BatchAbandoned();
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::vector<ImageResult> out;
      for (size_t i = 0; i < images.size(); ++i) {
        GeneratedImage& g = images[i];
        ImageResult r;
        r.ok = g.ok;
        r.error = g.error;
        r.width = g.width;
        r.height = g.height;
        r.rgb = std::move(g.rgb);
        r.seconds = s / static_cast<double>(images.size());
        format.encode(batch[i], r);  // PNG and archive row made here, not on rank 0
        out.push_back(std::move(r));
      }
      return out;
    };
    if (root && !items.empty())
      log::info("generating " + std::to_string(items.size()) + " image(s) on " + std::to_string(world.size()) +
                " rank(s), batch size " + std::to_string(o.batch_size) + ", " + o.distribution + " distribution");
    RunSummary sum = run_job(world, items, run, gen, sink.get());
    if (root) {
      sink->close();
      if (!items.empty())
        log::info("done: " + std::to_string(sum.done) + " image(s), " + std::to_string(sum.failed) + " failed, in " +
                  std::to_string(sum.seconds).substr(0, 6) + " s" +
                  (sum.done > 0 ? " (" + std::to_string(sum.seconds / static_cast<double>(sum.done)).substr(0, 6) + " s/image)" : ""));
      if (pipeline) {
        const auto& t = pipeline->timings();
        log::debug("rank 0 time: text " + std::to_string(t.text) + " s, unet " + std::to_string(t.unet) + " s, vae " +
                   std::to_string(t.vae) + " s");
      }
    }
    if (sum.interrupted) {
      if (root) log::warn("interrupted: finished images are saved; run again with --resume to complete the job");
      return kExitInterrupted;
    }
    if (sum.aborted) return kExitFailure;
    return sum.failed > 0 ? kExitItemsFailed : kExitOk;
  } catch (const Error& e) {
    std::fprintf(stderr, "sd_mpi: error: %s\n", e.what());
    if (world.size() > 1) world.abort(e.exit_code());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sd_mpi: error: %s\n", e.what());
    if (world.size() > 1) world.abort(kExitFailure);
    return kExitFailure;
  }
}

}  // namespace sdmpi::app
