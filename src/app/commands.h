// The subcommands of sd_mpi (one file each in src/app) and their shared helpers.
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <string>

#include "sdmpi/error.h"

namespace CLI {
class App;
}

namespace sdmpi::app {

int cmd_generate(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_merge(int argc, char** argv);
int cmd_make_model(int argc, char** argv);

// Runs fn; turns exceptions into one line on stderr and an exit code.
inline int run_guarded(const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    std::fprintf(stderr, "sd_mpi: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "sd_mpi: error: out of memory\n");
    return kExitFailure;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sd_mpi: error: %s\n", e.what());
    return kExitFailure;
  }
}

// Parses with CLI11; on --help prints and returns 0 through *exit_code; on a parse error prints
// one line and sets *exit_code = 2. Returns false when the caller should return *exit_code.
bool parse_cli(CLI::App& cli, int argc, char** argv, int* exit_code);

}  // namespace sdmpi::app
