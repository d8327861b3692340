// The wire format of run_job's messages (see wire.h): bytes through Comm, nothing else.
#include "cluster/wire.h"

namespace sdmpi::wire {
namespace {

struct ResultHeader {
  int64_t index;
  int32_t ok, width, height, rank;
  double seconds;
  uint64_t error_bytes, rgb_bytes, png_bytes, chunk_bytes;
};

}  // namespace

void send_result(const Comm& comm, const ImageResult& r) {
  ResultHeader h{r.index, r.ok ? 1 : 0, r.width, r.height, r.rank, r.seconds,
                 r.error.size(), r.rgb.size(), r.png.size(), r.archive_chunk.size()};
  comm.send(0, kTagResult, &h, sizeof h);
  if (h.error_bytes) comm.send(0, kTagResultData, r.error.data(), h.error_bytes);
  if (h.rgb_bytes) comm.send(0, kTagResultData, r.rgb.data(), h.rgb_bytes);
  if (h.png_bytes) comm.send(0, kTagResultData, r.png.data(), h.png_bytes);
  if (h.chunk_bytes) comm.send(0, kTagResultData, r.archive_chunk.data(), h.chunk_bytes);
}

ImageResult recv_result(const Comm& comm, int source) {
  ResultHeader h;
  comm.recv(source, kTagResult, &h, sizeof h);
  ImageResult r;
  r.index = h.index;
  r.ok = h.ok != 0;
  r.width = h.width;
  r.height = h.height;
  r.rank = h.rank;
  r.seconds = h.seconds;
  r.error.resize(h.error_bytes);
  r.rgb.resize(h.rgb_bytes);
  r.png.resize(h.png_bytes);
  r.archive_chunk.resize(h.chunk_bytes);
  if (h.error_bytes) comm.recv(source, kTagResultData, r.error.data(), h.error_bytes);
  if (h.rgb_bytes) comm.recv(source, kTagResultData, r.rgb.data(), h.rgb_bytes);
  if (h.png_bytes) comm.recv(source, kTagResultData, r.png.data(), h.png_bytes);
  if (h.chunk_bytes) comm.recv(source, kTagResultData, r.archive_chunk.data(), h.chunk_bytes);
  return r;
}

void send_i64(const Comm& comm, int64_t v, int dest, int tag) { comm.send(dest, tag, &v, sizeof v); }

int64_t recv_i64(const Comm& comm, int source, int tag) {
  int64_t v = 0;
  comm.recv(source, tag, &v, sizeof v);
  return v;
}

void send_text(const Comm& comm, const std::string& text, int dest, int tag) {
  send_i64(comm, static_cast<int64_t>(text.size()), dest, tag);
  comm.send(dest, tag, text.data(), text.size());
}

std::string recv_text(const Comm& comm, int source, int tag) {
  int64_t n = recv_i64(comm, source, tag);
  std::string text(static_cast<size_t>(n), '\0');
  comm.recv(source, tag, text.data(), static_cast<uint64_t>(n));
  return text;
}

}  // namespace sdmpi::wire
