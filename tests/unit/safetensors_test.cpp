// safetensors reader and writer: the malformed corpus, files written by the Python library, and
// round trips through our writer (read back by us, and by the library when SDMPI_GOLDEN_PY names
// a Python that has it).
#include "sdmpi/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "sdmpi/error.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace sdmpi;

namespace {

const std::string kData = SDMPI_TEST_DATA;
const std::string kCorpus = kData + "/malformed/safetensors";
const std::string kGolden = kData + "/golden/checkpoint";

json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  return json::parse(in);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Everything a loader does with a file: open, view every tensor, convert the readable ones.
void use_everything(const std::shared_ptr<SafetensorsFile>& f) {
  for (const auto& kv : f->entries()) {
    WeightView w = f->view(kv.first);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(w.data) % dtype_size(w.dtype), 0u) << kv.first << " misaligned";
    (void)f->to_f32(kv.first);
  }
  for (const auto& kv : f->unsupported()) (void)f->view(kv.first);
}

std::string tmp_dir() {
  std::string d = std::string(SDMPI_BINARY_DIR) + "/test_tmp/safetensors_" + std::to_string(::getpid());
  fs::create_directories(d);
  return d;
}

}  // namespace

// Each corpus file gives exactly one InputError, one line, naming the file and the expected fault;
// the valid ones load. The same through from_bytes().
TEST(SafetensorsCorpus, EveryCaseGivesItsError) {
  json manifest = read_json(kCorpus + "/manifest.json");
  ASSERT_GE(manifest.size(), 40u);
  for (auto it = manifest.begin(); it != manifest.end(); ++it) {
    const std::string path = kCorpus + "/" + it.key();
    SCOPED_TRACE(it.key());
    const json& expect = it.value()["expect"];
    for (int from_memory = 0; from_memory < 2; ++from_memory) {
      std::string message;
      bool threw = false;
      try {
        auto f = from_memory ? SafetensorsFile::from_bytes(path, read_bytes(path)) : SafetensorsFile::open(path);
        use_everything(f);
      } catch (const InputError& e) {
        threw = true;
        message = e.what();
      }
      if (expect.is_null()) {
        EXPECT_FALSE(threw) << message;
        continue;
      }
      ASSERT_TRUE(threw) << "no error";
      EXPECT_NE(message.find(expect.get<std::string>()), std::string::npos)
          << "message: " << message << "\nexpected to contain: " << expect.get<std::string>();
      EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "message does not start with the file: " << message;
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  }
}

TEST(SafetensorsCorpus, ManifestListsEveryFile) {
  json manifest = read_json(kCorpus + "/manifest.json");
  for (const auto& e : fs::directory_iterator(kCorpus)) {
    std::string name = e.path().filename().string();
    if (name == "manifest.json") continue;
    EXPECT_TRUE(manifest.contains(name)) << name << " is not in manifest.json";
  }
}

// A file with an unpadded header: the data buffer starts at an odd byte. Views must still be
// aligned (copies) and hold the right values.
TEST(SafetensorsReader, UnpaddedHeaderGivesAlignedViews) {
  auto f = SafetensorsFile::open(kCorpus + "/valid_unpadded.safetensors");
  WeightView x = f->view("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data) % 4, 0u);
  EXPECT_EQ(f->to_f32("x"), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(f->to_f32("y"), (std::vector<float>{1}));
  EXPECT_EQ(f->view("x").data, x.data);  // one copy, reused
}

TEST(SafetensorsReader, MissingTensorAndMissingFile) {
  auto f = SafetensorsFile::open(kCorpus + "/valid_mixed.safetensors");
  try {
    f->view("nope");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor 'nope'"), std::string::npos) << e.what();
  }
  try {
    SafetensorsFile::open(kCorpus + "/does_not_exist.safetensors");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("does_not_exist.safetensors: cannot open"), std::string::npos) << e.what();
  }
  EXPECT_THROW(SafetensorsFile::open(kCorpus), InputError);  // a folder
}

// The safetensors library (Python) wrote this file; every value must come out as it put it in.
TEST(SafetensorsReader, ReadsWhatPythonWrote) {
  json expected = read_json(kGolden + "/python_written.json");
  auto f = SafetensorsFile::open(kGolden + "/python_written.safetensors");
  std::map<std::string, std::string> meta = expected["__metadata__"];
  EXPECT_EQ(f->metadata(), meta);
  size_t seen = 0;
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    SCOPED_TRACE(it.key());
    const json& want = it.value();
    ++seen;
    if (want["dtype"] == "I64") {
      ASSERT_EQ(f->unsupported().count(it.key()), 1u);
      EXPECT_EQ(f->unsupported().at(it.key()), "I64");
      EXPECT_FALSE(f->contains(it.key()));
      EXPECT_THROW(f->view(it.key()), InputError);
      continue;
    }
    ASSERT_TRUE(f->contains(it.key()));
    WeightView w = f->view(it.key());
    EXPECT_EQ(dtype_name(w.dtype), want["dtype"].get<std::string>());
    EXPECT_EQ(w.shape, want["shape"].get<Shape>());
    std::vector<float> got = f->to_f32(it.key());
    std::vector<double> ref = want["values"];
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      float r = static_cast<float>(ref[i]);
      EXPECT_EQ(float_bits(got[i]), float_bits(r)) << "element " << i << ": " << got[i] << " vs " << r;
    }
  }
  EXPECT_EQ(seen, f->entries().size() + f->unsupported().size());
}

namespace {

// The tensors of python_written.json that our writer can write (no I64), in their file dtypes.
void add_expected_tensors(SafetensorsWriter& w, const json& expected) {
  for (auto it = expected.begin(); it != expected.end(); ++it) {
    if (it.key() == "__metadata__" || it.value()["dtype"] == "I64") continue;
    DType dt;
    ASSERT_TRUE(parse_dtype(it.value()["dtype"], &dt));
    std::vector<double> v = it.value()["values"];
    std::vector<float> f(v.begin(), v.end());
    std::vector<uint8_t> bytes(f.size() * dtype_size(dt));
    if (!f.empty()) convert_from_f32(dt, f.data(), bytes.data(), f.size());
    w.add(it.key(), dt, it.value()["shape"].get<Shape>(), bytes.data());
  }
  for (auto& [k, v] : expected["__metadata__"].items()) w.set_metadata(k, v);
}

}  // namespace

TEST(SafetensorsWriter, RoundTripAndLayout) {
  json expected = read_json(kGolden + "/python_written.json");
  SafetensorsWriter w;
  add_expected_tensors(w, expected);
  const std::string path = tmp_dir() + "/ours.safetensors";
  w.write(path);

  // Our reader: same dtypes, shapes and bit patterns.
  auto f = SafetensorsFile::open(path);
  auto ref = SafetensorsFile::open(kGolden + "/python_written.safetensors");
  EXPECT_EQ(f->metadata(), ref->metadata());
  EXPECT_EQ(f->entries().size(), ref->entries().size());
  for (const auto& kv : ref->entries()) {
    SCOPED_TRACE(kv.first);
    WeightView a = f->view(kv.first), b = ref->view(kv.first);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    size_t n = static_cast<size_t>(shape_numel(a.shape)) * dtype_size(a.dtype);
    EXPECT_EQ(std::memcmp(a.data, b.data, n), 0);
  }

  // The layout the reference writer makes: header padded with spaces to 8 bytes, F32 tensors
  // before 2-byte ones, every tensor aligned in the file.
  std::vector<uint8_t> bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  EXPECT_EQ(n % 8, 0u);
  std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<long>(n));
  EXPECT_EQ(header.front(), '{');
  size_t end = header.find_last_not_of(' ');
  EXPECT_EQ(header[end], '}');
  uint64_t last_f32_end = 0, first_half_begin = UINT64_MAX;
  for (const auto& kv : f->entries()) {
    EXPECT_EQ(kv.second.begin % dtype_size(kv.second.dtype), 0u) << kv.first;
    if (kv.second.dtype == DType::F32) last_f32_end = std::max(last_f32_end, kv.second.end);
    else first_half_begin = std::min(first_half_begin, kv.second.begin);
  }
  EXPECT_LE(last_f32_end, first_half_begin);
  // Nothing but the file: no temporary left behind.
  for (const auto& e : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(SafetensorsWriter, FailureLeavesNothing) {
  SafetensorsWriter w;
  w.add_f32("a", {2}, {1, 2});
  const std::string path = tmp_dir() + "/no_such_dir/x.safetensors";
  EXPECT_THROW(w.write(path), Error);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_THROW(w.add_f32("a", {2}, {1, 2}), Error);        // twice
  EXPECT_THROW(w.add_f32("b", {3}, {1, 2}), Error);        // wrong count
  EXPECT_THROW(w.add_f32("__metadata__", {1}, {1}), Error);
}

// The safetensors library reads what we write. Needs SDMPI_GOLDEN_PY (a Python with safetensors
// and numpy, e.g. the golden environment); skipped visibly without it.
TEST(SafetensorsWriter, PythonReadsWhatWeWrite) {
  const char* py = std::getenv("SDMPI_GOLDEN_PY");
  if (!py || !*py) GTEST_SKIP() << "set SDMPI_GOLDEN_PY to a Python with safetensors to run this check";
  json expected = read_json(kGolden + "/python_written.json");
  SafetensorsWriter w;
  add_expected_tensors(w, expected);
  const std::string path = tmp_dir() + "/for_python.safetensors";
  w.write(path);
  const std::string script = std::string(SDMPI_TEST_DATA) + "/../../tools/golden/check_safetensors_file.py";
  std::string cmd = std::string(py) + " " + script + " " + path + " " + kGolden + "/python_written.json";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

namespace {
// This process's resident memory in bytes (/proc/self/statm, second field, in pages).
int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}
}  // namespace

// drop_resident: the pages of a tensor a load has copied leave the process's memory, and a later
// view() reads the same bytes again; an in-place file (--map-weights) keeps its pages.
TEST(SafetensorsReader, DropResidentReleasesPagesAndKeepsTheBytes) {
  const std::string path = tmp_dir() + "/big.safetensors";
  const int64_t n = int64_t{16} << 20;  // 64 MB of F32
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<float>(i % 9973) * 0.5f;
  SafetensorsWriter w;
  w.add_f32("big", {n}, values);
  w.write(path);
  values = {};
  auto checksum = [&](const WeightView& v) {
    double s = 0;
    const float* p = static_cast<const float*>(v.data);
    for (int64_t i = 0; i < n; i += 97) s += p[i] * static_cast<double>(i % 7);
    for (int64_t i = 0; i < n; ++i) s += p[i] == -1.0f;  // touches every page
    return s;
  };
  double expected = 0;
  for (int64_t i = 0; i < n; i += 97) expected += static_cast<double>(i % 9973) * 0.5 * static_cast<double>(i % 7);
  for (bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "in place" : "copied");
    auto file = SafetensorsFile::open(path, in_place);
    const int64_t before = resident_bytes();
    EXPECT_EQ(checksum(file->view("big")), expected);
    const int64_t touched = resident_bytes();
    EXPECT_GE(touched - before, int64_t{60} << 20) << "reading 64 MB did not map them in";
    file->drop_resident("big");
    const int64_t dropped = resident_bytes();
    if (in_place)
      EXPECT_GE(dropped, touched - (int64_t{4} << 20)) << "an in-place file's pages were dropped";
    else
      EXPECT_LE(dropped, before + (int64_t{4} << 20)) << "64 MB of pages still resident after drop_resident";
    EXPECT_EQ(checksum(file->view("big")), expected) << "the bytes changed after drop_resident";
  }
}
