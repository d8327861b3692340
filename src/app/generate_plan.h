// sd_mpi generate, step 2 of 3: what the job is. From the options, rank 0 reads the prompts,
// expands them into work items with their seeds and sizes, picks this shard's block, opens the
// outputs (resuming them when asked) and shares the items still to make with every rank; every
// rank opens the model. Binding a device and loading the weights onto it is generate_run's job.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/generate_options.h"
#include "app/output_sink.h"
#include "sdmpi/cluster.h"
#include "sdmpi/dtype.h"
#include "sdmpi/pipeline.h"

namespace sdmpi::app {

struct GeneratePlan {
  DType precision = DType::F32;      // this rank's compute dtype (--precision for its device)
  std::optional<ModelSource> model;  // opened on every rank
  std::vector<WorkItem> items;       // still to make, in global-index order: the same on every rank
  OutputFormat format;               // how every rank encodes its finished images
  std::unique_ptr<OutputSink> sink;  // rank 0's outputs; nullptr on the other ranks
};

// The resource plan (src/pipeline/memory_plan.h) of `items` in batches of options.batch_size at
// `precision`, on a GPU or the CPU, against `available` bytes (-1: unknown, nothing checked);
// `where` says whose memory that is. Throws InputError "<request> needs about N GiB per rank
// (weights X + activations Y); this rank has Z GiB ..." when the job cannot fit.
void check_memory_plan(const GenerateOptions& options, const ModelSource& model, const std::vector<WorkItem>& items,
                       DType precision, bool gpu, int64_t available, const std::string& where);

// Plans the job on every rank. Returns 0 with *plan filled, or the exit code every rank returns
// (its error printed once). Collective.
int plan_generate(const World& world, const GenerateOptions& options, GeneratePlan* plan);

}  // namespace sdmpi::app
