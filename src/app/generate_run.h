// sd_mpi generate, step 3 of 3: every rank binds its device and loads the pipeline, then the
// cluster layer's run_job makes the planned items and rank 0 writes them; the exit code says how
// it went (0, items failed, interrupted, failure).
#pragma once

#include "app/generate_options.h"
#include "app/generate_plan.h"
#include "sdmpi/cluster.h"

namespace sdmpi::app {

// Returns the exit code, the same on every rank. Collective.
int run_generate(const World& world, const GenerateOptions& options, GeneratePlan& plan);

}  // namespace sdmpi::app
