// End-to-end CPU benchmark of our pipeline on one model folder (the sd15 or sdxl make-model
// presets): each text encoder on the prompt + negative (batch 2), one UNet step (CFG batch 2),
// VAE decode (1 image), model load and a whole generation, with the generation's own phase
// timings, a second generation (SD 1.x: a batch job's later images) and the process's peak RSS. JSON on stdout, so bench/cpu/run_e2e.sh and run_e2e_sdxl.sh
// can put it beside diffusers' (and stable-diffusion.cpp's) numbers from the same machine and weights.
//   e2e_cpu_bench MODEL_DIR SIZE STEPS REPS THREADS [SAMPLER]     (SAMPLER: pndm unless given)
// Components are timed standalone (warm-up, then the median of REPS) before the pipeline loads,
// and freed before it does, so at most one copy of the weights is resident and the peak RSS is
// the pipeline's. For SDXL the UNet and VAE are not timed standalone (a second 10 GB copy and
// minutes per call): their rows come from the generation's phase timings.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "sd15_bench_inputs.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/model_config.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

using namespace sdmpi;
using Clock = std::chrono::steady_clock;

namespace {
double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <class Fn>
double median_time(int reps, Fn&& fn) {
  fn();  // warm-up: first-touch of weights, scratch buffers
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    fn();
    t.push_back(seconds(t0));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

const char* kPrompt = "a photograph of an astronaut riding a horse";

// One text encoder on [negative, prompt] through its tokenizer, as the pipeline calls it: SD 1.x
// the last hidden state, SDXL the penultimate one (and encoder 2's projection).
double time_text_encoder(const ModelSource& model, Backend& be, const std::string& component,
                         const std::string& tokenizer, bool sdxl, int reps) {
  ClipTextConfig tc = ClipTextConfig::from_json(model.config(component), component);
  ClipTextModel te = ClipTextModel::load(tc, *model.weights(component), be);
  ClipTokenizer tok = model.tokenizer(tokenizer);
  std::vector<int32_t> both = tok.encode_padded("");
  std::vector<int32_t> ids = tok.encode_padded(kPrompt);
  both.insert(both.end(), ids.begin(), ids.end());
  return median_time(reps, [&] {
    if (sdxl) te.forward_hidden(be, both, 2);
    else te.forward(be, both, 2);
    be.synchronize();
  });
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: e2e_cpu_bench MODEL_DIR SIZE STEPS REPS THREADS [SAMPLER]\n");
    return 2;
  }
  std::string model_dir = argv[1];
  int size = std::atoi(argv[2]), steps = std::atoi(argv[3]), reps = std::atoi(argv[4]), threads = std::atoi(argv[5]);
  std::string sampler = argc > 6 ? argv[6] : "pndm";
  auto backend = make_cpu_backend(threads);
  Backend& be = *backend;
  ModelSource model = ModelSource::open(model_dir);
  const bool sdxl = model.has("text_encoder_2");
  nlohmann::json out = {{"engine", "sd_mpi"}, {"backend", be.name()}, {"family", model.family()},
                        {"size", size},       {"steps", steps},       {"reps", reps},
                        {"threads", threads}, {"sampler", sampler}};

  out["text_encoder_s"] = time_text_encoder(model, be, "text_encoder", "tokenizer", sdxl, reps);
  if (sdxl) out["text_encoder_2_s"] = time_text_encoder(model, be, "text_encoder_2", "tokenizer_2", true, reps);
  if (!sdxl) {
    ClipTextConfig tc = ClipTextConfig::from_json(model.config("text_encoder"), "text_encoder");
    bench::Sd15BenchInputs in = bench::load_sd15_bench_inputs(model, be, size, tc.hidden_size);
    out["unet_step_s"] = median_time(reps, [&] { in.unet.forward(be, in.x, {500.0f, 500.0f}, in.ctx); be.synchronize(); });
    out["vae_decode_s"] = median_time(std::max(1, reps / 2), [&] { in.vae.decode(be, in.z); be.synchronize(); });
  }

  auto t_load = Clock::now();
  Txt2ImgPipeline pipe(model, be);
  out["load_s"] = seconds(t_load);
  WorkItem item;
  item.params.prompt = kPrompt;
  item.params.seed = 0;
  item.params.steps = steps;
  item.params.guidance = 7.5f;
  item.params.width = item.params.height = size;
  item.params.sampler = sampler;
  auto t0 = Clock::now();
  auto imgs = pipe.generate({item});
  out["generation_s"] = seconds(t0);
  const Txt2ImgPipeline::Timings ph = pipe.timings();
  if (!sdxl) {  // a batch job's later images: whatever the first call of each layer set up is in place
    auto t1 = Clock::now();
    (void)pipe.generate({item});
    out["generation_2_s"] = seconds(t1);
  }
  out["gen_text_s"] = ph.text;
  out["gen_unet_step_s"] = ph.unet / static_cast<double>(std::max<int64_t>(1, ph.unet_calls));
  out["gen_vae_s"] = ph.vae;
  out["unet_calls"] = ph.unet_calls;
  if (sdxl) {
    out["unet_step_s"] = out["gen_unet_step_s"];
    out["vae_decode_s"] = out["gen_vae_s"];
  }
  out["image_ok"] = imgs[0].ok;
  out["peak_rss_gib"] = peak_rss_gib();
  std::printf("%s\n", out.dump().c_str());
  return imgs[0].ok ? 0 : 1;
}
