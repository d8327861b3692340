// The generation thread of one rank (see worker_thread.h). A generator that throws
// BatchAbandoned (a second stop signal) leaves its items pending; any other exception is kept
// for the main thread, which ends the rank.
#include "cluster/worker_thread.h"

#include "sdmpi/error.h"

namespace sdmpi {

WorkerThread::WorkerThread(const BatchGenerator& generate, int rank)
    : generate_(generate), rank_(rank), thread_([this] { loop(); }) {}

WorkerThread::~WorkerThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void WorkerThread::push(std::vector<WorkItem> batch) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(batch));
  }
  cv_.notify_all();
}

void WorkerThread::clear_pending() {
  std::lock_guard<std::mutex> lock(mutex_);
  queue_.clear();
}

size_t WorkerThread::queued() {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

bool WorkerThread::idle() {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.empty() && !busy_ && results_.empty();
}

std::vector<std::pair<WorkItem, ImageResult>> WorkerThread::take_results() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::pair<WorkItem, ImageResult>> out(results_.begin(), results_.end());
  results_.clear();
  return out;
}

std::exception_ptr WorkerThread::error() {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

void WorkerThread::wait(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  // Idle waits sleep the whole timeout (no spinning that would steal a core from generation).
  done_cv_.wait_for(lock, timeout, [this] { return !results_.empty() || error_; });
}

void WorkerThread::loop() {
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

}  // namespace sdmpi
