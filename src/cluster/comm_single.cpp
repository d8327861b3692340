// Comm for a build without MPI: a world of one rank. CMakeLists.txt builds it instead of
// comm_mpi.cpp, so the same run_job and app code runs on a GPU node that lacks the MPI
// development package. Collectives return this rank's own value; with no other rank there is
// nobody to send to, so point-to-point calls are an internal error.
#include <cstdlib>

#include "sdmpi/comm.h"
#include "sdmpi/error.h"

namespace sdmpi {
namespace {

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  bool is_mpi() const override { return false; }
  NodeRanks split_by_node() const override { return {}; }
  // One rank: nobody to share with.
  std::shared_ptr<NodeSharedBuffer> node_shared_buffer(uint64_t) const override { return nullptr; }

  void send(int dest, int tag, const void*, uint64_t) const override { no_peer("send to", dest, tag); }
  void recv(int source, int tag, void*, uint64_t) const override { no_peer("receive from", source, tag); }
  std::optional<Envelope> probe(int) const override { return std::nullopt; }

  std::string broadcast(const std::string& from_root) const override { return from_root; }
  bool all_true(bool local) const override { return local; }
  int max_int(int local) const override { return local; }
  std::vector<std::string> gather_strings(const std::string& local) const override { return {local}; }
  void barrier() const override {}
  [[noreturn]] void abort(int code) const override { std::_Exit(code); }

 private:
  [[noreturn]] static void no_peer(const char* what, int peer, int tag) {
    throw Error("internal: " + std::string(what) + " rank " + std::to_string(peer) + " (tag " + std::to_string(tag) +
                ") in a build without MPI, which has one rank");
  }
};

}  // namespace

std::unique_ptr<Comm> Comm::create(int*, char***) { return std::make_unique<SingleComm>(); }

}  // namespace sdmpi
