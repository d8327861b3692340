// The messages between rank 0 and the other ranks during run_job, over Comm: their tags and
// how an ImageResult travels. Both sides of every message are here, so they cannot drift apart.
//
// A result is a fixed-size ResultHeader (tag kTagResult), then its non-empty byte fields in the
// order error, rgb, png, archive chunk (tag kTagResultData each, 1 GiB pieces when larger).
// Numbers travel in the host's byte order: every rank of a job runs on the same architecture.
#pragma once

#include <cstdint>
#include <string>

#include "sdmpi/comm.h"
#include "sdmpi/job.h"

namespace sdmpi::wire {

enum Tag : int {
  kTagRequest = 101,  // worker → 0: give me a batch (dynamic); an empty message
  kTagWork = 102,     // 0 → worker: int64 batch id, -1 = no more
  kTagResult = 103,   // worker → 0: ResultHeader, then kTagResultData bytes
  kTagResultData = 104,
  kTagDone = 105,         // worker → 0: finished (int64 0)
  kTagStop = 106,         // 0 → worker: stop after the batch in flight (int64 0)
  kTagStopRequest = 107,  // worker → 0: a signal arrived here (int64 0)
  kTagFatal = 108,        // worker → 0: this rank failed; int64 length, then the message
};

void send_result(const Comm& comm, const ImageResult& r);  // to rank 0
ImageResult recv_result(const Comm& comm, int source);

void send_i64(const Comm& comm, int64_t v, int dest, int tag);
int64_t recv_i64(const Comm& comm, int source, int tag);

// Text as its int64 length, then its bytes, both with `tag`.
void send_text(const Comm& comm, const std::string& text, int dest, int tag);
std::string recv_text(const Comm& comm, int source, int tag);

}  // namespace sdmpi::wire
