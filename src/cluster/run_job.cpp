// run_job: the coordinator (rank 0) and worker (other ranks) protocol.
//
// Each rank has one generation thread (Worker) fed with batches; the main thread alone talks MPI.
//   static:  every rank makes its contiguous block of items (accelerate's split), in batches.
//   dynamic: rank 0 hands out batch ids one at a time to whichever rank asks (its own worker
//            included), so fast and slow ranks finish together.
// Every finished image goes to rank 0 at once (header + bytes), which writes and flushes it
// through the ResultSink before anything else. A stop (signal on any rank, or --fail-fast) makes
// rank 0 tell every rank to stop after the batch in flight; everyone reports what it finished,
// says DONE, and rank 0 broadcasts the summary so all ranks exit with the same code.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "sdmpi/cluster.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

#ifdef SDMPI_HAVE_MPI
#include <mpi.h>
#endif

namespace sdmpi {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- the generation thread of one rank -------------------------------------------------------------
class Worker {
 public:
  Worker(const BatchGenerator& generate, int rank) : generate_(generate), rank_(rank) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void push(std::vector<WorkItem> batch) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(batch));
    }
    cv_.notify_all();
  }
  // Drops batches not started yet (a stop).
  void clear_pending() {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.clear();
  }
  size_t queued() {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
  }
  bool idle() {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.empty() && !busy_ && results_.empty();
  }
  std::vector<std::pair<WorkItem, ImageResult>> take_results() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::pair<WorkItem, ImageResult>> out(results_.begin(), results_.end());
    results_.clear();
    return out;
  }
  std::exception_ptr error() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }
  // Waits until something changes or the timeout passes.
  void wait(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    // Idle waits sleep the whole timeout (no spinning that would steal a core from generation).
    done_cv_.wait_for(lock, timeout, [this] { return !results_.empty() || error_; });
  }
  // Progress of the batch in flight (steps done / steps).
  std::pair<int, int> step_progress() const { return {step_.load(), steps_.load()}; }

 private:
  void loop() {
    for (;;) {
      std::vector<WorkItem> batch;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return closed_ || (!queue_.empty() && !error_); });
        if (closed_) return;
        batch = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      std::vector<ImageResult> results;
      std::exception_ptr error;
      bool abandoned = false;
      try {
        step_ = 0;
        steps_ = batch.empty() ? 0 : batch.front().params.steps;
        results = generate_(batch, [this](int step, int steps) {
          step_ = step;
          steps_ = steps;
          return stop_signal_count() < 2;
        });
        if (results.size() != batch.size()) throw Error("internal: the generator returned a wrong number of results");
      } catch (const BatchAbandoned&) {
        abandoned = true;
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (error) error_ = error;
        if (!abandoned && !error)
          for (size_t i = 0; i < batch.size(); ++i) {
            results[i].index = batch[i].index;
            results[i].rank = rank_;
            results_.emplace_back(batch[i], std::move(results[i]));
          }
        busy_ = false;
        step_ = 0;
      }
      done_cv_.notify_all();
    }
  }

  const BatchGenerator& generate_;
  int rank_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::vector<WorkItem>> queue_;
  std::deque<std::pair<WorkItem, ImageResult>> results_;
  std::exception_ptr error_;
  bool busy_ = false, closed_ = false;
  std::atomic<int> step_{0}, steps_{0};
};

// ---- progress on rank 0 -----------------------------------------------------------------------------
class Progress {
 public:
  Progress(ProgressMode mode, int64_t total, double interval_s) : total_(total), interval_(interval_s) {
    if (mode == ProgressMode::Auto) mode = isatty(STDERR_FILENO) ? ProgressMode::Bar : ProgressMode::Lines;
    mode_ = mode;
    start_ = last_ = Clock::now();
  }
  void update(int64_t done, int64_t failed, std::pair<int, int> step, bool force = false) {
    if (mode_ == ProgressMode::None) return;
    double since = std::chrono::duration<double>(Clock::now() - last_).count();
    double elapsed = seconds_since(start_);
    if (mode_ == ProgressMode::Bar) {
      if (!force && since < 0.2) return;
      const int width = 30;
      int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
      std::string bar(static_cast<size_t>(filled), '#');
      bar.resize(width, '.');
      std::string line = "\r[" + bar + "] " + format_progress_line(done, total_, elapsed, failed);
      if (step.second > 0 && done < total_)
        line += "  step " + std::to_string(step.first) + "/" + std::to_string(step.second);
      line += "\033[K";
      std::fputs(line.c_str(), stderr);
      std::fflush(stderr);
      dirty_ = true;
    } else {
      if (!force && since < interval_) return;
      if (force && done == last_done_printed_) return;
      log::info("progress: " + format_progress_line(done, total_, elapsed, failed));
      last_done_printed_ = done;
    }
    last_ = Clock::now();
  }
  void finish() {
    if (dirty_) {
      std::fputs("\n", stderr);
      dirty_ = false;
    }
  }

 private:
  ProgressMode mode_;
  int64_t total_;
  double interval_;
  Clock::time_point start_, last_;
  bool dirty_ = false;
  int64_t last_done_printed_ = -1;
};

// ---- messages ------------------------------------------------------------------------------------------
enum Tag : int {
  kTagRequest = 101,  // worker → 0: give me a batch (dynamic)
  kTagWork = 102,     // 0 → worker: int64 batch id, -1 = no more
  kTagResult = 103,   // worker → 0: ResultHeader, then kTagResultData bytes
  kTagResultData = 104,
  kTagDone = 105,         // worker → 0: finished
  kTagStop = 106,         // 0 → worker: stop after the batch in flight
  kTagStopRequest = 107,  // worker → 0: a signal arrived here
  kTagFatal = 108,        // worker → 0: this rank failed; message follows
};

struct ResultHeader {
  int64_t index;
  int32_t ok, width, height, rank;
  double seconds;
  uint64_t error_bytes, rgb_bytes, png_bytes, chunk_bytes;
};

#ifdef SDMPI_HAVE_MPI
constexpr uint64_t kChunk = 1u << 30;  // MPI counts are int: send big payloads in 1 GiB pieces

void send_bytes(const void* data, uint64_t n, int dest, int tag) {
  const char* p = static_cast<const char*>(data);
  do {
    int c = static_cast<int>(std::min(n, kChunk));
    MPI_Send(p, c, MPI_BYTE, dest, tag, MPI_COMM_WORLD);
    p += c;
    n -= static_cast<uint64_t>(c);
  } while (n > 0);
}
void recv_bytes(void* data, uint64_t n, int source, int tag) {
  char* p = static_cast<char*>(data);
  do {
    int c = static_cast<int>(std::min(n, kChunk));
    MPI_Recv(p, c, MPI_BYTE, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    p += c;
    n -= static_cast<uint64_t>(c);
  } while (n > 0);
}

void send_result(const ImageResult& r) {
  ResultHeader h{r.index, r.ok ? 1 : 0, r.width, r.height, r.rank, r.seconds,
                 r.error.size(), r.rgb.size(), r.png.size(), r.archive_chunk.size()};
  MPI_Send(&h, sizeof h, MPI_BYTE, 0, kTagResult, MPI_COMM_WORLD);
  if (h.error_bytes) send_bytes(r.error.data(), h.error_bytes, 0, kTagResultData);
  if (h.rgb_bytes) send_bytes(r.rgb.data(), h.rgb_bytes, 0, kTagResultData);
  if (h.png_bytes) send_bytes(r.png.data(), h.png_bytes, 0, kTagResultData);
  if (h.chunk_bytes) send_bytes(r.archive_chunk.data(), h.chunk_bytes, 0, kTagResultData);
}

ImageResult recv_result(int source) {
  ResultHeader h;
  MPI_Recv(&h, sizeof h, MPI_BYTE, source, kTagResult, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  ImageResult r;
  r.index = h.index;
  r.ok = h.ok != 0;
  r.width = h.width;
  r.height = h.height;
  r.rank = h.rank;
  r.seconds = h.seconds;
  r.error.resize(h.error_bytes);
  r.rgb.resize(h.rgb_bytes);
  r.png.resize(h.png_bytes);
  r.archive_chunk.resize(h.chunk_bytes);
  if (h.error_bytes) recv_bytes(r.error.data(), h.error_bytes, source, kTagResultData);
  if (h.rgb_bytes) recv_bytes(r.rgb.data(), h.rgb_bytes, source, kTagResultData);
  if (h.png_bytes) recv_bytes(r.png.data(), h.png_bytes, source, kTagResultData);
  if (h.chunk_bytes) recv_bytes(r.archive_chunk.data(), h.chunk_bytes, source, kTagResultData);
  return r;
}

void send_i64(int64_t v, int dest, int tag) { MPI_Send(&v, 1, MPI_INT64_T, dest, tag, MPI_COMM_WORLD); }
int64_t recv_i64(int source, int tag) {
  int64_t v = 0;
  MPI_Recv(&v, 1, MPI_INT64_T, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return v;
}
#endif

[[noreturn]] void fail_rank(const World& world, const std::string& what) {
  log::error("rank " + std::to_string(world.rank()) + " on " + world.info().host + " failed: " + what);
#ifdef SDMPI_HAVE_MPI
  if (world.size() > 1 && world.rank() != 0) {
    // Tell rank 0 (which flushes and ends the job); if it never answers, abort.
    std::string msg = "rank " + std::to_string(world.rank()) + ": " + what;
    int64_t n = static_cast<int64_t>(msg.size());
    MPI_Send(&n, 1, MPI_INT64_T, 0, kTagFatal, MPI_COMM_WORLD);
    MPI_Send(msg.data(), static_cast<int>(msg.size()), MPI_CHAR, 0, kTagFatal, MPI_COMM_WORLD);
    std::this_thread::sleep_for(std::chrono::seconds(10));
  }
#endif
  world.abort(kExitFailure);
}

std::string describe_exception(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

// ---- rank 0 --------------------------------------------------------------------------------------------
RunSummary run_coordinator(const World& world, const std::vector<WorkItem>& items, const RunOptions& opt,
                           const BatchGenerator& generate, ResultSink* sink) {
  SDMPI_CHECK(sink != nullptr, "rank 0 needs a result sink");
  const int size = world.size();
  RunSummary sum;
  sum.total = static_cast<int64_t>(items.size());
  auto t0 = Clock::now();

  std::vector<std::vector<WorkItem>> batches;
  if (opt.distribution == Distribution::Static) {
    auto [b, e] = split_block(static_cast<int64_t>(items.size()), size, 0);
    batches = make_batches(std::vector<WorkItem>(items.begin() + b, items.begin() + e), opt.batch_size);
  } else {
    batches = make_batches(items, opt.batch_size);
  }
  size_t next_batch = 0;  // dynamic: next batch to hand out; static: next of rank 0's own
  Worker worker(generate, 0);
  Progress progress(opt.progress, sum.total, opt.progress_interval_s);
  int ranks_done = 0;
  std::vector<char> rank_done(static_cast<size_t>(size), 0);
  bool stopping = false, stop_sent = false;
  // Index → item, to give the sink the parameters of a result from another rank.
  std::unordered_map<int64_t, const WorkItem*> by_index;
  for (const WorkItem& it : items) by_index[it.index] = &it;

  auto consume = [&](const WorkItem& item, const ImageResult& r) {
    sink->write(item, r);
    if (r.ok) {
      ++sum.done;
    } else {
      ++sum.failed;
      log::warn("item " + std::to_string(r.index) + " (rank " + std::to_string(r.rank) + ") failed: " + r.error);
      if (opt.fail_fast && !stopping) {
        stopping = true;
        sum.aborted = true;
        log::error("--fail-fast: stopping the job after item " + std::to_string(r.index) + " failed");
      }
    }
  };

  for (;;) {
    if (stop_signal_count() > 0 && !stopping) {
      stopping = true;
      sum.interrupted = true;
      log::warn("stop requested: finishing the images in flight, then exiting (resume with --resume)");
    }
    if (stopping && !stop_sent) {
      worker.clear_pending();
#ifdef SDMPI_HAVE_MPI
      for (int r = 1; r < size; ++r)
        if (!rank_done[static_cast<size_t>(r)]) send_i64(0, r, kTagStop);
#endif
      stop_sent = true;
    }
    // Keep our own worker fed with one batch at a time (so a stop drops little).
    if (!stopping && worker.queued() == 0 && next_batch < batches.size()) worker.push(batches[next_batch++]);

#ifdef SDMPI_HAVE_MPI
    for (int polls = 0; size > 1 && polls < 64; ++polls) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
      if (!flag) break;
      switch (st.MPI_TAG) {
        case kTagRequest: {
          MPI_Recv(nullptr, 0, MPI_BYTE, st.MPI_SOURCE, kTagRequest, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          int64_t id = -1;
          if (!stopping && opt.distribution == Distribution::Dynamic && next_batch < batches.size())
            id = static_cast<int64_t>(next_batch++);
          send_i64(id, st.MPI_SOURCE, kTagWork);
          break;
        }
        case kTagResult: {
          ImageResult r = recv_result(st.MPI_SOURCE);
          auto it = by_index.find(r.index);
          if (it == by_index.end()) throw Error("rank " + std::to_string(st.MPI_SOURCE) + " sent an unknown item " + std::to_string(r.index));
          consume(*it->second, r);
          break;
        }
        case kTagStopRequest:
          recv_i64(st.MPI_SOURCE, kTagStopRequest);
          if (!stopping) {
            stopping = true;
            sum.interrupted = true;
            log::warn("rank " + std::to_string(st.MPI_SOURCE) + " got a stop signal: stopping every rank");
          }
          break;
        case kTagDone:
          recv_i64(st.MPI_SOURCE, kTagDone);
          rank_done[static_cast<size_t>(st.MPI_SOURCE)] = 1;
          ++ranks_done;
          break;
        case kTagFatal: {
          int64_t n = recv_i64(st.MPI_SOURCE, kTagFatal);
          std::string msg(static_cast<size_t>(n), '\0');
          MPI_Recv(msg.data(), static_cast<int>(n), MPI_CHAR, st.MPI_SOURCE, kTagFatal, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
          progress.finish();
          log::error(msg + "; ending the job (every image written so far is kept; --resume continues)");
          world.abort(kExitFailure);
        }
        default:
          throw Error("unexpected message tag " + std::to_string(st.MPI_TAG) + " from rank " + std::to_string(st.MPI_SOURCE));
      }
    }
#endif
    for (auto& [item, r] : worker.take_results()) consume(item, r);
    if (auto e = worker.error()) {
      progress.finish();
      fail_rank(world, describe_exception(e));
    }
    progress.update(sum.done + sum.failed, sum.failed, worker.step_progress());

    bool own_done = worker.idle() && (stopping || next_batch >= batches.size());
    if (own_done && ranks_done == size - 1) break;
    worker.wait(std::chrono::milliseconds(size > 1 ? 2 : 50));
  }
  progress.update(sum.done + sum.failed, sum.failed, {0, 0}, true);
  progress.finish();
  sum.seconds = seconds_since(t0);
  return sum;
}

// ---- ranks 1..n-1 ------------------------------------------------------------------------------------
#ifdef SDMPI_HAVE_MPI
void run_worker_rank(const World& world, const std::vector<WorkItem>& items, const RunOptions& opt,
                     const BatchGenerator& generate) {
  const int rank = world.rank(), size = world.size();
  std::vector<std::vector<WorkItem>> batches;
  if (opt.distribution == Distribution::Static) {
    auto [b, e] = split_block(static_cast<int64_t>(items.size()), size, rank);
    batches = make_batches(std::vector<WorkItem>(items.begin() + b, items.begin() + e), opt.batch_size);
  } else {
    batches = make_batches(items, opt.batch_size);  // the same list as rank 0's; it sends ids
  }
  Worker worker(generate, rank);
  size_t next_static = 0;
  bool stopping = false, stop_reported = false, no_more_work = false, request_out = false;

  for (;;) {
    if (stop_signal_count() > 0 && !stop_reported) {
      send_i64(0, 0, kTagStopRequest);
      stop_reported = true;
      stopping = true;
      worker.clear_pending();
    }
    if (!stopping && worker.queued() == 0) {
      if (opt.distribution == Distribution::Static) {
        if (next_static < batches.size()) worker.push(batches[next_static++]);
        else no_more_work = true;
      } else if (!no_more_work && !request_out) {
        MPI_Send(nullptr, 0, MPI_BYTE, 0, kTagRequest, MPI_COMM_WORLD);
        request_out = true;
      }
    }
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
      if (!flag) break;
      if (st.MPI_TAG == kTagWork) {
        int64_t id = recv_i64(0, kTagWork);
        request_out = false;
        if (id < 0) no_more_work = true;
        else if (!stopping) worker.push(batches.at(static_cast<size_t>(id)));
      } else if (st.MPI_TAG == kTagStop) {
        recv_i64(0, kTagStop);
        stopping = true;
        worker.clear_pending();
      } else {
        throw Error("unexpected message tag " + std::to_string(st.MPI_TAG) + " from rank 0");
      }
    }
    for (auto& [item, r] : worker.take_results()) send_result(r);
    if (auto e = worker.error()) fail_rank(world, describe_exception(e));
    if (worker.idle() && !request_out && (stopping || no_more_work)) break;
    worker.wait(std::chrono::milliseconds(2));
  }
  send_i64(0, 0, kTagDone);
}
#endif

}  // namespace

std::string format_progress_line(int64_t done, int64_t total, double elapsed_s, int64_t failed) {
  char buf[160];
  double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
  std::string eta = "--:--";
  if (rate > 0 && total >= done) {
    int64_t s = static_cast<int64_t>(static_cast<double>(total - done) / rate + 0.5);
    char e[32];
    std::snprintf(e, sizeof e, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
    eta = e;
  }
  std::snprintf(buf, sizeof buf, "%lld/%lld images (%.0f%%), %.3g img/s, ETA %s", static_cast<long long>(done),
                static_cast<long long>(total), total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0,
                rate, eta.c_str());
  std::string out = buf;
  if (failed > 0) out += ", " + std::to_string(failed) + " failed";
  return out;
}

RunSummary run_job(const World& world, const std::vector<WorkItem>& items, const RunOptions& options,
                   const BatchGenerator& generate, ResultSink* sink) {
  RunSummary sum;
  if (world.rank() == 0) {
    sum = run_coordinator(world, items, options, generate, sink);
  } else {
#ifdef SDMPI_HAVE_MPI
    run_worker_rank(world, items, options, generate);
#endif
  }
  // Everyone returns rank 0's summary, so every rank exits with the same code.
  int64_t packed[6] = {sum.done, sum.failed, sum.skipped, sum.total, sum.interrupted ? 1 : 0, sum.aborted ? 1 : 0};
  std::string bytes(reinterpret_cast<const char*>(packed), sizeof packed);
  bytes = world.broadcast(bytes);
  std::memcpy(packed, bytes.data(), sizeof packed);
  double seconds = sum.seconds;
  sum = RunSummary{packed[0], packed[1], packed[2], packed[3], packed[4] != 0, packed[5] != 0, seconds};
  return sum;
}

}  // namespace sdmpi
