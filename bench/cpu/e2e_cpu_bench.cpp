// End-to-end CPU benchmark of our pipeline on one model folder (normally the sd15 preset):
// text encoder (prompt + negative, batch 1), one UNet step (CFG batch 2), VAE decode (1 image)
// and a whole generation, each after a warm-up, median of R repetitions. JSON on stdout, so
// bench/cpu/run_e2e.sh can put it beside diffusers' numbers from the same machine and weights.
//   e2e_cpu_bench MODEL_DIR SIZE STEPS REPS THREADS
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

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
}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: e2e_cpu_bench MODEL_DIR SIZE STEPS REPS THREADS\n");
    return 2;
  }
  std::string model_dir = argv[1];
  int size = std::atoi(argv[2]), steps = std::atoi(argv[3]), reps = std::atoi(argv[4]), threads = std::atoi(argv[5]);
  auto backend = make_cpu_backend(threads);
  Backend& be = *backend;
  ModelSource model = ModelSource::open(model_dir);
  auto t_load = Clock::now();
  Txt2ImgPipeline pipe(model, be);
  double load_s = seconds(t_load);

  // Components with the same shapes the pipeline uses.
  ClipTextConfig tc = ClipTextConfig::from_json(model.config("text_encoder"), "text_encoder");
  UNetConfig uc = UNetConfig::from_json(model.config("unet"), "unet");
  VAEConfig vc = VAEConfig::from_json(model.config("vae"), "vae");
  ClipTextModel te = ClipTextModel::load(tc, *model.weights("text_encoder"), be);
  UNet2DConditionModel unet = UNet2DConditionModel::load(uc, *model.weights("unet"), be);
  AutoencoderKLDecoder vae = AutoencoderKLDecoder::load(vc, *model.weights("vae"), be);
  ClipTokenizer tok = model.tokenizer();
  std::vector<int32_t> ids = tok.encode_padded("a photograph of an astronaut riding a horse");
  std::vector<int32_t> neg = tok.encode_padded("");
  std::vector<int32_t> both = neg;
  both.insert(both.end(), ids.begin(), ids.end());
  const int64_t h = size / vc.scale_factor(), w = h;
  TorchGenerator g(0);
  std::vector<float> lat = g.randn(static_cast<size_t>(2 * h * w * uc.in_channels));
  Tensor x = be.from_host(lat.data(), {2, h, w, uc.in_channels});
  Tensor ctx = te.forward(be, both, 2);
  Tensor z = be.from_host(lat.data(), {1, h, w, uc.in_channels});

  double text_s = median_time(reps, [&] { te.forward(be, both, 2); });
  double unet_s = median_time(reps, [&] { unet.forward(be, x, {500.0f, 500.0f}, ctx); });
  double vae_s = median_time(std::max(1, reps / 2), [&] { vae.decode(be, z); });

  WorkItem item;
  item.params.prompt = "a photograph of an astronaut riding a horse";
  item.params.seed = 0;
  item.params.steps = steps;
  item.params.guidance = 7.5f;
  item.params.width = item.params.height = size;
  item.params.sampler = "pndm";
  auto t0 = Clock::now();
  auto imgs = pipe.generate({item});
  double total_s = seconds(t0);

  nlohmann::json out = {{"engine", "sd_mpi"},       {"backend", be.name()},  {"size", size},
                        {"steps", steps},            {"reps", reps},          {"threads", threads},
                        {"load_s", load_s},          {"text_encoder_s", text_s}, {"unet_step_s", unet_s},
                        {"vae_decode_s", vae_s},     {"generation_s", total_s}, {"unet_calls", steps + 1},
                        {"image_ok", imgs[0].ok}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
