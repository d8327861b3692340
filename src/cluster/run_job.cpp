// run_job: every rank takes its role (roles.h), then all return rank 0's summary, so every rank
// exits with the same code. The protocol in brief:
//   static:  every rank makes its contiguous block of items (accelerate's split), in batches.
//   dynamic: rank 0 hands out batch ids one at a time to whichever rank asks (its own worker
//            included), so fast and slow ranks finish together.
// Every finished image goes to rank 0 at once (wire.h), which writes and flushes it through the
// ResultSink before anything else. A stop (signal on any rank, or --fail-fast) makes rank 0 tell
// every rank to stop after the batch in flight; everyone reports what it finished, says DONE, and
// rank 0 broadcasts the summary.
#include <chrono>
#include <cstring>
#include <thread>

#include "cluster/roles.h"
#include "cluster/wire.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi {

std::vector<std::vector<WorkItem>> batches_for_rank(const World& world, const std::vector<WorkItem>& items,
                                                    const RunOptions& options) {
  if (options.distribution == Distribution::Dynamic) return make_batches(items, options.batch_size);
  auto [b, e] = split_block(static_cast<int64_t>(items.size()), world.size(), world.rank());
  return make_batches(std::vector<WorkItem>(items.begin() + b, items.begin() + e), options.batch_size);
}

void fail_rank(const World& world, const std::string& what) {
  log::error("rank " + std::to_string(world.rank()) + " on " + world.info().host + " failed: " + what);
  if (world.size() > 1 && world.rank() != 0) {
    // Tell rank 0 (which flushes and ends the job); if it never answers, abort.
    wire::send_text(world.comm(), "rank " + std::to_string(world.rank()) + ": " + what, 0, wire::kTagFatal);
    std::this_thread::sleep_for(std::chrono::seconds(10));
  }
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

RunSummary run_job(const World& world, const std::vector<WorkItem>& items, const RunOptions& options,
                   const BatchGenerator& generate, ResultSink* sink) {
  RunSummary sum;
  if (world.rank() == 0)
    sum = run_coordinator(world, items, options, generate, sink);
  else
    run_worker_rank(world, items, options, generate);
  // Everyone returns rank 0's summary, so every rank exits with the same code.
  int64_t packed[6] = {sum.done, sum.failed, sum.skipped, sum.total, sum.interrupted ? 1 : 0, sum.aborted ? 1 : 0};
  std::string bytes(reinterpret_cast<const char*>(packed), sizeof packed);
  bytes = world.comm().broadcast(bytes);
  std::memcpy(packed, bytes.data(), sizeof packed);
  double seconds = sum.seconds;
  sum = RunSummary{packed[0], packed[1], packed[2], packed[3], packed[4] != 0, packed[5] != 0, seconds};
  return sum;
}

}  // namespace sdmpi
