// The generation thread of one rank: a queue of batches in, finished results out. The rank's
// main thread feeds it and drains it (and alone talks to other ranks), so generating never waits
// for messages and messages never wait for a batch.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "sdmpi/cluster.h"

namespace sdmpi {

class WorkerThread {
 public:
  WorkerThread(const BatchGenerator& generate, int rank);
  ~WorkerThread();  // drops what is queued, waits for the batch in flight
  WorkerThread(const WorkerThread&) = delete;
  WorkerThread& operator=(const WorkerThread&) = delete;

  void push(std::vector<WorkItem> batch);
  // Drops batches not started yet (a stop).
  void clear_pending();
  size_t queued();
  // Nothing queued, nothing in flight, nothing finished and not yet taken.
  bool idle();
  std::vector<std::pair<WorkItem, ImageResult>> take_results();
  // The generator's exception, once one threw (the thread then takes no more batches).
  std::exception_ptr error();
  // Waits until a result or an error arrives, or the timeout passes.
  void wait(std::chrono::milliseconds timeout);
  // Progress of the batch in flight (steps done / steps).
  std::pair<int, int> step_progress() const { return {step_.load(), steps_.load()}; }

 private:
  void loop();

  const BatchGenerator& generate_;
  int rank_;
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::deque<std::vector<WorkItem>> queue_;
  std::deque<std::pair<WorkItem, ImageResult>> results_;
  std::exception_ptr error_;
  bool busy_ = false, closed_ = false;
  std::atomic<int> step_{0}, steps_{0};
  std::thread thread_;  // last: starts once every member above exists
};

}  // namespace sdmpi
