// SIGTERM / SIGUSR1 / SIGINT: counted by an async-signal-safe handler; run_job turns the first
// into "stop every rank at the next image boundary" and a second into "abandon the batch now".
// SLURM sends SIGUSR1 early with --signal=B:USR1@<s> (forwarded to the ranks by the batch
// script) and SIGTERM at the time limit; mpirun forwards both to every rank.
#include <csignal>

#include "sdmpi/cluster.h"

namespace sdmpi {
namespace {
volatile std::sig_atomic_t g_stop_signals = 0;

extern "C" void on_stop_signal(int) {
  if (g_stop_signals < 100) g_stop_signals = g_stop_signals + 1;
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int stop_signal_count() { return g_stop_signals; }
void request_stop_for_testing() { g_stop_signals = g_stop_signals + 1; }

}  // namespace sdmpi
