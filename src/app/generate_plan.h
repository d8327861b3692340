// sd_mpi generate, step 2 of 3: what the job is. From the options, rank 0 reads the prompts,
// expands them into work items with their seeds and sizes, picks this shard's block, opens the
// outputs (resuming them when asked) and shares the items still to make with every rank; every
// rank opens the model and binds its device (the resource plan is checked before any output is
// made). Loading the weights onto the device is generate_run's job.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/generate_options.h"
#include "app/output_sink.h"
#include "sdmpi/backend.h"
#include "sdmpi/cluster.h"
#include "sdmpi/dtype.h"
#include "sdmpi/pipeline.h"

namespace sdmpi::app {

struct GeneratePlan {
  DType precision = DType::F32;      // this rank's compute dtype (--precision for its device)
  std::optional<ModelSource> model;  // opened on every rank
  std::optional<ModelSource> refiner;  // --refiner, opened on every rank; loaded with the model
  std::vector<WorkItem> items;       // still to make, in global-index order: the same on every rank
  OutputFormat format;               // how every rank encodes its finished images
  std::unique_ptr<OutputSink> sink;  // rank 0's outputs; nullptr on the other ranks
  std::unique_ptr<Backend> backend;  // this rank's device, bound and checked against the resource
                                     // plan before any output was made; nullptr for an empty shard
};

// Plans the job on every rank, in three agreed phases so that a refusal leaves no output behind:
// rank 0 makes the items and checks the node's RAM when the ranks compute on the CPU; every rank
// binds its device and checks a GPU's free memory (src/pipeline/memory_plan.h: one line "<request>
// needs about N GiB per rank (weights X + activations Y); this rank has Z GiB ...", exit 2); then
// rank 0 opens the outputs. Returns 0 with *plan filled, or the exit code every rank returns (its
// error printed once). Collective.
int plan_generate(const World& world, const GenerateOptions& options, GeneratePlan* plan);

}  // namespace sdmpi::app
