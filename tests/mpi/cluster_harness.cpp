// A stand-in job for the MPI tests of the cluster layer: run_job over N fake items whose "image"
// is a function of the seed, with a generator that sleeps per step so the ranks interleave.
// Rank 0 writes one line per written item ("index ok checksum") to the output file, in the order
// the sink saw them, and the summary line last.
//   cluster_harness OUT N BATCH static|dynamic [fail=I] [stop_after=K on rank R: stop=R:K] [slow=R]
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "sdmpi/cluster.h"
#include "sdmpi/error.h"

using namespace sdmpi;

int main(int argc, char** argv) {
  World world(&argc, &argv);
  install_stop_handlers();
  if (argc < 5) {
    std::fprintf(stderr, "usage: cluster_harness OUT N BATCH static|dynamic [fail=I] [stop=R:K] [slow=R]\n");
    return 2;
  }
  std::string out = argv[1];
  int n = std::atoi(argv[2]), batch = std::atoi(argv[3]);
  RunOptions opt;
  opt.batch_size = batch;
  opt.distribution = std::string(argv[4]) == "dynamic" ? Distribution::Dynamic : Distribution::Static;
  opt.progress = ProgressMode::Lines;
  opt.progress_interval_s = 0.5;
  int64_t fail = -1;
  int stop_rank = -1, stop_after = 0, slow_rank = -1;
  for (int i = 5; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("fail=", 0) == 0) fail = std::atoll(a.c_str() + 5);
    if (a.rfind("stop=", 0) == 0) std::sscanf(a.c_str() + 5, "%d:%d", &stop_rank, &stop_after);
    if (a.rfind("slow=", 0) == 0) slow_rank = std::atoi(a.c_str() + 5);
    if (a == "fail-fast") opt.fail_fast = true;
  }
  std::vector<WorkItem> items;
  for (int i = 0; i < n; ++i) {
    WorkItem w;
    w.index = i;
    w.params.seed = 77 + static_cast<uint64_t>(i);
    w.params.steps = 4;
    w.params.width = 16;
    w.params.height = 8;
    items.push_back(w);
  }
  int batches_done = 0;
  BatchGenerator gen = [&](const std::vector<WorkItem>& b, const StepCallback& step) {
    for (int s = 1; s <= 4; ++s) {
      std::this_thread::sleep_for(std::chrono::milliseconds(world.rank() == slow_rank ? 20 : 5));
      if (!step(s, 4)) throw BatchAbandoned();
    }
    if (world.rank() == stop_rank && ++batches_done == stop_after) kill(getpid(), SIGUSR1);
    std::vector<ImageResult> r;
    for (auto& it : b) {
      ImageResult x;
      x.width = 16;
      x.height = 8;
      x.rgb.resize(16 * 8 * 3);
      for (size_t k = 0; k < x.rgb.size(); ++k) x.rgb[k] = static_cast<uint8_t>((it.params.seed * 31 + k * 7) % 256);
      x.ok = it.index != fail;
      if (!x.ok) x.error = "injected failure";
      r.push_back(std::move(x));
    }
    return r;
  };
  struct FileSink : ResultSink {
    std::ofstream f;
    void write(const WorkItem& item, const ImageResult& r) override {
      uint64_t sum = 0;
      for (uint8_t v : r.rgb) sum = sum * 131 + v;
      f << item.index << ' ' << (r.ok ? 1 : 0) << ' ' << sum << '\n';
      f.flush();
    }
  } sink;
  if (world.rank() == 0) sink.f.open(out);
  RunSummary s = run_job(world, items, opt, gen, world.rank() == 0 ? &sink : nullptr);
  if (world.rank() == 0)
    sink.f << "summary done=" << s.done << " failed=" << s.failed << " interrupted=" << s.interrupted
           << " aborted=" << s.aborted << '\n';
  if (s.interrupted) return kExitInterrupted;
  if (s.aborted) return kExitFailure;
  return s.failed ? kExitItemsFailed : kExitOk;
}
