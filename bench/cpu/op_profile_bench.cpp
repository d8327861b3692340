// Where a UNet step and a VAE decode spend their time on the CPU backend, op by op.
//
//   op_profile_bench MODEL_DIR [SIZE=256] [THREADS=nproc] [REPS=3]
//
// REPS=0 profiles the first call of each instead (no warm-up): what a job's first image pays on
// top, first touch of activation blocks and the Winograd transforms the backend keeps.
//
// Loads the UNet and VAE of an SD 1.x folder (e.g. `sd_mpi make-model --preset sd15`), runs one
// UNet step (CFG batch 2, t = 500, the text's cross-attention K/V made beforehand as the pipeline
// does) and one VAE decode to warm up, then REPS of each with the
// backend's op observer set (Backend::set_op_observer). The CPU backend runs each op to completion
// before it returns, so the wall time between two consecutive reports is the later op's time (plus
// the model code between ops, which is bookkeeping). Ops are grouped by name and shapes; the table
// gives each group's share of the step, its calls, its FLOPs (2 per multiply-add: linear
// 2·M·N·K, conv2d 2·B·Ho·Wo·Cout·kh·kw·Cin counted directly even where Winograd does fewer
// multiplies, attention 4·B·heads·Nq·Nk·d) and GFLOP/s. The op families' totals close each table.
// Use it to see which layers keep a step from the machine's sgemm rate; timings are for
// comparing ops of one run, the end-to-end claims are bench/cpu/run_e2e.sh's.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "sd15_bench_inputs.h"
#include "sdmpi/backend.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"

using namespace sdmpi;
using Clock = std::chrono::steady_clock;

namespace {

std::string shape_text(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(s[i]);
  }
  out += ']';
  return out;
}

int64_t numel_before_last(const Shape& s) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < s.size(); ++i) n *= s[i];
  return n;
}

// Multiply-adds × 2 of the matrix-product ops; 0 for the rest.
double flops_of(const OpCall& c) {
  const std::string op = c.op;
  if ((op == "linear" || op == "linear_geglu" || op == "linear_stacked") && !c.w.empty())
    return 2.0 * static_cast<double>(numel_before_last(c.x)) * static_cast<double>(c.w[0]) * static_cast<double>(c.w[1]);
  if (op == "linear_qkv" && !c.w.empty())
    return 3 * 2.0 * static_cast<double>(numel_before_last(c.x)) * static_cast<double>(c.w[0]) * static_cast<double>(c.w[1]);
  if (op == "conv2d" && c.w.size() == 4 && c.out.size() == 4)
    return 2.0 * static_cast<double>(c.out[0] * c.out[1] * c.out[2] * c.out[3]) *
           static_cast<double>(c.w[1] * c.w[2] * c.w[3]);
  if (op == "attention" && c.x.size() == 3 && c.w.size() == 3 && c.heads > 0)
    return 4.0 * static_cast<double>(c.x[0]) * static_cast<double>(c.x[1]) * static_cast<double>(c.w[1]) *
           static_cast<double>(c.x[2]);  // x [B, Nq, heads·d], k [B, Nk, heads·d]
  return 0.0;
}

struct Group {
  std::string op, shapes;
  int64_t calls = 0;
  double seconds = 0, flops = 0;
};

class Profiler {
 public:
  void start() { last_ = Clock::now(); }
  void record(const OpCall& c) {
    const auto now = Clock::now();
    const double dt = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    std::string key = std::string(c.op) + " x" + shape_text(c.x) + " w" + shape_text(c.w) +
                      (c.stride > 1 ? " s" + std::to_string(c.stride) : "") +
                      (c.heads ? " h" + std::to_string(c.heads) : "");
    Group& g = groups_[key];
    g.op = c.op;
    g.shapes = key.substr(g.op.size() + 1);
    g.calls += 1;
    g.seconds += dt;
    g.flops += flops_of(c);
  }
  void print(const char* title, int reps) const {
    std::vector<Group> rows;
    double total = 0;
    for (const auto& [k, g] : groups_) {
      rows.push_back(g);
      total += g.seconds;
    }
    std::sort(rows.begin(), rows.end(), [](const Group& a, const Group& b) { return a.seconds > b.seconds; });
    std::printf("\n## %s: %.1f ms per call (sum of op times, mean of %d)\n\n", title, 1e3 * total / reps, reps);
    std::printf("| op | shapes | calls | ms | share | GFLOP | GFLOP/s |\n|---|---|---:|---:|---:|---:|---:|\n");
    std::map<std::string, Group> families;
    for (const Group& g : rows) {
      const double ms = 1e3 * g.seconds / reps;
      if (ms >= 0.05 * 1e3 * total / reps / 100.0 * 5)  // rows of at least 0.25% of the step
        std::printf("| %s | %s | %lld | %.2f | %.1f%% | %.2f | %s |\n", g.op.c_str(), g.shapes.c_str(),
                    static_cast<long long>(g.calls / reps), ms, 100.0 * g.seconds / total, g.flops / reps / 1e9,
                    g.flops > 0 ? std::to_string(static_cast<int>(g.flops / g.seconds / 1e9)).c_str() : "");
      Group& f = families[g.op];
      f.op = g.op;
      f.calls += g.calls;
      f.seconds += g.seconds;
      f.flops += g.flops;
    }
    std::printf("\n| family | calls | ms | share | GFLOP | GFLOP/s |\n|---|---:|---:|---:|---:|---:|\n");
    std::vector<Group> fam;
    for (const auto& [k, f] : families) fam.push_back(f);
    std::sort(fam.begin(), fam.end(), [](const Group& a, const Group& b) { return a.seconds > b.seconds; });
    for (const Group& f : fam)
      std::printf("| %s | %lld | %.2f | %.1f%% | %.2f | %s |\n", f.op.c_str(), static_cast<long long>(f.calls / reps),
                  1e3 * f.seconds / reps, 100.0 * f.seconds / total, f.flops / reps / 1e9,
                  f.flops > 0 ? std::to_string(static_cast<int>(f.flops / f.seconds / 1e9)).c_str() : "");
  }
  void clear() { groups_.clear(); }

 private:
  Clock::time_point last_;
  std::map<std::string, Group> groups_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: op_profile_bench MODEL_DIR [SIZE=256] [THREADS=nproc] [REPS=3, 0: the first call]\n");
    return 2;
  }
  const std::string model_dir = argv[1];
  const int size = argc > 2 ? std::atoi(argv[2]) : 256;
  const int threads = argc > 3 ? std::atoi(argv[3]) : static_cast<int>(std::thread::hardware_concurrency());
  const bool first_call = argc > 4 && std::atoi(argv[4]) == 0;
  const int reps = first_call ? 1 : argc > 4 ? std::max(1, std::atoi(argv[4])) : 3;
  auto backend = make_cpu_backend(threads);
  Backend& be = *backend;
  ModelSource model = ModelSource::open(model_dir);
  // SD 1.x: one context width for every block.
  const int64_t ctx_dim = UNetConfig::from_json(model.config("unet"), "unet").cross_attention_dim.at(0);
  bench::Sd15BenchInputs in = bench::load_sd15_bench_inputs(model, be, size, ctx_dim);
  std::printf("# CPU op profile: %s, %d², %s\n", model_dir.c_str(), size, be.name().c_str());

  Profiler prof;
  be.set_op_observer([&](const OpCall& c) { prof.record(c); });
  auto run = [&](const char* title, const std::function<void()>& fn) {
    if (!first_call) fn();  // warm-up (first touch, kept transforms), not recorded
    prof.clear();
    auto t0 = Clock::now();
    for (int r = 0; r < reps; ++r) {
      prof.start();
      fn();
    }
    const double wall = std::chrono::duration<double>(Clock::now() - t0).count() / reps;
    prof.print(title, reps);
    std::printf("\n(wall %.1f ms per call)\n", 1e3 * wall);
  };
  // A step as the pipeline runs it: the cross-attentions' K and V of the text context are computed
  // once per batch (UNet2DConditionModel::cross_attention_kv), not in every step, so not here.
  const std::vector<Tensor> cross_kv = in.unet.cross_attention_kv(be, in.ctx);
  run(first_call ? "UNet step (CFG batch 2), first call" : "UNet step (CFG batch 2)", [&] {
    in.unet.forward_embedded(be, in.x, in.unet.time_proj(be, {500.0f, 500.0f}), cross_kv);
    be.synchronize();
  });
  run(first_call ? "VAE decode (1 image), first call" : "VAE decode (1 image)", [&] {
    in.vae.decode(be, in.z);
    be.synchronize();
  });
  be.set_op_observer({});
  return 0;
}
