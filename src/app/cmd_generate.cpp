// sd_mpi generate: the main job, as parse → plan → run. Every rank parses the same command line
// (generate_options); rank 0 reads the prompts and the outputs and shares the plan
// (generate_plan); every rank binds its device and loads the model, and the cluster layer runs
// the items and gathers every image to rank 0's outputs (generate_run).
#include <cstdio>
#include <memory>

#include "app/commands.h"
#include "app/generate_options.h"
#include "app/generate_plan.h"
#include "app/generate_run.h"
#include "sdmpi/cluster.h"
#include "sdmpi/log.h"

namespace sdmpi::app {

int cmd_generate(int argc, char** argv) {
  std::unique_ptr<World> world;
  try {
    world = std::make_unique<World>(&argc, &argv);
  } catch (const Error& e) {
    std::fprintf(stderr, "sd_mpi: error: %s\n", e.what());
    return kExitFailure;
  }
  install_stop_handlers();

  GenerateOptions options;
  int code = 0;
  if (!parse_generate_options(argc, argv, world->rank() == 0, &options, &code)) return code;
  if (options.quiet) log::set_level(log::Level::Warn);
  if (options.verbose) log::set_level(log::Level::Debug);

  GeneratePlan plan;
  if ((code = plan_generate(*world, options, &plan)) != 0) return code;
  return run_generate(*world, options, plan);
}

}  // namespace sdmpi::app
