// sd_mpi merge OUT.h5 IN.h5...: join shard archives of one job, every global index exactly once.
#include <CLI/CLI.hpp>

#include "app/commands.h"
#include "sdmpi/archive.h"
#include "sdmpi/log.h"

namespace sdmpi::app {

int cmd_merge(int argc, char** argv) {
  CLI::App cli{"Joins the shard archives of one job (sd_mpi --shard i/K ... --archive) into one archive.\n"
               "Checks that every input belongs to the same job and that every global index 0..N-1 is\n"
               "present exactly once; the output's rows are ordered by index, as a single run's would be.",
               "sd_mpi merge"};
  std::string out;
  std::vector<std::string> inputs;
  MergeOptions opt;
  cli.add_option("OUT", out, "the merged archive to write")->required();
  cli.add_option("IN", inputs, "shard archives")->required()->check(CLI::ExistingFile);
  cli.add_flag("--allow-incomplete", opt.allow_incomplete, "accept pending or failed rows (copied with their status)");
  cli.add_flag("--overwrite", opt.overwrite, "replace OUT if it exists");
  int rc = 0;
  if (!parse_cli(cli, argc, argv, &rc)) return rc;
  if (!kArchiveSupported) throw Error("this sd_mpi was built without HDF5: merge is not available");
  MergeSummary s = merge_archives(out, inputs, opt);
  log::info("merged " + std::to_string(inputs.size()) + " archive(s) into " + out + ": " + std::to_string(s.rows) +
            " rows (" + std::to_string(s.done) + " done, " + std::to_string(s.failed) + " failed, " +
            std::to_string(s.pending) + " pending)");
  return 0;
}

}  // namespace sdmpi::app
