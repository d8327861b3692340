// One copy of the weights per node (docs/design.md §6, "weights at scale"): ranks that compute
// on the host and share a node read the weight files once, convert them once (to float32, in the
// backend's layout), into memory the node's ranks share, and every rank's backend uses those bytes
// in place. So `mpirun -np 8` on one node holds one model's worth of weights, not eight, and the
// files are read by one rank per node instead of every rank. GPU ranks take part too: the node's
// first rank reads and converts once, and every GPU rank uploads from the shared block.
//
// The app is where the two sides meet: the cluster layer lends the memory (Comm::
// node_shared_buffer, an MPI shared-memory window) and knows nothing of tensors; the io layer lays
// the weights out and converts them (PreparedWeightSource) and knows nothing of MPI; the model sees
// an ordinary ModelSource.
#pragma once

#include "sdmpi/backend.h"
#include "sdmpi/cluster.h"
#include "sdmpi/pipeline.h"

namespace sdmpi::app {

// Whether ranks on `backend` take part: host backends computing in float32 (they compute from the
// node's block in place) and GPU backends (they upload from it instead of reading the files).
bool shares_weights_on_node(const Backend* backend);

// `model` with its weights in node-shared memory when every rank's backend shares
// (shares_weights_on_node), `enabled` (no --no-shared-weights) and another rank shares this rank's node;
// otherwise `model` itself (each rank then converts its own copy as before). The node's rank 0
// converts with `threads` threads (0: every core of the node, the other ranks wait). Collective:
// every rank calls it at the same point; it throws nothing before the last collective, and a rank
// that cannot use the shared copy falls back to its own, with a warning.
ModelSource share_weights_on_node(const World& world, const ModelSource& model, const Backend* backend, bool enabled,
                                  int threads);

}  // namespace sdmpi::app
