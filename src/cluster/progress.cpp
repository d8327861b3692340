// Rank 0's progress report (see progress.h) and the one line of text it is made of.
#include "cluster/progress.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "sdmpi/log.h"

namespace sdmpi {

Progress::Progress(ProgressMode mode, int64_t total, double interval_s) : total_(total), interval_(interval_s) {
  if (mode == ProgressMode::Auto) mode = isatty(STDERR_FILENO) ? ProgressMode::Bar : ProgressMode::Lines;
  mode_ = mode;
  start_ = last_ = Clock::now();
}

void Progress::update(int64_t done, int64_t failed, std::pair<int, int> step, bool force) {
  if (mode_ == ProgressMode::None) return;
  double since = std::chrono::duration<double>(Clock::now() - last_).count();
  double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
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

void Progress::finish() {
  if (dirty_) {
    std::fputs("\n", stderr);
    dirty_ = false;
  }
}

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

}  // namespace sdmpi
