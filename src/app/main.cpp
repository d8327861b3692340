// sd_mpi: the command-line entry. It parses, validates and calls; the work happens in the
// library (pipeline, cluster layer, archive). Subcommands:
//   sd_mpi [generate] ...      images from prompts (the default subcommand)
//   sd_mpi tokenize ...        token ids of a prompt as JSON
//   sd_mpi inspect PATH        a model folder/checkpoint or an archive, summarised
//   sd_mpi merge OUT IN...     shard archives → one archive, every index exactly once
//   sd_mpi make-model ...      random weights in the diffusers layout (tiny, sd15)
// Errors print one line "sd_mpi: error: ..." and exit non-zero (2 = bad input, 1 = failure).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "app/commands.h"
#include "sdmpi/error.h"
#include "sdmpi/version.h"

namespace {

void print_usage() {
  std::printf(
      "sd_mpi %s (%s): Stable Diffusion batch generation for HPC clusters\n"
      "\n"
      "usage: sd_mpi [generate] --model PATH (--prompt TEXT... | --prompts FILE) [options]\n"
      "       sd_mpi tokenize --model PATH --prompt TEXT\n"
      "       sd_mpi inspect PATH\n"
      "       sd_mpi merge OUT.h5 IN.h5...\n"
      "       sd_mpi make-model --preset tiny|sd15 [--seed S] OUT_DIR\n"
      "\n"
      "Run one under MPI for many GPUs or nodes: mpirun -np 8 sd_mpi --model ... --prompts ...\n"
      "'sd_mpi <subcommand> --help' explains each subcommand's options.\n",
      SDMPI_VERSION, SDMPI_GIT_COMMIT);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> known = {"generate", "tokenize", "inspect", "merge", "make-model"};
  std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "--version" || cmd == "version") {
    std::printf("sd_mpi %s (%s)\nfeatures: %s\n", SDMPI_VERSION, SDMPI_GIT_COMMIT, SDMPI_FEATURES);
    return 0;
  }
  if (argc < 2 || cmd == "--help" || cmd == "-h" || cmd == "help") {
    print_usage();
    return argc < 2 ? sdmpi::kExitUsage : 0;
  }
  bool explicit_cmd = false;
  for (const auto& k : known) explicit_cmd |= (cmd == k);
  if (!explicit_cmd) {
    if (cmd.rfind("-", 0) != 0) {
      std::fprintf(stderr, "sd_mpi: error: unknown subcommand '%s' (known: generate, tokenize, inspect, merge, make-model)\n",
                   cmd.c_str());
      return sdmpi::kExitUsage;
    }
    cmd = "generate";  // `sd_mpi --model ... --prompt ...`
  }
  // argv for the subcommand: its name as argv[0], then its options.
  std::vector<char*> sub;
  std::string name = "sd_mpi " + cmd;
  sub.push_back(name.data());
  for (int i = explicit_cmd ? 2 : 1; i < argc; ++i) sub.push_back(argv[i]);
  int sub_argc = static_cast<int>(sub.size());
  sub.push_back(nullptr);
  char** sub_argv = sub.data();

  if (cmd == "generate") return sdmpi::app::cmd_generate(sub_argc, sub_argv);
  return sdmpi::app::run_guarded([&] {
    if (cmd == "tokenize") return sdmpi::app::cmd_tokenize(sub_argc, sub_argv);
    if (cmd == "inspect") return sdmpi::app::cmd_inspect(sub_argc, sub_argv);
    if (cmd == "merge") return sdmpi::app::cmd_merge(sub_argc, sub_argv);
    return sdmpi::app::cmd_make_model(sub_argc, sub_argv);
  });
}
