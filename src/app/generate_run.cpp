// Running a planned generate job (see generate_run.h). The batch generator given to run_job is
// the pipeline plus the output encoding, so generating ranks hand rank 0 finished PNG files and
// archive rows.
#include "app/generate_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>

#include "app/shared_weights.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "pipeline/lora_model.h"
#include "sdmpi/pipeline.h"

namespace sdmpi::app {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The pipeline for a batch's LoRA set (batches never mix sets, and make_batches puts a set's
// batches together). One pipeline lives at a time, so a device holds one copy of the weights: the
// plain model's, or the model with the set merged (src/pipeline/lora_model.h); a batch of another
// set replaces it.
// --refiner: the second stage's pipeline, loaded once and kept for the job (LoRAs apply to the
// base model only), handed to every pipeline made here.
struct PipelineForBatch {
  std::optional<ModelSource> model;
  Backend* backend = nullptr;
  std::unique_ptr<Txt2ImgPipeline> refiner;
  std::unique_ptr<Txt2ImgPipeline> current;
  std::string lora_key;  // current's set ("" = the plain model)

  Txt2ImgPipeline& get(const std::vector<WorkItem>& batch) {
    const std::vector<ItemLora>& loras = batch.front().params.loras;
    const std::string key = lora_set_key(loras);
    if (!current || key != lora_key) {
      current.reset();  // its weights (and merged copies) go before the next set's are made
      std::vector<LoraSpec> specs;
      for (const ItemLora& l : loras) specs.push_back({l.path, l.scale});
      current = std::make_unique<Txt2ImgPipeline>(with_loras(*model, specs), *backend);
      current->set_refiner(refiner.get());
      lora_key = key;
    }
    return *current;
  }
};

// The pipeline as run_job's BatchGenerator: images of one batch, timed and encoded.
BatchGenerator batch_generator(PipelineForBatch& pipelines, const OutputFormat& format) {
  return [&pipelines, &format](const std::vector<WorkItem>& batch, const StepCallback& step) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<ImageResult> images;
    try {
      images = pipelines.get(batch).generate(batch, step);
    } catch (const GenerationCancelled&) {
      throw BatchAbandoned();
    }
    double s = seconds_since(t0);
    for (size_t i = 0; i < images.size(); ++i) {
      images[i].seconds = s / static_cast<double>(images.size());
      format.encode(batch[i], images[i]);  // PNG and archive row made here, not on rank 0
    }
    return images;
  };
}

int exit_code_of(const RunSummary& sum, bool root) {
  if (sum.interrupted) {
    if (root) log::warn("interrupted: finished images are saved; run again with --resume to complete the job");
    return kExitInterrupted;
  }
  if (sum.aborted) return kExitFailure;
  return sum.failed > 0 ? kExitItemsFailed : kExitOk;
}

void log_summary(const RunSummary& sum, const std::vector<WorkItem>& items, const Txt2ImgPipeline* pipeline) {
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

}  // namespace

int run_generate(const World& world, const GenerateOptions& o, GeneratePlan& plan) {
  const bool root = world.rank() == 0;
  // Device and model on every rank (nothing to load when resume left nothing to make).
  std::unique_ptr<Backend> backend;
  PipelineForBatch pipelines;
  int code = agree(world, [&] {
    if (plan.items.empty()) return;
    // Bound, and checked against the resource plan, by plan_generate before any output was made.
    SDMPI_CHECK(plan.backend != nullptr, "a rank with items to make has no device");
    backend = std::move(plan.backend);
    auto t0 = std::chrono::steady_clock::now();
    // One copy of the weights per node for CPU ranks (collective; throws nothing before its end).
    ModelSource model = share_weights_on_node(world, *plan.model, backend.get(), !o.no_shared_weights, o.threads);
    pipelines.model = model;
    pipelines.backend = backend.get();
    if (plan.refiner)
      pipelines.refiner = std::make_unique<Txt2ImgPipeline>(
          share_weights_on_node(world, *plan.refiner, backend.get(), !o.no_shared_weights, o.threads), *backend);
    // The first batch's set (make_batches' order: the smallest key, "" = plain), loaded here so that
    // load errors are agreed on like the model's.
    const WorkItem& first = *std::min_element(plan.items.begin(), plan.items.end(), [](const WorkItem& a, const WorkItem& b) {
      return lora_set_key(a.params.loras) < lora_set_key(b.params.loras);
    });
    pipelines.get({first});
    if (root && plan.refiner) log::info("refiner " + plan.refiner->describe());
    if (root) log::info("model " + plan.model->describe() + " loaded in " + std::to_string(seconds_since(t0)).substr(0, 5) + " s");
  });
  if (code) return code;

  try {
    BatchGenerator generate;
    if (pipelines.current) generate = batch_generator(pipelines, plan.format);
    if (root && !plan.items.empty())
      log::info("generating " + std::to_string(plan.items.size()) + " image(s) on " + std::to_string(world.size()) +
                " rank(s), batch size " + std::to_string(o.batch_size) + ", " + o.distribution + " distribution");
    RunSummary sum = run_job(world, plan.items, o.run_options(), generate, plan.sink.get());
    if (root) {
      plan.sink->close();
      log_summary(sum, plan.items, pipelines.current.get());
    }
    return exit_code_of(sum, root);
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
