// Ranks 1..n-1 during run_job: feed the generation thread (their own block, or batch ids asked
// of rank 0 one at a time), send each finished image to rank 0 at once, pass a local signal on
// to rank 0, obey its stop, and say DONE when nothing is left in flight.
#include <chrono>

#include "cluster/roles.h"
#include "cluster/wire.h"
#include "cluster/worker_thread.h"
#include "sdmpi/error.h"

namespace sdmpi {

void run_worker_rank(const World& world, const std::vector<WorkItem>& items, const RunOptions& opt,
                     const BatchGenerator& generate) {
  const Comm& comm = world.comm();
  const std::vector<std::vector<WorkItem>> batches = batches_for_rank(world, items, opt);
  WorkerThread worker(generate, world.rank());
  size_t next_static = 0;
  bool stopping = false, stop_reported = false, no_more_work = false, request_out = false;

  for (;;) {
    if (stop_signal_count() > 0 && !stop_reported) {
      wire::send_i64(comm, 0, 0, wire::kTagStopRequest);
      stop_reported = true;
      stopping = true;
      worker.clear_pending();
    }
    if (!stopping && worker.queued() == 0) {
      if (opt.distribution == Distribution::Static) {
        if (next_static < batches.size()) worker.push(batches[next_static++]);
        else no_more_work = true;
      } else if (!no_more_work && !request_out) {
        comm.send(0, wire::kTagRequest, nullptr, 0);
        request_out = true;
      }
    }
    while (std::optional<Comm::Envelope> m = comm.probe(0)) {
      if (m->tag == wire::kTagWork) {
        int64_t id = wire::recv_i64(comm, 0, wire::kTagWork);
        request_out = false;
        if (id < 0) no_more_work = true;
        else if (!stopping) worker.push(batches.at(static_cast<size_t>(id)));
      } else if (m->tag == wire::kTagStop) {
        wire::recv_i64(comm, 0, wire::kTagStop);
        stopping = true;
        worker.clear_pending();
      } else {
        throw Error("unexpected message tag " + std::to_string(m->tag) + " from rank 0");
      }
    }
    for (auto& [item, r] : worker.take_results()) wire::send_result(comm, r);
    if (auto e = worker.error()) fail_rank(world, describe_exception(e));
    if (worker.idle() && !request_out && (stopping || no_more_work)) break;
    worker.wait(std::chrono::milliseconds(2));
  }
  wire::send_i64(comm, 0, 0, wire::kTagDone);
}

}  // namespace sdmpi
