// The cluster layer in one process: shards, blocks, batches, the wire format of results over an
// in-memory Comm, and run_job's single-rank path with a stand-in generator (failures, fail-fast,
// stop signal, abandoned batches).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>

#include "cluster/wire.h"
#include "sdmpi/cluster.h"
#include "sdmpi/error.h"

using namespace sdmpi;

namespace {

std::vector<WorkItem> make_items(int n) {
  std::vector<WorkItem> items;
  for (int i = 0; i < n; ++i) {
    WorkItem w;
    w.index = i;
    // snprintf, not "p" + std::to_string(i): GCC 12's -Wrestrict reports an impossible memcpy
    // overlap in the inlined string concatenation (a known false positive, GCC bug 105329).
    char prompt[32];
    std::snprintf(prompt, sizeof prompt, "p%d", i);
    w.params.prompt = prompt;
    w.params.seed = 1000 + static_cast<uint64_t>(i);
    w.params.steps = 3;
    w.params.width = 8;
    w.params.height = 8;
    items.push_back(w);
  }
  return items;
}

struct CollectSink : ResultSink {
  std::map<int64_t, ImageResult> got;
  void write(const WorkItem& item, const ImageResult& r) override {
    EXPECT_EQ(item.index, r.index);
    EXPECT_TRUE(got.emplace(r.index, r).second) << "index " << r.index << " written twice";
  }
};

BatchGenerator fake_generator(std::vector<int64_t> fail = {}) {
  return [fail](const std::vector<WorkItem>& batch, const StepCallback& step) {
    for (int s = 1; s <= batch.front().params.steps; ++s)
      if (!step(s, batch.front().params.steps)) throw BatchAbandoned();
    std::vector<ImageResult> out;
    for (const auto& it : batch) {
      ImageResult r;
      r.width = it.params.width;
      r.height = it.params.height;
      r.rgb.assign(static_cast<size_t>(r.width * r.height * 3), static_cast<uint8_t>(it.params.seed % 251));
      r.ok = std::find(fail.begin(), fail.end(), it.index) == fail.end();
      if (!r.ok) r.error = "NaN in the image";
      out.push_back(r);
    }
    return out;
  };
}

// One MPI world per process (MPI cannot be initialised twice).
World& test_world() {
  static int argc = 0;
  static char** argv = nullptr;
  static World world(&argc, &argv);
  return world;
}

}  // namespace

TEST(Cluster, SplitBlockMatchesAccelerate) {
  // 10 items over 3 processes: 4, 3, 3 (the first n % p get one more).
  EXPECT_EQ(split_block(10, 3, 0), (std::pair<int64_t, int64_t>(0, 4)));
  EXPECT_EQ(split_block(10, 3, 1), (std::pair<int64_t, int64_t>(4, 7)));
  EXPECT_EQ(split_block(10, 3, 2), (std::pair<int64_t, int64_t>(7, 10)));
  EXPECT_EQ(split_block(2, 4, 3), (std::pair<int64_t, int64_t>(2, 2)));  // an empty block
  for (int64_t n : {0, 1, 7, 100})
    for (int p : {1, 2, 3, 5, 8}) {
      int64_t covered = 0, prev_end = 0;
      for (int i = 0; i < p; ++i) {
        auto [b, e] = split_block(n, p, i);
        EXPECT_EQ(b, prev_end);
        covered += e - b;
        prev_end = e;
      }
      EXPECT_EQ(covered, n);
    }
}

TEST(Cluster, ParseShard) {
  EXPECT_EQ(parse_shard("2/5").index, 2);
  EXPECT_EQ(parse_shard("2/5").count, 5);
  EXPECT_THROW(parse_shard("3/2"), InputError);
  EXPECT_THROW(parse_shard("-1/2"), InputError);
  EXPECT_THROW(parse_shard("1/0"), InputError);
  EXPECT_THROW(parse_shard("a/b"), InputError);
  EXPECT_THROW(parse_shard("1"), InputError);
  setenv("SLURM_ARRAY_TASK_ID", "3", 1);
  setenv("SLURM_ARRAY_TASK_COUNT", "4", 1);
  EXPECT_EQ(parse_shard("").index, 3);
  EXPECT_EQ(parse_shard("1/2").index, 1);  // the flag wins over the environment
  setenv("SLURM_ARRAY_TASK_MIN", "1", 1);
  EXPECT_THROW(parse_shard(""), InputError);
  unsetenv("SLURM_ARRAY_TASK_MIN");
  unsetenv("SLURM_ARRAY_TASK_ID");
  unsetenv("SLURM_ARRAY_TASK_COUNT");
  EXPECT_EQ(parse_shard("").count, 1);
}

TEST(Cluster, BatchesGroupCompatibleItemsInOrder) {
  auto items = make_items(7);
  items[2].params.steps = 9;  // incompatible with the others
  items[5].params.width = 16;
  auto batches = make_batches(items, 2);
  std::vector<std::vector<int64_t>> ids;
  for (auto& b : batches) {
    ids.emplace_back();
    for (auto& it : b) ids.back().push_back(it.index);
  }
  std::vector<std::vector<int64_t>> expect = {{0, 1}, {2}, {3, 4}, {5}, {6}};
  EXPECT_EQ(ids, expect);
  EXPECT_THROW(make_batches(items, 0), InputError);
}

TEST(Cluster, ChooseDevice) {
  EXPECT_EQ(choose_device(3, 4, 4, false), 3);
  EXPECT_EQ(choose_device(3, 4, 2, true), 1);
  EXPECT_THROW(choose_device(0, 4, 2, false), InputError);
}

TEST(Cluster, SingleRankRunWritesEveryItemOnce) {
  World& world = test_world();
  for (auto dist : {Distribution::Static, Distribution::Dynamic}) {
    CollectSink sink;
    RunOptions opt;
    opt.distribution = dist;
    opt.batch_size = 3;
    opt.progress = ProgressMode::None;
    auto items = make_items(10);
    RunSummary s = run_job(world, items, opt, fake_generator({4}), &sink);
    EXPECT_EQ(s.total, 10);
    EXPECT_EQ(s.done, 9);
    EXPECT_EQ(s.failed, 1);
    EXPECT_FALSE(s.interrupted);
    ASSERT_EQ(sink.got.size(), 10u);
    EXPECT_FALSE(sink.got[4].ok);
    EXPECT_EQ(sink.got[4].error, "NaN in the image");
    EXPECT_EQ(sink.got[7].rgb[0], (1000 + 7) % 251);
  }
}

TEST(Cluster, FailFastStops) {
  World& world = test_world();
  CollectSink sink;
  RunOptions opt;
  opt.fail_fast = true;
  opt.progress = ProgressMode::None;
  RunSummary s = run_job(world, make_items(10), opt, fake_generator({1}), &sink);
  EXPECT_TRUE(s.aborted);
  EXPECT_LT(sink.got.size(), 10u);  // stopped early, one batch at a time
  EXPECT_EQ(s.failed, 1);
}

TEST(Cluster, ProgressLine) {
  EXPECT_EQ(format_progress_line(5, 10, 10.0, 0), "5/10 images (50%), 0.5 img/s, ETA 0:00:10");
  EXPECT_EQ(format_progress_line(0, 10, 1.0, 0), "0/10 images (0%), 0 img/s, ETA --:--");
  EXPECT_EQ(format_progress_line(3, 4, 3.0, 2), "3/4 images (75%), 1 img/s, ETA 0:00:01, 2 failed");
}

// A Comm whose messages go into a queue that the same object receives from, so both sides of
// the wire format run in one process; it records each message's tag and size.
class LoopbackComm : public Comm {
 public:
  struct Message {
    int tag;
    std::string bytes;
  };
  mutable std::deque<Message> queue;
  mutable std::vector<Message> sent;

  int rank() const override { return 0; }
  int size() const override { return 2; }
  bool is_mpi() const override { return false; }
  NodeRanks split_by_node() const override { return {}; }
  // No node to share with: callers fall back to memory of their own.
  std::shared_ptr<NodeSharedBuffer> node_shared_buffer(uint64_t) const override { return nullptr; }
  void send(int, int tag, const void* data, uint64_t n) const override {
    Message m{tag, std::string(static_cast<const char*>(data), static_cast<size_t>(n))};
    queue.push_back(m);
    sent.push_back(m);
  }
  void recv(int, int tag, void* data, uint64_t n) const override {
    if (queue.empty()) throw Error("loopback: nothing to receive");
    Message m = queue.front();
    queue.pop_front();
    if (m.tag != tag || m.bytes.size() != n)
      throw Error("loopback: expected tag " + std::to_string(tag) + " with " + std::to_string(n) + " bytes, got tag " +
                  std::to_string(m.tag) + " with " + std::to_string(m.bytes.size()));
    if (n) std::memcpy(data, m.bytes.data(), static_cast<size_t>(n));
  }
  std::optional<Envelope> probe(int) const override {
    if (queue.empty()) return std::nullopt;
    return Envelope{1, queue.front().tag};
  }
  std::string broadcast(const std::string& s) const override { return s; }
  bool all_true(bool b) const override { return b; }
  int max_int(int v) const override { return v; }
  std::vector<std::string> gather_strings(const std::string& s) const override { return {s}; }
  void barrier() const override {}
  [[noreturn]] void abort(int code) const override { std::_Exit(code); }
};

TEST(ClusterWire, ResultRoundTrip) {
  LoopbackComm comm;
  ImageResult r;
  r.index = 1234567890123;
  r.ok = true;
  r.width = 16;
  r.height = 8;
  r.rank = 3;
  r.seconds = 0.125;
  r.rgb.resize(16 * 8 * 3);
  for (size_t k = 0; k < r.rgb.size(); ++k) r.rgb[k] = static_cast<uint8_t>(k * 7);
  r.png = {1, 2, 3};
  wire::send_result(comm, r);
  // The header, then only the non-empty fields (no error text, no archive chunk).
  ASSERT_EQ(comm.sent.size(), 3u);
  EXPECT_EQ(comm.sent[0].tag, wire::kTagResult);
  EXPECT_EQ(comm.sent[1].tag, wire::kTagResultData);
  EXPECT_EQ(comm.sent[1].bytes.size(), r.rgb.size());
  EXPECT_EQ(comm.sent[2].bytes, std::string("\x01\x02\x03"));
  ImageResult got = wire::recv_result(comm, 1);
  EXPECT_TRUE(comm.queue.empty());
  EXPECT_EQ(got.index, r.index);
  EXPECT_TRUE(got.ok);
  EXPECT_EQ(got.width, 16);
  EXPECT_EQ(got.height, 8);
  EXPECT_EQ(got.rank, 3);
  EXPECT_EQ(got.seconds, 0.125);
  EXPECT_EQ(got.rgb, r.rgb);
  EXPECT_EQ(got.png, r.png);
  EXPECT_TRUE(got.error.empty());
  EXPECT_TRUE(got.archive_chunk.empty());

  ImageResult failed;
  failed.index = 7;
  failed.error = "non-finite values";
  wire::send_result(comm, failed);
  ImageResult back = wire::recv_result(comm, 1);
  EXPECT_FALSE(back.ok);
  EXPECT_EQ(back.error, "non-finite values");
  EXPECT_TRUE(back.rgb.empty());
}

TEST(ClusterWire, TextAndNumbers) {
  LoopbackComm comm;
  wire::send_text(comm, "rank 2: out of memory", 0, wire::kTagFatal);
  wire::send_i64(comm, -1, 0, wire::kTagWork);
  EXPECT_EQ(comm.probe(Comm::kAnySource)->tag, wire::kTagFatal);
  EXPECT_EQ(wire::recv_text(comm, 1, wire::kTagFatal), "rank 2: out of memory");
  EXPECT_EQ(wire::recv_i64(comm, 1, wire::kTagWork), -1);
  EXPECT_FALSE(comm.probe(Comm::kAnySource).has_value());
}

TEST(Cluster, WorldMatchesItsComm) {
  World& world = test_world();
  EXPECT_EQ(world.comm().rank(), world.rank());
  EXPECT_EQ(world.comm().size(), world.size());
  EXPECT_EQ(world.info().mpi, world.comm().is_mpi());
  EXPECT_FALSE(world.info().host.empty());
  EXPECT_EQ(world.broadcast("abc"), "abc");
  EXPECT_EQ(world.gather_strings("x"), std::vector<std::string>{"x"});
}

TEST(Cluster, AgreementOnErrors) {
  World& world = test_world();
  EXPECT_EQ(on_root(world, [] { return std::string("plan"); }), "plan");
  try {
    on_root(world, []() -> std::string { throw InputError("prompts.txt:3: bad line"); });
    FAIL() << "on_root swallowed rank 0's error";
  } catch (const RootError&) {
    FAIL() << "rank 0 must see its own error as an Error, not a RootError";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "prompts.txt:3: bad line");
    EXPECT_EQ(e.exit_code(), kExitUsage);
  }
  EXPECT_EQ(agree(world, [] {}), 0);
  testing::internal::CaptureStderr();
  EXPECT_EQ(agree(world, [] { throw InputError("--shard 5/4: i must be in [0, 4)"); }), kExitUsage);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "sd_mpi: error: --shard 5/4: i must be in [0, 4)\n");
  EXPECT_EQ(agree(world, [] { throw Error("model failed"); }), kExitFailure);
}

// Runs last in this binary: the stop flag cannot be cleared.
TEST(ClusterZ, StopSignalEndsAtAnImageBoundary) {
  World& world = test_world();
  CollectSink sink;
  RunOptions opt;
  opt.progress = ProgressMode::None;
  int calls = 0;
  BatchGenerator gen = [&](const std::vector<WorkItem>& batch, const StepCallback& step) {
    if (++calls == 2) request_stop_for_testing();  // a SIGTERM while batch 2 runs
    return fake_generator()(batch, step);
  };
  RunSummary s = run_job(world, make_items(10), opt, gen, &sink);
  EXPECT_TRUE(s.interrupted);
  EXPECT_EQ(sink.got.size(), 2u);  // the batch in flight finished; nothing after it started
  EXPECT_EQ(s.done, 2);
}
