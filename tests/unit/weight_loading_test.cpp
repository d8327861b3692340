// Fast weight loading (issue 17, items 3 and 4): the vectorised F16 → F32 conversion against the
// scalar reference for every one of the 65536 inputs; convert_weight_rows (the one conversion and
// OIHW → OHWI permutation every upload and the node-shared block use) against a naive loop; the CPU
// backend using float32 bytes in place when their owner vouches for them, and copying otherwise;
// PreparedWeightSource (a node's shared block) giving the same tensors as the files; and a weight
// file truncated or rewritten after it was mapped refused in one line instead of a SIGBUS.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "sdmpi/backend.h"
#include "sdmpi/error.h"
#include "sdmpi/model_files.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/weights.h"

namespace sdmpi {
namespace {

namespace fs = std::filesystem;

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<uint8_t> encode(DType dtype, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * dtype_size(dtype));
  convert_from_f32(dtype, values.data(), bytes.data(), values.size());
  return bytes;
}

// OIHW → OHWI, element by element.
std::vector<float> naive_ohwi(const std::vector<float>& oihw, const Shape& s) {
  std::vector<float> out(oihw.size());
  for (int64_t o = 0; o < s[0]; ++o)
    for (int64_t i = 0; i < s[1]; ++i)
      for (int64_t y = 0; y < s[2]; ++y)
        for (int64_t x = 0; x < s[3]; ++x)
          out[static_cast<size_t>(((o * s[2] + y) * s[3] + x) * s[1] + i)] =
              oihw[static_cast<size_t>(((o * s[1] + i) * s[2] + y) * s[3] + x)];
  return out;
}

std::vector<uint32_t> bits_of(const Tensor& t) {
  std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
  std::memcpy(out.data(), t.raw(), t.nbytes());
  return out;
}

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("sdmpi_weight_loading_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

TEST(WeightLoading, VectorisedHalfConversionMatchesTheScalarOneForEveryInput) {
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> fast(all.size());
  convert_to_f32(DType::F16, all.data(), fast.data(), all.size());
  for (size_t i = 0; i < all.size(); ++i)
    ASSERT_EQ(float_bits(fast[i]), float_bits(half_to_float(all[i]))) << "half 0x" << std::hex << i;
}

TEST(WeightLoading, ConvertWeightRowsPermutesConvolutionsAndConvertsEveryDtype) {
  const Shape conv{5, 3, 3, 2};
  const std::vector<float> values = random_values(static_cast<size_t>(shape_numel(conv)), 1);
  for (DType from : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<uint8_t> bytes = encode(from, values);
    std::vector<float> exact(values.size());
    convert_to_f32(from, bytes.data(), exact.data(), exact.size());  // the file's values, widened
    const std::vector<float> want = naive_ohwi(exact, conv);
    WeightView w("conv", from, conv, bytes.data());
    std::vector<float> got(values.size(), -1.f);
    // In two calls, as threads split the rows.
    convert_weight_rows(w, DType::F32, got.data(), 0, 2);
    convert_weight_rows(w, DType::F32, got.data(), 2, 5);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(float_bits(got[i]), float_bits(want[i])) << dtype_name(from) << " " << i;
    // Narrowing to F16 rounds like convert_from_f32 of the permuted values.
    std::vector<uint16_t> half(values.size());
    convert_weight_rows(w, DType::F16, half.data(), 0, 5);
    std::vector<uint16_t> half_want(values.size());
    convert_from_f32(DType::F16, want.data(), half_want.data(), want.size());
    EXPECT_EQ(half, half_want);
  }
  // Bytes already in the backend layout, and 1×1 kernels, are not permuted.
  WeightView done("conv", DType::F32, conv, values.data());
  done.backend_layout = true;
  std::vector<float> same(values.size());
  convert_weight_rows(done, DType::F32, same.data(), 0, 5);
  EXPECT_EQ(same, values);
  WeightView one("conv1x1", DType::F32, Shape{4, 7, 1, 1}, values.data());
  std::vector<float> one_out(28);
  convert_weight_rows(one, DType::F32, one_out.data(), 0, 4);
  EXPECT_TRUE(std::equal(one_out.begin(), one_out.end(), values.begin()));
}

TEST(WeightLoading, CpuBackendUsesVouchedFloat32BytesInPlaceAndCopiesTheRest) {
  auto backend = make_cpu_backend(2);
  const std::vector<float> values = random_values(6 * 4 * 3 * 3, 2);
  auto owner = std::make_shared<std::vector<float>>(values);

  WeightView linear("w", DType::F32, Shape{6, 36}, owner->data());
  Tensor copied = backend->upload_weight(linear, WeightKind::Linear);
  EXPECT_NE(copied.raw(), owner->data()) << "no owner: a copy";
  linear.keep_alive = owner;
  Tensor borrowed = backend->upload_weight(linear, WeightKind::Linear);
  EXPECT_EQ(borrowed.raw(), owner->data()) << "an owner that vouches: used in place";
  EXPECT_EQ(bits_of(borrowed), bits_of(copied));
  EXPECT_EQ(owner.use_count(), 3) << "the tensor keeps the owner alive";

  // A 3×3 convolution in PyTorch's order needs the permutation: copied even with an owner.
  WeightView conv("c", DType::F32, Shape{6, 4, 3, 3}, owner->data());
  conv.keep_alive = owner;
  Tensor permuted = backend->upload_weight(conv, WeightKind::Conv);
  EXPECT_NE(permuted.raw(), owner->data());
  std::vector<float> want = naive_ohwi(values, conv.shape);
  EXPECT_EQ(backend->to_host(permuted), want);
  // ... and used in place once it is in the backend layout.
  auto ohwi = std::make_shared<std::vector<float>>(want);
  WeightView ready("c", DType::F32, conv.shape, ohwi->data());
  ready.backend_layout = true;
  ready.keep_alive = ohwi;
  Tensor in_place = backend->upload_weight(ready, WeightKind::Conv);
  EXPECT_EQ(in_place.raw(), ohwi->data());
  EXPECT_EQ(bits_of(in_place), bits_of(permuted));
  // F16 bytes are converted (multithreaded) to the same values as the reference conversion.
  std::vector<uint8_t> half = encode(DType::F16, values);
  WeightView hconv("c", DType::F16, conv.shape, half.data());
  std::vector<float> widened(values.size());
  convert_to_f32(DType::F16, half.data(), widened.data(), widened.size());
  EXPECT_EQ(backend->to_host(backend->upload_weight(hconv, WeightKind::Conv)), naive_ohwi(widened, conv.shape));
}

// A source with the three dtypes, a convolution, a vector and an embedding, as a file holds them.
MemoryWeightSource mixed_source() {
  MemoryWeightSource src("mixed");
  src.add("conv.weight", DType::F16, Shape{8, 3, 3, 3}, encode(DType::F16, random_values(8 * 27, 3)));
  src.add("conv.bias", DType::F32, Shape{8}, encode(DType::F32, random_values(8, 4)));
  src.add("proj.weight", DType::BF16, Shape{5, 8}, encode(DType::BF16, random_values(40, 5)));
  src.add("proj1x1.weight", DType::F16, Shape{5, 8, 1, 1}, encode(DType::F16, random_values(40, 6)));
  src.add("table", DType::F32, Shape{11, 4}, encode(DType::F32, random_values(44, 7)));
  return src;
}

TEST(WeightLoading, PreparedBlockGivesTheSameTensorsAsTheSourceWithNoCopy) {
  auto source = std::make_shared<MemoryWeightSource>(mixed_source());
  std::vector<PreparedWeightSource::Slot> slots;
  const uint64_t end = PreparedWeightSource::plan(*source, DType::F32, 64, &slots);
  ASSERT_EQ(slots.size(), 5u);
  for (const auto& s : slots) EXPECT_EQ(s.offset % 64, 0u) << s.name;
  auto block = std::shared_ptr<uint8_t[]>(new uint8_t[end]);
  PreparedWeightSource::fill(*source, DType::F32, slots, block.get(), 3);
  PreparedWeightSource prepared(source, DType::F32, slots, block.get(), block);
  EXPECT_EQ(prepared.names(), source->names());
  EXPECT_EQ(PreparedWeightSource::fingerprint(slots, DType::F32), PreparedWeightSource::fingerprint(slots, DType::F32));
  auto other = slots;
  other[1].offset += 64;
  EXPECT_NE(PreparedWeightSource::fingerprint(slots, DType::F32), PreparedWeightSource::fingerprint(other, DType::F32));

  auto backend = make_cpu_backend(2);
  const std::pair<const char*, WeightKind> params[] = {{"conv.weight", WeightKind::Conv},
                                                        {"conv.bias", WeightKind::Vector},
                                                        {"proj.weight", WeightKind::Linear},
                                                        {"proj1x1.weight", WeightKind::Linear},
                                                        {"table", WeightKind::Embedding}};
  for (const auto& [name, kind] : params) {
    Tensor from_files = backend->upload_weight(source->get(name), kind);
    WeightView v = prepared.get(name);
    EXPECT_TRUE(v.backend_layout);
    EXPECT_EQ(v.shape, source->get(name).shape) << "PyTorch's shape, for the loader's checks";
    Tensor shared = backend->upload_weight(v, kind);
    EXPECT_EQ(shared.raw(), v.data) << name << ": used in place";
    EXPECT_EQ(bits_of(shared), bits_of(from_files)) << name;
  }
  EXPECT_THROW(prepared.get("nothing"), InputError);
}

TEST(WeightLoading, FileTruncatedAfterItWasMappedIsRefusedInOneLine) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  SafetensorsWriter writer;
  writer.add_f32("a", {1024}, random_values(1024, 8));
  writer.add_f32("b", {1024}, random_values(1024, 9));
  writer.write(path);
  auto file = SafetensorsFile::open(path);
  EXPECT_NO_THROW(file->view("a"));
  fs::resize_file(path, fs::file_size(path) / 2);  // as `truncate -s` or a copy over it would
  try {
    file->view("b");  // its bytes now lie past the end of the file: touching them would SIGBUS
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }

}

TEST(WeightLoading, TruncationBetweenOpenAndLoadIsTheLoadersOneLineError) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  SafetensorsWriter writer;
  writer.add_f32("w", {4, 8}, random_values(32, 10));
  writer.write(path);
  auto source = std::make_shared<SafetensorsWeightSource>("unet");
  source->add_file(SafetensorsFile::open(path));
  fs::resize_file(path, 16);
  auto backend = make_cpu_backend(1);
  WeightLoader loader(*source, *backend, "unet");
  EXPECT_FALSE(loader.load("w", {4, 8}, WeightKind::Linear).defined());
  try {
    loader.finish();
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": the file was truncated"), std::string::npos) << e.what();
  }
}

TEST(WeightLoading, FileRewrittenInPlaceIsRefused) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  SafetensorsWriter writer;
  writer.add_f32("w", {16}, random_values(16, 11));
  writer.write(path);
  auto file = SafetensorsFile::open(path);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-4, std::ios::end);
    f.write("\x01\x02\x03\x04", 4);  // same size, other bytes
  }
  // A modification time one second on, so the test holds on coarse-grained file systems too.
  fs::last_write_time(path, fs::last_write_time(path) + std::chrono::seconds(1));
  try {
    file->view("w");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("changed on disk"), std::string::npos) << e.what();
  }
}

TEST(WeightLoading, InPlaceFilesLendTheirMappingToTheCpuBackend) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  SafetensorsWriter writer;
  const std::vector<float> values = random_values(64, 12);
  writer.add_f32("w", {8, 8}, values);
  writer.write(path);
  auto backend = make_cpu_backend(1);
  auto copied_file = SafetensorsFile::open(path);
  EXPECT_FALSE(copied_file->view("w").keep_alive) << "by default a file's bytes are copied at load";
  auto mapped_file = SafetensorsFile::open(path, /*in_place=*/true);
  WeightView v = mapped_file->view("w");
  ASSERT_TRUE(v.keep_alive);
  Tensor t = backend->upload_weight(v, WeightKind::Linear);
  EXPECT_EQ(t.raw(), v.data);
  mapped_file.reset();
  v = WeightView();
  EXPECT_EQ(backend->to_host(t), values) << "the tensor keeps the mapping alive";
}

}  // namespace
}  // namespace sdmpi
