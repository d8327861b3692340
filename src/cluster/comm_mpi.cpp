// Comm over MPI_COMM_WORLD: the only file of sd_mpi that includes <mpi.h>. CMakeLists.txt builds
// it instead of comm_single.cpp when MPI is found.
//
// Errors are fatal (MPI_ERRORS_ARE_FATAL): a broken link ends the job rather than leaving ranks
// waiting. Large payloads travel in 1 GiB pieces because MPI counts are int.
//
// Node-shared buffers are MPI-3 shared-memory windows (MPI_Win_allocate_shared) on the node's
// communicator: the node's rank 0 allocates every byte, the others map its segment
// (MPI_Win_shared_query). All ranks hold a passive-target epoch on the window for its whole life
// (lock_all), and publish() orders the writer's stores before the readers' loads with
// MPI_Win_sync around a node-wide reduction, as the MPI-3 "separate/unified" rules ask. Windows
// are freed by the Comm's destructor, where every rank is anyway (MPI_Finalize is collective):
// freeing them when the last user lets go could block one rank in MPI_Win_free while another
// waits for it in an unrelated collective.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "sdmpi/comm.h"
#include "sdmpi/error.h"

namespace sdmpi {
namespace {

constexpr uint64_t kPiece = 1u << 30;

class MpiNodeSharedBuffer final : public NodeSharedBuffer {
 public:
  MpiNodeSharedBuffer(MPI_Comm node, MPI_Win win, void* data, uint64_t size, bool writer)
      : node_(node), win_(win), data_(data), size_(size), writer_(writer) {}
  void* data() const override { return data_; }
  uint64_t size() const override { return size_; }
  bool writer() const override { return writer_; }
  bool publish(bool filled) override {
    MPI_Win_sync(win_);  // the writer's stores reach the window
    int in = writer_ ? (filled ? 1 : 0) : 1, all = 0;
    // Non-blocking, polled with naps: a blocking reduction would spin the waiting ranks on the
    // cores the writer converts with (Open MPI polls), for the seconds a model takes.
    MPI_Request request;
    MPI_Iallreduce(&in, &all, 1, MPI_INT, MPI_MIN, node_, &request);
    for (int done = 0;;) {
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (done) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    MPI_Win_sync(win_);  // and the readers see them
    return all == 1;
  }

 private:
  MPI_Comm node_;
  MPI_Win win_;
  void* data_;
  uint64_t size_;
  bool writer_;
};

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
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      for (auto& [node, win] : windows_) {
        MPI_Win_unlock_all(win);
        MPI_Win_free(&win);
        MPI_Comm_free(&node);
      }
    }
    if (finalize_ && !finalized) MPI_Finalize();
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

  std::shared_ptr<NodeSharedBuffer> node_shared_buffer(uint64_t bytes) const override {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int node_rank = 0, node_size = 1;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);
    if (node_size == 1 || bytes == 0) {
      MPI_Comm_free(&node);
      return nullptr;
    }
    // A refused allocation (no room for the segment) is not fatal: the ranks load on their own.
    MPI_Comm_set_errhandler(node, MPI_ERRORS_RETURN);
    const bool writer = node_rank == 0;
    void* base = nullptr;
    MPI_Win win = MPI_WIN_NULL;
    int ok = MPI_Win_allocate_shared(static_cast<MPI_Aint>(writer ? bytes : 0), 1, MPI_INFO_NULL, node, &base, &win) ==
             MPI_SUCCESS;
    void* data = nullptr;
    if (ok) {
      MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN);
      MPI_Aint got = 0;
      int disp = 0;
      ok = MPI_Win_shared_query(win, 0, &got, &disp, &data) == MPI_SUCCESS && static_cast<uint64_t>(got) == bytes &&
           data != nullptr;
    }
    int all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, node);
    if (!all_ok) {
      if (win != MPI_WIN_NULL) MPI_Win_free(&win);
      MPI_Comm_free(&node);
      return nullptr;
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
    {
      std::lock_guard<std::mutex> lock(windows_mutex_);
      windows_.emplace_back(node, win);
    }
    return std::make_shared<MpiNodeSharedBuffer>(node, win, data, bytes, writer);
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
  // Live node-shared windows and their node communicators, freed by the destructor.
  mutable std::mutex windows_mutex_;
  mutable std::vector<std::pair<MPI_Comm, MPI_Win>> windows_;
};

}  // namespace

std::unique_ptr<Comm> Comm::create(int* argc, char*** argv) { return std::make_unique<MpiComm>(argc, argv); }

}  // namespace sdmpi
