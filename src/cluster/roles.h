// The two roles of run_job (sdmpi/cluster.h) and what they share. Rank 0 is the coordinator
// (coordinator.cpp): it makes images too, hands out batches, writes every result and decides
// when to stop. Every other rank runs the worker-rank loop (worker_rank.cpp). The messages
// between them are in wire.h.
#pragma once

#include <exception>
#include <string>
#include <vector>

#include "sdmpi/cluster.h"

namespace sdmpi {

RunSummary run_coordinator(const World& world, const std::vector<WorkItem>& items, const RunOptions& options,
                           const BatchGenerator& generate, ResultSink* sink);
void run_worker_rank(const World& world, const std::vector<WorkItem>& items, const RunOptions& options,
                     const BatchGenerator& generate);

// The batches a rank works through: its own contiguous block (static) or the whole list, the
// same on every rank, whose ids rank 0 hands out (dynamic).
std::vector<std::vector<WorkItem>> batches_for_rank(const World& world, const std::vector<WorkItem>& items,
                                                    const RunOptions& options);

// Ends this rank after its generator failed: logs why; a worker rank first tells rank 0, which
// ends the job in order (if it never does, the rank aborts the job itself).
[[noreturn]] void fail_rank(const World& world, const std::string& what);
std::string describe_exception(std::exception_ptr e);

}  // namespace sdmpi
