// The world of ranks: the build's Comm (MPI or one process, see sdmpi/comm.h), this rank's place
// on its node, and the GPU a rank binds to. The same code runs with and without MPI.
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "sdmpi/cluster.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi {

std::string Comm::host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

World::World(int* argc, char*** argv) : comm_(Comm::create(argc, argv)) {
  info_.host = Comm::host_name();
  info_.rank = comm_->rank();
  info_.size = comm_->size();
  Comm::NodeRanks node = comm_->split_by_node();
  info_.local_rank = node.rank;
  info_.local_size = node.size;
  info_.mpi = comm_->is_mpi();
  log::set_rank(info_.rank, info_.size);
}

World::~World() = default;

void World::abort(int code) const {
  comm_->abort(code);
  std::_Exit(code);  // not reached: the compiler cannot see through the virtual call's [[noreturn]]
}

int choose_device(int local_rank, int local_size, int device_count, bool allow_sharing) {
  if (device_count <= 0) throw Error("no GPU to bind to");
  if (local_size > device_count && !allow_sharing)
    throw InputError(std::to_string(local_size) + " ranks on this node but only " + std::to_string(device_count) +
                     " visible GPU(s); start one rank per GPU or pass --allow-gpu-sharing");
  return local_rank % device_count;
}

}  // namespace sdmpi
