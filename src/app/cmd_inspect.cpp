// sd_mpi inspect PATH: a summary of a model (folder, checkpoint, "tiny") or of an archive.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <set>

#include "app/commands.h"
#include "sdmpi/archive.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/error.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

namespace sdmpi::app {
namespace {

bool is_hdf5(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char sig[8] = {0};
  f.read(sig, 8);
  return f.gcount() == 8 && std::string(sig, 8) == "\x89HDF\r\n\x1a\n";
}

// Per component, what the model's configs declare (the model classes constructed on a ListingSink,
// as make-model lists them) next to what its weights hold, and how many of those the declaration
// names: a file for other configs, a decoder-only VAE or an extra tensor shows at a glance.
void describe_model(const std::string& spec) {
  ModelSource m = ModelSource::open(spec);
  std::printf("model: %s\n", m.describe().c_str());
  const UNetConfig u = UNetConfig::from_json(m.config("unet"), spec + " unet");
  {
    // The family and what makes it one: the text tower, the UNet's attention, the prediction.
    // An SDXL refiner has no text_encoder: its line says so.
    const bool refiner = !m.has("text_encoder");
    const ClipTextConfig t = refiner ? ClipTextConfig() : ClipTextConfig::from_json(m.config("text_encoder"), spec + " text_encoder");
    const nlohmann::json sched = m.config("scheduler");
    std::string heads;
    for (int h : u.num_attention_heads) heads += (heads.empty() ? "" : ", ") + std::to_string(h);
    char text_line[160];
    std::snprintf(text_line, sizeof text_line, "CLIPTextModel, %d layers, width %d, %d heads, %s", t.num_hidden_layers,
                  t.hidden_size, t.num_attention_heads, t.hidden_act.c_str());
    std::printf("family: %s\n  text encoder: %s\n"
                "  unet: cross-attention %d, heads [%s], %s projections%s\n  scheduler: %s, %s\n",
                m.family().c_str(), refiner ? "none (a refiner: text_encoder_2 alone, img2img only)" : text_line,
                u.cross_attention_dim.front(), heads.c_str(), u.use_linear_projection ? "linear" : "1x1 conv",
                u.upcast_attention ? ", upcast attention" : "",
                sched.value("_class_name", std::string("(no _class_name)")).c_str(),
                sched.value("prediction_type", std::string("epsilon")).c_str());
    if (m.has("text_encoder_2")) {  // SDXL
      const ClipTextConfig t2 = ClipTextConfig::from_json(m.config("text_encoder_2"), spec + " text_encoder_2");
      // requires_aesthetics_score (the refiner): 5 time ids, the aesthetic score in place of the target size.
      const bool aesthetic = m.config("model_index").value("requires_aesthetics_score", false);
      const int time_ids = aesthetic ? UNetConfig::kRefinerTimeIds : UNetConfig::kMicroConditioningValues;
      std::printf("  text encoder 2: CLIPTextModelWithProjection, %d layers, width %d, %d heads, %s, projection %d\n"
                  "  added conditioning: text_time (pooled %d + %d x %d %s features), "
                  "force_zeros_for_empty_prompt %s\n",
                  t2.num_hidden_layers, t2.hidden_size, t2.num_attention_heads, t2.hidden_act.c_str(), t2.projection_dim,
                  u.pooled_text_dim(time_ids), time_ids, u.addition_time_embed_dim,
                  aesthetic ? "micro-conditioning + aesthetic score" : "micro-conditioning",
                  m.config("model_index").value("force_zeros_for_empty_prompt", true) ? "true" : "false");
    }
  }
  std::vector<std::string> components{"unet", "vae"};
  if (m.has("text_encoder")) components.insert(components.begin(), "text_encoder");
  if (m.has("text_encoder_2")) components.insert(components.end() - 2, "text_encoder_2");
  for (const std::string& component : components) {
    auto w = m.weights(component);
    std::vector<ParamSpec> declared;
    if (component == "unet") declared = unet_parameters(u);
    if (component == "vae") declared = vae_parameters(VAEConfig::from_json(m.config("vae"), spec + " vae"));
    if (component == "text_encoder" || component == "text_encoder_2") {
      ClipTextConfig t = ClipTextConfig::from_json(m.config(component), spec + " " + component);
      t.with_projection = component == "text_encoder_2";  // as the SDXL pipeline loads it
      declared = clip_text_parameters(t, ClipTextModel::weight_prefix(*w));
    }
    std::set<std::string> dtypes;
    int64_t file_params = 0;
    for (const std::string& name : w->names()) {
      try {
        const WeightView v = w->get(name);
        file_params += shape_numel(v.shape);
        dtypes.insert(dtype_name(v.dtype));
      } catch (const InputError&) {
        dtypes.insert("unreadable");  // e.g. an I64 buffer such as CLIP's position_ids
      }
    }
    size_t declared_in_file = 0;
    for (const ParamSpec& p : declared) declared_in_file += w->has(p.name);
    std::string dtype_list;
    for (const std::string& d : dtypes) dtype_list += (dtype_list.empty() ? "" : ", ") + d;
    std::printf("  %-13s declared %zu tensors, %.1f M parameters; weights %zu tensors, %.1f M parameters (%s), "
                "%zu of them declared\n",
                component.c_str(), declared.size(), count_parameters(declared) / 1e6, w->names().size(), file_params / 1e6,
                dtype_list.c_str(), declared_in_file);
  }
  std::string ch;
  for (int c : u.block_out_channels) ch += (ch.empty() ? "" : ",") + std::to_string(c);
  std::printf("  unet: block_out_channels [%s], cross_attention_dim %d, sample_size %d\n", ch.c_str(),
              u.cross_attention_dim.empty() ? 0 : u.cross_attention_dim[0], u.sample_size);
  auto sched = m.config("scheduler");
  std::printf("  scheduler: %s, default sampler %s\n", sched.value("_class_name", std::string("?")).c_str(),
              default_sampler(sched).c_str());
  if (m.has("text_encoder")) {
    ClipTokenizer tok = m.tokenizer();
    std::printf("  tokenizer: %zu tokens, %zu merges, max length %d\n", tok.vocab_size(), tok.num_merges(), tok.model_max_length());
  }
  if (m.has("text_encoder_2")) {
    ClipTokenizer tok2 = m.tokenizer("tokenizer_2");
    const auto pad = tok2.id_to_token(tok2.pad_id());
    std::printf("  tokenizer_2: %zu tokens, pad \"%s\" (id %d)\n", tok2.vocab_size(), pad ? pad->c_str() : "?", tok2.pad_id());
  }
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
