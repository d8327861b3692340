// Comm over MPI_COMM_WORLD: the only file of sd_mpi that includes <mpi.h>. CMakeLists.txt builds
// it instead of comm_single.cpp when MPI is found.
//
// Errors are fatal (MPI_ERRORS_ARE_FATAL): a broken link ends the job rather than leaving ranks
// waiting. Large payloads travel in 1 GiB pieces because MPI counts are int.
#include <mpi.h>

#include <algorithm>
#include <cstdlib>

#include "sdmpi/comm.h"
#include "sdmpi/error.h"

namespace sdmpi {
namespace {

constexpr uint64_t kPiece = 1u << 30;

class MpiComm final : public Comm {
 public:
  MpiComm(int* argc, char*** argv) {
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
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override {
    if (!finalize_) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool is_mpi() const override { return true; }

  NodeRanks split_by_node() const override {
    NodeRanks out;
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &out.rank);
    MPI_Comm_size(node, &out.size);
    MPI_Comm_free(&node);
    return out;
  }

  void send(int dest, int tag, const void* data, uint64_t n) const override {
    const char* p = static_cast<const char*>(data);
    do {
      int c = static_cast<int>(std::min(n, kPiece));
      MPI_Send(p, c, MPI_BYTE, dest, tag, MPI_COMM_WORLD);
      p += c;
      n -= static_cast<uint64_t>(c);
    } while (n > 0);
  }
  void recv(int source, int tag, void* data, uint64_t n) const override {
    char* p = static_cast<char*>(data);
    do {
      int c = static_cast<int>(std::min(n, kPiece));
      MPI_Recv(p, c, MPI_BYTE, source == kAnySource ? MPI_ANY_SOURCE : source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      p += c;
      n -= static_cast<uint64_t>(c);
    } while (n > 0);
  }
  std::optional<Envelope> probe(int source) const override {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(source == kAnySource ? MPI_ANY_SOURCE : source, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag) return std::nullopt;
    return Envelope{st.MPI_SOURCE, st.MPI_TAG};
  }

  std::string broadcast(const std::string& from_root) const override {
    if (size_ == 1) return from_root;
    uint64_t n = rank_ == 0 ? from_root.size() : 0;
    MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    std::string out = rank_ == 0 ? from_root : std::string(n, '\0');
    for (uint64_t off = 0; off < n;) {
      int c = static_cast<int>(std::min<uint64_t>(n - off, kPiece));
      MPI_Bcast(out.data() + off, c, MPI_BYTE, 0, MPI_COMM_WORLD);
      off += static_cast<uint64_t>(c);
    }
    return out;
  }
  bool all_true(bool local) const override {
    if (size_ == 1) return local;
    int in = local ? 1 : 0, out = 0;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return out == 1;
  }
  int max_int(int local) const override {
    if (size_ == 1) return local;
    int out = 0;
    MPI_Allreduce(&local, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out;
  }
  std::vector<std::string> gather_strings(const std::string& local) const override {
    if (size_ == 1) return {local};
    int n = static_cast<int>(local.size());
    std::vector<int> sizes(rank_ == 0 ? size_ : 0);
    MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::vector<int> displs;
    std::string all;
    if (rank_ == 0) {
      int total = 0;
      for (int s : sizes) {
        displs.push_back(total);
        total += s;
      }
      all.resize(static_cast<size_t>(total));
    }
    MPI_Gatherv(local.data(), n, MPI_CHAR, all.data(), sizes.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
    std::vector<std::string> out;
    if (rank_ == 0)
      for (int r = 0; r < size_; ++r)
        out.push_back(all.substr(static_cast<size_t>(displs[r]), static_cast<size_t>(sizes[r])));
    return out;
  }
  void barrier() const override {
    if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
  }
  [[noreturn]] void abort(int code) const override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  int rank_ = 0, size_ = 1;
  bool finalize_ = false;
};

}  // namespace

std::unique_ptr<Comm> Comm::create(int* argc, char*** argv) { return std::make_unique<MpiComm>(argc, argv); }

}  // namespace sdmpi
