// Rank 0's progress report: a bar redrawn in place on a terminal, or a line every interval in a
// batch log (or nothing). The text of both is format_progress_line (sdmpi/cluster.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <utility>

#include "sdmpi/cluster.h"

namespace sdmpi {

class Progress {
 public:
  Progress(ProgressMode mode, int64_t total, double interval_s);
  // `step`: (steps done, steps) of rank 0's batch in flight, shown on the bar. Reports at most
  // every 0.2 s (bar) or every interval (lines) unless `force`.
  void update(int64_t done, int64_t failed, std::pair<int, int> step, bool force = false);
  // Ends the bar's line, so that the next message starts on its own.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  ProgressMode mode_;
  int64_t total_;
  double interval_;
  Clock::time_point start_, last_;
  bool dirty_ = false;
  int64_t last_done_printed_ = -1;
};

}  // namespace sdmpi
