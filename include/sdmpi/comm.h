// Comm: every message the cluster layer sends, behind one small interface.
//
// The build picks the implementation by file, never by #if: src/cluster/comm_mpi.cpp
// (MPI_COMM_WORLD, the only file that includes <mpi.h>) or src/cluster/comm_single.cpp (a world
// of one process, for a GPU node without the MPI development package). Either one defines
// Comm::create, so World, run_job and the app never know which they got.
//
// All calls come from one thread per rank (MPI_THREAD_FUNNELED): the rank's main thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sdmpi {

// Memory that the ranks of one node share (an MPI shared-memory window on the node's
// communicator): the node's rank 0 writes it, then every rank of the node reads the same pages.
class NodeSharedBuffer {
 public:
  virtual ~NodeSharedBuffer() = default;
  virtual void* data() const = 0;  // the same bytes on every rank of the node
  virtual uint64_t size() const = 0;
  // True on the node's rank 0, the one rank of the node that fills the buffer.
  virtual bool writer() const = 0;
  // Collective over the node: the writer tells whether it filled the buffer; true when it did,
  // and from then on every rank of the node may read the bytes. Call once.
  virtual bool publish(bool filled) = 0;
};

class Comm {
 public:
  // Receive from / probe for any rank (MPI_ANY_SOURCE).
  static constexpr int kAnySource = -1;

  // The message waiting at the head of a probe: who sent it and with which tag.
  struct Envelope {
    int source = 0, tag = 0;
  };
  // This rank's place among the ranks sharing its node (shared memory).
  struct NodeRanks {
    int rank = 0, size = 1;
  };

  // The world of this process: initialises MPI (thread level FUNNELED) when the build has it and
  // nobody did yet, and finalises it on destruction. Throws Error when MPI cannot start.
  static std::unique_ptr<Comm> create(int* argc, char*** argv);
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // True when the ranks are MPI processes (false: the one-process build).
  virtual bool is_mpi() const = 0;
  // The node-local rank and size (MPI_Comm_split_type SHARED; never SLURM_LOCALID, which is 0 on
  // every rank under mpirun in sbatch). Collective.
  virtual NodeRanks split_by_node() const = 0;
  // This machine's name, for messages.
  static std::string host_name();
  // `bytes` of memory shared by this node's ranks (one block per node; collective over all
  // ranks). Null on every rank of a node where the ranks cannot share memory (the one-process
  // build, one rank on the node, or the allocation was refused), so the caller falls back to
  // memory of its own. The memory stays mapped until the Comm ends (before MPI_Finalize), so
  // holders of the buffer may keep pointers into it for the whole job.
  virtual std::shared_ptr<NodeSharedBuffer> node_shared_buffer(uint64_t bytes) const = 0;

  // Point to point. `n` bytes go as one message, or as 1 GiB pieces with the same tag when larger
  // (MPI counts are int); zero bytes are one empty message. recv expects exactly `n` bytes.
  virtual void send(int dest, int tag, const void* data, uint64_t n) const = 0;
  virtual void recv(int source, int tag, void* data, uint64_t n) const = 0;
  // The next message from `source` (or kAnySource), any tag, if one has arrived; never blocks.
  virtual std::optional<Envelope> probe(int source) const = 0;

  // Collectives: every rank calls them in the same order.
  virtual std::string broadcast(const std::string& from_root) const = 0;  // rank 0's bytes to all
  virtual bool all_true(bool local) const = 0;                             // logical AND
  virtual int max_int(int local) const = 0;
  virtual std::vector<std::string> gather_strings(const std::string& local) const = 0;  // on rank 0
  virtual void barrier() const = 0;
  // Ends every rank at once (MPI_Abort), for a failure that cannot be reported in order.
  [[noreturn]] virtual void abort(int code) const = 0;
};

}  // namespace sdmpi
