// Rank 0 during run_job: makes its own share of the images, hands out batch ids (dynamic), takes
// every result the moment it arrives and writes it through the ResultSink, turns a signal on any
// rank or a --fail-fast failure into one stop for every rank, and reports progress.
#include <chrono>
#include <optional>
#include <set>
#include <unordered_map>

#include "cluster/progress.h"
#include "cluster/roles.h"
#include "cluster/wire.h"
#include "cluster/worker_thread.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi {
namespace {

// What rank 0 knows while the job runs.
struct CoordinatorState {
  RunSummary sum;
  bool stopping = false, stop_sent = false;
  int ranks_done = 0;
  std::vector<char> rank_done;
  size_t next_batch = 0;  // dynamic: next batch to hand out; static: next of rank 0's own
  // Why a dead rank gets named: when one rank dies (kill -9, OOM killer), mpirun sends SIGTERM to
  // the others and SIGKILL a second later, so rank 0 sees only "a stop signal". Every live rank
  // got that signal too and says so (STOP_REQUEST) within milliseconds; a rank that stays silent
  // half a second after rank 0's own signal has most likely died. Rank 0 names it and the items
  // it held (in_flight: handed out or in its static block, not yet returned), which --resume makes.
  std::vector<std::set<int64_t>> in_flight;
  std::vector<char> heard_since_stop;
  std::optional<std::chrono::steady_clock::time_point> own_signal_at;
  bool silence_reported = false;

  void stop_for_signal(const std::string& why) {
    if (stopping) return;
    stopping = true;
    sum.interrupted = true;
    log::warn(why);
  }
};

}  // namespace

RunSummary run_coordinator(const World& world, const std::vector<WorkItem>& items, const RunOptions& opt,
                           const BatchGenerator& generate, ResultSink* sink) {
  SDMPI_CHECK(sink != nullptr, "rank 0 needs a result sink");
  const Comm& comm = world.comm();
  const int size = world.size();
  const auto t0 = std::chrono::steady_clock::now();
  CoordinatorState st;
  st.sum.total = static_cast<int64_t>(items.size());
  st.rank_done.assign(static_cast<size_t>(size), 0);
  st.in_flight.resize(static_cast<size_t>(size));
  st.heard_since_stop.assign(static_cast<size_t>(size), 0);
  if (opt.distribution == Distribution::Static)
    for (int r = 1; r < size; ++r) {
      auto [b, e] = split_block(static_cast<int64_t>(items.size()), size, r);
      for (int64_t i = b; i < e; ++i) st.in_flight[static_cast<size_t>(r)].insert(items[static_cast<size_t>(i)].index);
    }

  const std::vector<std::vector<WorkItem>> batches = batches_for_rank(world, items, opt);
  WorkerThread worker(generate, 0);
  Progress progress(opt.progress, st.sum.total, opt.progress_interval_s);
  // Index → item, to give the sink the parameters of a result from another rank.
  std::unordered_map<int64_t, const WorkItem*> by_index;
  for (const WorkItem& it : items) by_index[it.index] = &it;

  auto consume = [&](const WorkItem& item, const ImageResult& r) {
    sink->write(item, r);
    if (r.ok) {
      ++st.sum.done;
      return;
    }
    ++st.sum.failed;
    log::warn("item " + std::to_string(r.index) + " (rank " + std::to_string(r.rank) + ") failed: " + r.error);
    if (opt.fail_fast && !st.stopping) {
      st.stopping = true;
      st.sum.aborted = true;
      log::error("--fail-fast: stopping the job after item " + std::to_string(r.index) + " failed");
    }
  };

  // One message from another rank.
  auto handle = [&](const Comm::Envelope& m) {
    if (st.stopping) st.heard_since_stop[static_cast<size_t>(m.source)] = 1;
    switch (m.tag) {
      case wire::kTagRequest: {
        comm.recv(m.source, wire::kTagRequest, nullptr, 0);
        int64_t id = -1;
        if (!st.stopping && opt.distribution == Distribution::Dynamic && st.next_batch < batches.size())
          id = static_cast<int64_t>(st.next_batch++);
        if (id >= 0)
          for (const WorkItem& it : batches[static_cast<size_t>(id)]) st.in_flight[static_cast<size_t>(m.source)].insert(it.index);
        wire::send_i64(comm, id, m.source, wire::kTagWork);
        break;
      }
      case wire::kTagResult: {
        ImageResult r = wire::recv_result(comm, m.source);
        auto it = by_index.find(r.index);
        if (it == by_index.end())
          throw Error("rank " + std::to_string(m.source) + " sent an unknown item " + std::to_string(r.index));
        st.in_flight[static_cast<size_t>(m.source)].erase(r.index);
        consume(*it->second, r);
        break;
      }
      case wire::kTagStopRequest:
        wire::recv_i64(comm, m.source, wire::kTagStopRequest);
        st.stop_for_signal("rank " + std::to_string(m.source) + " got a stop signal: stopping every rank");
        break;
      case wire::kTagDone:
        wire::recv_i64(comm, m.source, wire::kTagDone);
        st.rank_done[static_cast<size_t>(m.source)] = 1;
        ++st.ranks_done;
        break;
      case wire::kTagFatal: {
        std::string msg = wire::recv_text(comm, m.source, wire::kTagFatal);
        progress.finish();
        log::error(msg + "; ending the job (every image written so far is kept; --resume continues)");
        world.abort(kExitFailure);
      }
      default:
        throw Error("unexpected message tag " + std::to_string(m.tag) + " from rank " + std::to_string(m.source));
    }
  };

  for (;;) {
    if (stop_signal_count() > 0) {
      if (!st.own_signal_at) st.own_signal_at = std::chrono::steady_clock::now();
      st.stop_for_signal("stop requested: finishing the images in flight, then exiting (resume with --resume)");
    }
    if (st.own_signal_at && !st.silence_reported &&
        std::chrono::steady_clock::now() - *st.own_signal_at > std::chrono::milliseconds(500)) {
      st.silence_reported = true;
      for (int r = 1; r < size; ++r) {
        if (st.rank_done[static_cast<size_t>(r)] || st.heard_since_stop[static_cast<size_t>(r)]) continue;
        std::string held;
        for (int64_t i : st.in_flight[static_cast<size_t>(r)]) {
          if (!held.empty()) held += ',';  // appended piecewise: GCC 12 -Wrestrict false positive on a + b
          held += std::to_string(i);
        }
        log::error("rank " + std::to_string(r) + " has not answered the stop for 0.5 s: it has probably died" +
                   (held.empty() ? std::string() : "; its unfinished items " + held + " are not in the archive") +
                   " (every finished image is; --resume makes the rest)");
      }
    }
    if (st.stopping && !st.stop_sent) {
      worker.clear_pending();
      for (int r = 1; r < size; ++r)
        if (!st.rank_done[static_cast<size_t>(r)]) wire::send_i64(comm, 0, r, wire::kTagStop);
      st.stop_sent = true;
    }
    // Keep our own worker fed with one batch at a time (so a stop drops little).
    if (!st.stopping && worker.queued() == 0 && st.next_batch < batches.size()) worker.push(batches[st.next_batch++]);

    for (int polls = 0; size > 1 && polls < 64; ++polls) {
      std::optional<Comm::Envelope> m = comm.probe(Comm::kAnySource);
      if (!m) break;
      handle(*m);
    }
    for (auto& [item, r] : worker.take_results()) consume(item, r);
    if (auto e = worker.error()) {
      progress.finish();
      fail_rank(world, describe_exception(e));
    }
    progress.update(st.sum.done + st.sum.failed, st.sum.failed, worker.step_progress());

    bool own_done = worker.idle() && (st.stopping || st.next_batch >= batches.size());
    if (own_done && st.ranks_done == size - 1) break;
    worker.wait(std::chrono::milliseconds(size > 1 ? 2 : 50));
  }
  progress.update(st.sum.done + st.sum.failed, st.sum.failed, {0, 0}, true);
  progress.finish();
  st.sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st.sum;
}

}  // namespace sdmpi
