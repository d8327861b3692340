// sd_mpi inspect PATH: a summary of a model (folder, checkpoint, "tiny") or of an archive.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>

#include "app/commands.h"
#include "sdmpi/archive.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"

namespace sdmpi::app {
namespace {

bool is_hdf5(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char sig[8] = {0};
  f.read(sig, 8);
  return f.gcount() == 8 && std::string(sig, 8) == "\x89HDF\r\n\x1a\n";
}

void describe_model(const std::string& spec) {
  ModelSource m = ModelSource::open(spec);
  std::printf("model: %s\n", m.describe().c_str());
  for (const char* component : {"text_encoder", "unet", "vae"}) {
    auto w = m.weights(component);
    int64_t params = 0;
    std::map<std::string, int64_t> by_dtype;
    for (const std::string& n : w->names()) {
      WeightView v = w->get(n);
      int64_t count = shape_numel(v.shape);
      params += count;
      by_dtype[dtype_name(v.dtype)] += count;
    }
    std::string dtypes;
    for (auto& [d, c] : by_dtype) dtypes += (dtypes.empty() ? "" : ", ") + d;
    std::printf("  %-13s %6zu tensors, %8.1f M parameters (%s)\n", component, w->names().size(), params / 1e6, dtypes.c_str());
  }
  UNetConfig u = UNetConfig::from_json(m.config("unet"), spec + " unet");
  std::string ch;
  for (int c : u.block_out_channels) ch += (ch.empty() ? "" : ",") + std::to_string(c);
  std::printf("  unet: block_out_channels [%s], cross_attention_dim %d, sample_size %d\n", ch.c_str(),
              u.cross_attention_dim.empty() ? 0 : u.cross_attention_dim[0], u.sample_size);
  auto sched = m.config("scheduler");
  std::printf("  scheduler: %s, default sampler %s\n", sched.value("_class_name", std::string("?")).c_str(),
              default_sampler(sched).c_str());
  ClipTokenizer tok = m.tokenizer();
  std::printf("  tokenizer: %zu tokens, %zu merges, max length %d\n", tok.vocab_size(), tok.num_merges(), tok.model_max_length());
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  CLI::App cli{"Summarises a model (diffusers folder, .safetensors checkpoint, 'tiny') or an sd_mpi archive (.h5).",
               "sd_mpi inspect"};
  std::string path;
  cli.add_option("PATH", path, "model or archive")->required();
  int rc = 0;
  if (!parse_cli(cli, argc, argv, &rc)) return rc;
  if (path != "tiny" && std::filesystem::is_regular_file(path) && is_hdf5(path)) {
    if (!kArchiveSupported) throw Error("this sd_mpi was built without HDF5: cannot read archives");
    std::printf("%s", describe_archive(path).c_str());
    return 0;
  }
  describe_model(path);
  return 0;
}

}  // namespace sdmpi::app
