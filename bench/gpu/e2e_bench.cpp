// End-to-end GPU benchmark of our txt2img pipeline: SD 1.5-sized random weights, 512x512, CFG,
// batch 1 and batch 8, fp16: seconds per image, images/s, per-component times and device memory.
// bench/gpu/e2e_diffusers.py measures diffusers the same way on the same folder; bench/gpu/e2e_check.sh
// runs both and prints ours against theirs.
//
// What is measured, per batch size (after a warm-up generate() of the same batch and size with a
// few steps, which captures the UNet step's CUDA graph and loads every kernel and cuDNN plan):
//   - seconds for generate() (prompt → uint8 RGB on the host), host clock; generate() ends with
//     a device-to-host copy, so the clock covers the GPU work;
//   - the pipeline's phase times (text encoder, denoising loop, VAE decode + read-back), each
//     ended by a device synchronisation;
//   - the GPU time of one denoising step (UNet graph + guidance + scheduler): CUDA events recorded
//     after each step is queued, median of the gaps between consecutive steps;
//   - memory: CudaBackend::memory_stats() (weights, pools, graph pools, peak activations) and the
//     device's used memory (cudaMemGetInfo) after the runs, minus what was used before the backend.
// With --steps below --report-steps (to fit a time budget), "projected_*" fields scale the
// denoising loop to --report-steps by its measured time per UNet call; the rest is measured.
//
// Usage:
//   e2e_bench --make-model DIR [--preset sd15|tiny] [--seed S]
//             writes the model `sd_mpi make-model --preset sd15 --seed S DIR` writes (the same
//             function), prints the seconds it took
//   e2e_bench --model DIR [--batch N]... [--steps 50] [--report-steps 50] [--warmup-steps 2]
//             [--size 512] [--guidance 7.5] [--precision fp16|bf16|fp32] [--sampler NAME]
//             [--repeats 1] [--images DIR] [--no-graphs] [--budget-seconds S]
//   --budget-seconds: fewer timed steps (at least 5) where the warm-up's step time says --steps
//             would not fit; the projection to --report-steps then says what 50 steps take.
//   --images DIR: writes DIR/sd_mpi_b<B>.rgb (raw uint8, B x H x W x 3) for the comparison.
//   --profile-step K: in the first timed run, the profiler (cudaProfilerStart/Stop) is on for
//             denoising step K alone (K >= 2), so `ncu --profile-from-start off` (bench/gpu/deep.sh)
//             sees exactly one step: the UNet graph's kernels, guidance and the scheduler.
// Prints one JSON line per batch size on stdout ({"bench":"e2e","impl":"sd_mpi",...}); progress
// and errors on stderr. Exit status 1 if any batch size failed (its line then carries "error").
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"
#include "sdmpi/job.h"
#include "sdmpi/make_model.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/scheduler.h"

using namespace sdmpi;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The prompt and seeds e2e_diffusers.py uses too: item i of a batch has seed kSeedBase + i.
constexpr const char* kPrompt = "a photograph of an astronaut riding a horse on the moon, highly detailed";
constexpr uint64_t kSeedBase = 1000;

struct Options {
  std::string make_model_dir, preset = "sd15", model, images_dir, precision = "fp16", sampler;
  uint64_t seed = 0;
  std::vector<int> batches;
  int steps = 50, report_steps = 50, warmup_steps = 2, size = 512, repeats = 1;
  int profile_step = 0;  // 0: none
  float guidance = 7.5f;
  double budget_seconds = 0;  // 0: none
  bool graphs = true;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "e2e_bench: %s\nusage: e2e_bench --make-model DIR [--preset sd15|tiny] [--seed S]\n"
               "       e2e_bench --model DIR [--batch N]... [--steps 50] [--report-steps 50] [--warmup-steps 2]\n"
               "                 [--size 512] [--guidance 7.5] [--precision fp16|bf16|fp32] [--sampler NAME]\n"
               "                 [--repeats 1] [--images DIR] [--no-graphs] [--budget-seconds S] [--profile-step K]\n",
               why.c_str());
  std::exit(2);
}

int to_int(const std::string& flag, const std::string& v, int lo) {
  try {
    size_t used = 0;
    int x = std::stoi(v, &used);
    if (used == v.size() && x >= lo) return x;
  } catch (const std::exception&) {
  }
  usage(flag + " needs an integer >= " + std::to_string(lo) + ", got '" + v + "'");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--make-model") o.make_model_dir = value();
    else if (a == "--preset") o.preset = value();
    else if (a == "--budget-seconds") o.budget_seconds = to_int(a, value(), 1);
    else if (a == "--seed") o.seed = static_cast<uint64_t>(to_int(a, value(), 0));
    else if (a == "--model") o.model = value();
    else if (a == "--batch") o.batches.push_back(to_int(a, value(), 1));
    else if (a == "--steps") o.steps = to_int(a, value(), 1);
    else if (a == "--report-steps") o.report_steps = to_int(a, value(), 1);
    else if (a == "--warmup-steps") o.warmup_steps = to_int(a, value(), 1);
    else if (a == "--size") o.size = to_int(a, value(), 8);
    else if (a == "--repeats") o.repeats = to_int(a, value(), 1);
    else if (a == "--guidance") {
      const std::string v = value();
      char* end = nullptr;
      o.guidance = std::strtof(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(o.guidance >= 0.0f)) usage("--guidance needs a number >= 0, got '" + v + "'");
    }
    else if (a == "--precision") o.precision = value();
    else if (a == "--sampler") o.sampler = value();
    else if (a == "--images") o.images_dir = value();
    else if (a == "--no-graphs") o.graphs = false;
    else if (a == "--profile-step") o.profile_step = to_int(a, value(), 2);
    else if (a == "-h" || a == "--help") usage("help");
    else usage("unknown argument '" + a + "'");
  }
  if (o.make_model_dir.empty() && o.model.empty()) usage("give --make-model DIR or --model DIR");
  if (o.batches.empty()) o.batches = {1, 8};
  return o;
}

// Device memory in use (all processes), bytes.
size_t device_used() {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return total_b - free_b;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

uint64_t fnv1a(const std::vector<ImageResult>& images) {
  uint64_t h = 1469598103934665603ull;
  for (const ImageResult& im : images)
    for (uint8_t c : im.rgb) {
      h ^= c;
      h *= 1099511628211ull;
    }
  return h;
}

std::vector<WorkItem> make_items(const Options& o, int batch, int steps, const std::string& sampler) {
  std::vector<WorkItem> items;
  for (int i = 0; i < batch; ++i) {
    WorkItem w;
    w.index = i;
    w.prompt_index = i;
    w.params.prompt = kPrompt;
    w.params.negative_prompt = "";
    w.params.seed = kSeedBase + static_cast<uint64_t>(i);
    w.params.steps = steps;
    w.params.guidance = o.guidance;
    w.params.width = o.size;
    w.params.height = o.size;
    w.params.sampler = sampler;
    items.push_back(w);
  }
  return items;
}

// CUDA events recorded on the backend's stream after each denoising step is queued.
class StepEvents {
 public:
  StepEvents(CudaBackend& b, int n) : stream_(static_cast<cudaStream_t>(b.stream())), events_(static_cast<size_t>(n)) {
    for (cudaEvent_t& e : events_)
      if (cudaEventCreate(&e) != cudaSuccess) throw Error("e2e_bench: cudaEventCreate failed");
  }
  ~StepEvents() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  // Profile denoising step `step` alone: the profiler starts once step - 1 is queued and stops
  // once `step` is.
  void profile(int step) { profile_step_ = step; }
  StepCallback_t callback() {
    return [this](int step, int) {
      if (profile_step_ > 0 && step == profile_step_ - 1) cudaProfilerStart();
      if (profile_step_ > 0 && step == profile_step_) cudaProfilerStop();
      if (step >= 1 && step <= static_cast<int>(events_.size())) {
        cudaEventRecord(events_[static_cast<size_t>(step - 1)], stream_);
        recorded_ = std::max(recorded_, step);
      }
      return true;
    };
  }
  // Milliseconds between consecutive steps' events (valid after a synchronisation).
  std::vector<double> gaps_ms() const {
    std::vector<double> out;
    for (int i = 1; i < recorded_; ++i) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, events_[static_cast<size_t>(i - 1)], events_[static_cast<size_t>(i)]) == cudaSuccess)
        out.push_back(ms);
      else
        cudaGetLastError();
    }
    return out;
  }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  int recorded_ = 0;
  int profile_step_ = 0;
};

json memory_json(CudaBackend& cuda, size_t used_before) {
  const CudaMemoryStats st = cuda.memory_stats();
  const size_t used = device_used();
  return json{{"weight_bytes", st.weight_bytes},
              {"reserved_bytes", st.reserved_bytes},
              {"graph_pool_bytes", st.graph_pool_bytes},
              {"peak_activation_bytes", st.peak_activation_bytes},
              {"device_allocations", st.device_allocations},
              {"device_used_bytes", used},
              {"device_used_by_run_bytes", used > used_before ? used - used_before : 0}};
}

void write_images(const std::string& dir, int batch, const std::vector<ImageResult>& images) {
  const std::string path = dir + "/sd_mpi_b" + std::to_string(batch) + ".rgb";
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  for (const ImageResult& im : images) f.write(reinterpret_cast<const char*>(im.rgb.data()), static_cast<std::streamsize>(im.rgb.size()));
  if (!f) throw Error(path + ": cannot write the images");
}

// deadline: when the whole run must be done (budget), or a default-constructed time point for none;
// later: how many batch sizes come after this one (each keeps 15 s for its warm-up).
json run_batch(const Options& o, Txt2ImgPipeline& pipe, CudaBackend& cuda, const ModelSource& model, int batch,
               size_t used_before, Clock::time_point deadline, int later) {
  const std::string sampler = o.sampler.empty() ? default_sampler(model.config("scheduler")) : o.sampler;
  json r{{"bench", "e2e"}, {"impl", "sd_mpi"}, {"device", cuda.name()}, {"precision", o.precision},
         {"batch", batch}, {"width", o.size}, {"height", o.size}, {"guidance", o.guidance},
         {"sampler", sampler}, {"cuda_graphs_requested", o.graphs}};
  // Warm-up: the same batch and size, fewer steps (same graph key), excluded from every number.
  auto tw = Clock::now();
  double warm_step_ms = 0;
  {
    StepEvents events(cuda, o.warmup_steps + 8);
    pipe.generate(make_items(o, batch, o.warmup_steps, sampler), events.callback());
    warm_step_ms = median(events.gaps_ms());  // replays only: the capture happens in call 0
  }
  r["warmup_s"] = since(tw);

  // Within a budget, fewer steps (at least 5) when the warm-up's step time says 50 would not fit.
  int steps = o.steps;
  if (deadline != Clock::time_point{} && warm_step_ms > 0) {
    const double left = std::chrono::duration<double>(deadline - Clock::now()).count() - 15.0 * later - 10.0;
    const int fit = static_cast<int>(left * 0.8 / (warm_step_ms / 1000.0)) - 1;
    if (fit < steps) {
      steps = std::max(5, fit);
      std::fprintf(stderr, "e2e_bench: batch %d: %d steps to fit the budget\n", batch, steps);
    }
  }
  r["steps"] = steps;

  const Txt2ImgPipeline::Timings before = pipe.timings();
  const std::vector<WorkItem> items = make_items(o, batch, steps, sampler);
  std::vector<double> totals, gaps;
  std::vector<ImageResult> images;
  for (int rep = 0; rep < o.repeats; ++rep) {
    StepEvents events(cuda, steps + 8);
    if (rep == 0) events.profile(o.profile_step);
    auto t0 = Clock::now();
    images = pipe.generate(items, events.callback());
    totals.push_back(since(t0));
    for (double g : events.gaps_ms()) gaps.push_back(g);
  }
  const Txt2ImgPipeline::Timings& after = pipe.timings();
  const double n = o.repeats;
  const double total = median(totals);
  const double text = (after.text - before.text) / n, unet = (after.unet - before.unet) / n,
               vae = (after.vae - before.vae) / n;
  const double calls = static_cast<double>(after.unet_calls - before.unet_calls) / n;
  const double graph_calls = static_cast<double>(after.unet_graph_calls - before.unet_graph_calls) / n;
  int ok = 0;
  for (const ImageResult& im : images) ok += im.ok ? 1 : 0;

  r["unet_calls"] = calls;
  r["unet_calls_as_graph"] = graph_calls;
  r["seconds_per_batch"] = total;
  r["seconds_per_image"] = total / batch;
  r["images_per_second"] = batch / total;
  r["text_encoder_s"] = text;
  r["denoise_s"] = unet;
  r["unet_step_ms_host"] = calls > 0 ? 1000.0 * unet / calls : 0.0;
  r["unet_step_ms_gpu_median"] = median(gaps);
  r["vae_decode_s_per_image"] = vae / batch;
  r["other_s"] = total - text - unet - vae;
  r["images_ok"] = ok;
  r["images_checksum"] = fnv1a(images);
  r["repeats"] = o.repeats;
  if (o.report_steps != steps) {
    // The denoising loop scaled to report_steps by its measured time per UNet call.
    auto sched = make_scheduler(sampler, "default", SchedulerConfig::from_json(model.config("scheduler"), "scheduler"),
                                o.report_steps);
    const double report_calls = static_cast<double>(sched->num_calls());
    const double projected = total - unet + (calls > 0 ? unet / calls * report_calls : 0.0);
    r["report_steps"] = o.report_steps;
    r["report_unet_calls"] = report_calls;
    r["projected_seconds_per_image"] = projected / batch;
    r["projected_images_per_second"] = batch / projected;
  }
  r["memory"] = memory_json(cuda, used_before);
  if (!o.images_dir.empty()) write_images(o.images_dir, batch, images);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    if (!o.make_model_dir.empty()) {
      auto t0 = Clock::now();
      make_model(o.preset, o.seed, o.make_model_dir);
      std::printf("{\"bench\":\"e2e_make_model\",\"preset\":\"%s\",\"seed\":%llu,\"seconds\":%.2f}\n",
                  o.preset.c_str(), static_cast<unsigned long long>(o.seed), since(t0));
      return 0;
    }
    DType compute = DType::F16;
    if (!parse_dtype(o.precision, &compute)) usage("--precision must be fp16, bf16 or fp32");
    if (!o.graphs) setenv("SDMPI_CUDA_GRAPHS", "0", 1);
    if (cudaFree(nullptr) != cudaSuccess) {
      cudaGetLastError();
      throw Error("no usable CUDA device (" + probe_cuda().summary() + ")");
    }
    const size_t used_before = device_used();
    const Clock::time_point deadline =
        o.budget_seconds > 0 ? Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.budget_seconds * 1000))
                             : Clock::time_point{};
    std::unique_ptr<Backend> backend = make_cuda_backend(0, compute);
    CudaBackend& cuda = *as_cuda(*backend);
    auto tl = Clock::now();
    ModelSource model = ModelSource::open(o.model);
    Txt2ImgPipeline pipe(model, cuda);
    cuda.synchronize();
    const double load_s = since(tl);
    std::fprintf(stderr, "e2e_bench: %s, model %s loaded in %.1f s\n", cuda.name().c_str(), o.model.c_str(), load_s);
    int failures = 0;
    for (size_t k = 0; k < o.batches.size(); ++k) {
      const int batch = o.batches[k];
      json r;
      try {
        r = run_batch(o, pipe, cuda, model, batch, used_before, deadline, static_cast<int>(o.batches.size() - k - 1));
        r["load_s"] = load_s;
      } catch (const std::exception& e) {
        ++failures;
        r = json{{"bench", "e2e"}, {"impl", "sd_mpi"}, {"batch", batch}, {"precision", o.precision},
                 {"error", e.what()}};
        std::fprintf(stderr, "e2e_bench: batch %d failed: %s\n", batch, e.what());
      }
      std::printf("%s\n", r.dump().c_str());
      std::fflush(stdout);
      // Free this batch size's graph before the next one, so each line's memory is its own.
      try {
        cuda.drop_graphs();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "e2e_bench: drop_graphs: %s\n", e.what());
      }
    }
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("%s\n", json{{"bench", "e2e"}, {"impl", "sd_mpi"}, {"error", e.what()}}.dump().c_str());
    std::fprintf(stderr, "e2e_bench: %s\n", e.what());
    return 1;
  }
}
