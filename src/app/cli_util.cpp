// CLI11 glue shared by the subcommands.
#include <CLI/CLI.hpp>

#include "app/commands.h"

namespace sdmpi::app {

bool parse_cli(CLI::App& cli, int argc, char** argv, int* exit_code) {
  try {
    cli.parse(argc, argv);
    return true;
  } catch (const CLI::CallForHelp& e) {
    *exit_code = cli.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    *exit_code = cli.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "sd_mpi: error: %s (see '%s --help')\n", e.what(), cli.get_name().c_str());
    *exit_code = kExitUsage;
  }
  return false;
}

}  // namespace sdmpi::app
