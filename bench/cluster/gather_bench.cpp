// The per-image cost of the gather-and-write path: run_job over N items whose "generation" costs
// nothing (a fixed synthetic image per item), so the time is the cluster layer's messages plus
// rank 0's archive writes and flushes. Three passes: a sink that discards; the archive with the
// row compressed on rank 0 (write_image); the archive with the row compressed by the generating
// rank (encode_archive_chunk + write_encoded_image, what sd_mpi does).
//   mpirun -np P gather_bench N SIZE OUT.h5 [gzip]
// Prints one line per sink: images/s and ms per image on rank 0.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "sdmpi/archive.h"
#include "sdmpi/cluster.h"

using namespace sdmpi;

int main(int argc, char** argv) {
  World world(&argc, &argv);
  if (argc < 4) {
    if (world.rank() == 0) std::fprintf(stderr, "usage: gather_bench N SIZE OUT.h5 [gzip]\n");
    return 2;
  }
  int n = std::atoi(argv[1]), size = std::atoi(argv[2]);
  std::string out = argv[3];
  int gzip = argc > 4 ? std::atoi(argv[4]) : 4;
  std::vector<WorkItem> items;
  for (int i = 0; i < n; ++i) {
    WorkItem w;
    w.index = i;
    w.params.prompt = "item " + std::to_string(i);
    w.params.width = w.params.height = size;
    w.params.seed = static_cast<uint64_t>(i);
    items.push_back(w);
  }
  // A smooth image with some texture (compresses like a real one, roughly).
  std::vector<uint8_t> img(static_cast<size_t>(size) * size * 3);
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      for (int c = 0; c < 3; ++c)
        img[(static_cast<size_t>(y) * size + x) * 3 + c] = static_cast<uint8_t>((x * (c + 1) + y * 3 + ((x * y) % 17)) & 255);
  BatchGenerator gen = [&](const std::vector<WorkItem>& b, const StepCallback&) {
    std::vector<ImageResult> r(b.size());
    for (auto& x : r) {
      x.ok = true;
      x.width = x.height = size;
      x.rgb = img;
    }
    return r;
  };
  RunOptions opt;
  opt.progress = ProgressMode::None;
  opt.distribution = Distribution::Dynamic;

  struct NullSink : ResultSink {
    void write(const WorkItem&, const ImageResult&) override {}
  } null_sink;
  struct ArchiveSink : ResultSink {
    ArchiveWriter* w;
    void write(const WorkItem& it, const ImageResult& r) override {
      if (!r.archive_chunk.empty()) w->write_encoded_image(it.index, r.archive_chunk, r.width, r.height);
      else w->write_image(it.index, r.rgb.data(), r.width, r.height);
    }
  } archive_sink;
  BatchGenerator encoding_gen = [&](const std::vector<WorkItem>& b, const StepCallback& s) {
    auto r = gen(b, s);
    for (auto& x : r) {
      x.archive_chunk = encode_archive_chunk(x.rgb.data(), size, size, size, size, gzip);
      x.rgb.clear();
    }
    return r;
  };
  const char* names[] = {"gather only (discard)", "archive, gzip on rank 0", "archive, gzip on the maker"};

  for (int pass = 0; pass < 3; ++pass) {
    std::optional<ArchiveWriter> writer;
    ResultSink* sink = nullptr;
    if (world.rank() == 0) {
      if (pass >= 1) {
        std::filesystem::remove(out);
        ArchiveInfo info;
        info.fingerprint = "bench";
        info.total_items = n;
        ArchiveOptions ao;
        ao.gzip_level = gzip;
        writer.emplace(ArchiveWriter::create(out, items, info, ao));
        archive_sink.w = &*writer;
        sink = &archive_sink;
      } else {
        sink = &null_sink;
      }
    }
    world.barrier();
    auto t0 = std::chrono::steady_clock::now();
    run_job(world, items, opt, pass == 2 ? encoding_gen : gen, sink);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (world.rank() == 0) {
      writer.reset();
      std::printf("%-26s ranks %d, %d images of %dx%d: %8.1f images/s, %7.3f ms/image on rank 0\n",
                  names[pass], world.size(), n, size, size, n / s,
                  1000 * s / n);
    }
  }
  return 0;
}
