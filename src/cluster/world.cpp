// The MPI world: initialisation, node-local rank, small collectives. Without MPI (a GPU node
// lacking the development package) it is a world of one rank, so the same binary logic runs.
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <string>

#include "sdmpi/cluster.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

#ifdef SDMPI_HAVE_MPI
#include <mpi.h>
#endif

namespace sdmpi {
namespace {
std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}
}  // namespace

World::World(int* argc, char*** argv) {
  info_.host = hostname();
#ifdef SDMPI_HAVE_MPI
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw Error("MPI_Init_thread failed");
    if (provided < MPI_THREAD_FUNNELED) throw Error("the MPI library does not provide MPI_THREAD_FUNNELED");
    finalize_ = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &info_.size);
  // The node-local rank: never SLURM_LOCALID, which is 0 on every rank under mpirun in sbatch.
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &info_.local_rank);
  MPI_Comm_size(node, &info_.local_size);
  MPI_Comm_free(&node);
  info_.mpi = true;
#else
  (void)argc;
  (void)argv;
#endif
  log::set_rank(info_.rank, info_.size);
}

World::~World() {
#ifdef SDMPI_HAVE_MPI
  if (finalize_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
#endif
}

std::string World::broadcast(const std::string& from_root) const {
#ifdef SDMPI_HAVE_MPI
  if (info_.size == 1) return from_root;
  uint64_t n = info_.rank == 0 ? from_root.size() : 0;
  MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  std::string out = info_.rank == 0 ? from_root : std::string(n, '\0');
  // Chunks below INT_MAX bytes: MPI counts are int.
  for (uint64_t off = 0; off < n;) {
    int chunk = static_cast<int>(std::min<uint64_t>(n - off, 1u << 30));
    MPI_Bcast(out.data() + off, chunk, MPI_BYTE, 0, MPI_COMM_WORLD);
    off += static_cast<uint64_t>(chunk);
  }
  return out;
#else
  return from_root;
#endif
}

bool World::all_true(bool local) const {
#ifdef SDMPI_HAVE_MPI
  if (info_.size == 1) return local;
  int in = local ? 1 : 0, out = 0;
  MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return out == 1;
#else
  return local;
#endif
}

int World::max_int(int local) const {
#ifdef SDMPI_HAVE_MPI
  if (info_.size == 1) return local;
  int out = 0;
  MPI_Allreduce(&local, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return out;
#else
  return local;
#endif
}

std::vector<std::string> World::gather_strings(const std::string& local) const {
#ifdef SDMPI_HAVE_MPI
  if (info_.size > 1) {
    int n = static_cast<int>(local.size());
    std::vector<int> sizes(info_.rank == 0 ? info_.size : 0);
    MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::vector<int> displs;
    std::string all;
    if (info_.rank == 0) {
      int total = 0;
      for (int s : sizes) {
        displs.push_back(total);
        total += s;
      }
      all.resize(static_cast<size_t>(total));
    }
    MPI_Gatherv(local.data(), n, MPI_CHAR, all.data(), sizes.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
    std::vector<std::string> out;
    if (info_.rank == 0)
      for (int r = 0; r < info_.size; ++r) out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(sizes[r])));
    return out;
  }
#endif
  return {local};
}

void World::barrier() const {
#ifdef SDMPI_HAVE_MPI
  if (info_.size > 1) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void World::abort(int code) const {
#ifdef SDMPI_HAVE_MPI
  if (info_.mpi) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

int choose_device(int local_rank, int local_size, int device_count, bool allow_sharing) {
  if (device_count <= 0) throw Error("no GPU to bind to");
  if (local_size > device_count && !allow_sharing)
    throw InputError(std::to_string(local_size) + " ranks on this node but only " + std::to_string(device_count) +
                     " visible GPU(s); start one rank per GPU or pass --allow-gpu-sharing");
  return local_rank % device_count;
}

}  // namespace sdmpi
