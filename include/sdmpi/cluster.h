// The cluster layer: the world of ranks (MPI or one process, behind Comm), agreement on errors,
// device binding, work distribution, streaming gather to rank 0, signals and progress. It moves
// work items and finished uint8 images (ImageResult, sdmpi/job.h); it never sees a model.
//
// Every rank runs one generation worker thread (the model) and its main thread makes every Comm
// call (MPI_THREAD_FUNNELED). Rank 0's main thread is the coordinator: it hands out work in the
// dynamic mode, receives every finished image as soon as it exists and passes it to the
// ResultSink (PNG files, the HDF5 archive), which flushes, so a crash loses only images in flight.
#pragma once

#include <atomic>
#include <exception>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/comm.h"
#include "sdmpi/error.h"
#include "sdmpi/job.h"

namespace sdmpi {

// ---- the world of ranks ----------------------------------------------------------------------------
struct WorldInfo {
  int rank = 0, size = 1;              // MPI_COMM_WORLD
  int local_rank = 0, local_size = 1;  // among the ranks on this node (Comm::split_by_node)
  std::string host;
  bool mpi = false;                    // built with MPI and initialised
};

// The ranks of this job: the build's Comm (MPI or one process) and where this rank sits.
class World {
 public:
  // Starts the Comm (MPI_Init_thread, FUNNELED, when built with MPI); throws Error if it cannot.
  World(int* argc, char*** argv);
  ~World();  // MPI_Finalize
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  const WorldInfo& info() const { return info_; }
  int rank() const { return info_.rank; }
  int size() const { return info_.size; }
  const Comm& comm() const { return *comm_; }

  // The collectives of comm(), for the app's agreement on errors.
  std::string broadcast(const std::string& from_root) const { return comm_->broadcast(from_root); }
  bool all_true(bool local) const { return comm_->all_true(local); }
  int max_int(int local) const { return comm_->max_int(local); }
  std::vector<std::string> gather_strings(const std::string& local) const { return comm_->gather_strings(local); }
  void barrier() const { comm_->barrier(); }
  [[noreturn]] void abort(int code) const;

 private:
  std::unique_ptr<Comm> comm_;
  WorldInfo info_;
};

// ---- agreement on errors ------------------------------------------------------------------------------
// Rank 0's error as the other ranks see it: rank 0 prints it, they stay silent (see agree).
struct RootError : Error {
  using Error::Error;
};

// Runs fn on rank 0 only and shares its outcome: every rank returns rank 0's string or throws
// rank 0's error (an Error on rank 0, a RootError elsewhere), with rank 0's exit code. Collective.
std::string on_root(const World& world, const std::function<std::string()>& fn);

// Runs a phase on every rank and agrees on its outcome, so one rank's failure never leaves the
// others waiting in a collective. Returns 0 or the worst exit code of any rank, the same on
// every rank; prints each distinct failure once as "sd_mpi: error: ..." (rank 0's message, or a
// failing rank's own when rank 0 succeeded). Collective.
int agree(const World& world, const std::function<void()>& phase);

// Device index for a rank: local_rank mod device_count. Throws InputError when more ranks than
// devices share a node and sharing was not allowed.
int choose_device(int local_rank, int local_size, int device_count, bool allow_sharing);

// ---- shards and distribution ----------------------------------------------------------------------
struct Shard {
  int index = 0, count = 1;
};
// Parses "i/K" (0 <= i < K). Empty text: SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when both
// are set (SLURM_ARRAY_TASK_MIN must be 0), else 0/1.
Shard parse_shard(const std::string& text);

// The contiguous block [begin, end) of n items that part `i` of `parts` gets, as accelerate's
// split_between_processes: the first n % parts parts get one extra item.
std::pair<int64_t, int64_t> split_block(int64_t n, int parts, int i);

// Groups items into batches of at most `batch_size` items that can share one UNet call (same
// steps, size, guidance, sampler, schedule, eta, clip skip), keeping the order of `items`.
std::vector<std::vector<WorkItem>> make_batches(const std::vector<WorkItem>& items, int batch_size);

// ---- running a job ----------------------------------------------------------------------------------
// Thrown by a BatchGenerator whose StepCallback returned false: the batch was abandoned and its
// items stay pending (not failed), so --resume makes them.
struct BatchAbandoned : std::exception {
  const char* what() const noexcept override { return "batch abandoned"; }
};

// Called by the worker between denoising steps: (steps done, total steps) of the current batch.
// Returns false to abandon the batch (a second signal).
using StepCallback = std::function<bool(int step, int steps)>;
// Generates one batch; returns one result per item, in order. May throw (the rank then fails).
using BatchGenerator = std::function<std::vector<ImageResult>(const std::vector<WorkItem>&, const StepCallback&)>;

// Rank 0's consumer of results. Must persist (and flush) each result before returning.
class ResultSink {
 public:
  virtual ~ResultSink() = default;
  virtual void write(const WorkItem& item, const ImageResult& result) = 0;
};

enum class Distribution { Static, Dynamic };
enum class ProgressMode { Auto, Bar, Lines, None };

struct RunOptions {
  Distribution distribution = Distribution::Static;
  int batch_size = 1;
  bool fail_fast = false;
  ProgressMode progress = ProgressMode::Auto;
  double progress_interval_s = 30;  // for periodic lines in batch logs
};

struct RunSummary {
  int64_t done = 0, failed = 0, skipped = 0, total = 0;
  bool interrupted = false;  // stopped by a signal (exit 75)
  bool aborted = false;      // --fail-fast stopped the job
  double seconds = 0;
};

// Runs `items` (the job's items still to do, in global-index order) over all ranks. Every rank
// must call it with the same items and options; `sink` is used on rank 0 only (others may pass
// nullptr). Returns on every rank once the job is finished or stopped.
RunSummary run_job(const World& world, const std::vector<WorkItem>& items, const RunOptions& options,
                   const BatchGenerator& generate, ResultSink* sink);

// ---- signals ----------------------------------------------------------------------------------------
// Installs SIGTERM/SIGUSR1/SIGINT handlers that set a flag (async-signal-safe); run_job stops
// every rank at the next image boundary once any rank saw one. A second signal abandons the
// batch in flight.
void install_stop_handlers();
int stop_signal_count();
void request_stop_for_testing();

// Progress text for rank 0 (exposed for tests).
std::string format_progress_line(int64_t done, int64_t total, double elapsed_s, int64_t failed);

}  // namespace sdmpi
