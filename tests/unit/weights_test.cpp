// WeightLoader and MemoryWeightSource: every problem of a component in one message.
#include "sdmpi/weights.h"

#include <gtest/gtest.h>

#include <cstdio>

#include <stdexcept>

#include "sdmpi/error.h"
#include "sdmpi/model_files.h"
#include "sdmpi/safetensors.h"

using namespace sdmpi;

namespace {

// A backend that only records uploads: the loader needs nothing else.
class RecordingBackend : public Backend {
 public:
  struct Upload {
    std::string name;
    Shape shape;
    DType dtype;
    WeightKind kind;
    std::vector<float> values;
  };
  std::vector<Upload> uploads;

  std::string name() const override { return "recording"; }
  Device device() const override { return Device::CPU; }
  DType compute_dtype() const override { return DType::F32; }

 protected:
  Tensor do_upload_weight(const WeightView& w, WeightKind kind, const Shape&, DType) override {
    std::vector<float> v(static_cast<size_t>(shape_numel(w.shape)));
    convert_to_f32(w.dtype, w.data, v.data(), v.size());
    uploads.push_back({w.name, w.shape, w.dtype, kind, v});
    Tensor t = Tensor::host(w.shape);
    std::copy(v.begin(), v.end(), t.f32());
    return t;
  }

  [[noreturn]] static void no() { throw std::logic_error("not used by the loader"); }
  Tensor do_empty(const Shape&, DType) override { no(); }
  Tensor do_from_host(const float*, const Shape&) override { no(); }
  std::vector<float> do_to_host(const Tensor&) override { no(); }
  Tensor do_cast(const Tensor&, DType) override { no(); }
  Tensor do_linear(const Tensor&, const Tensor&, const Tensor*, const Tensor*, const Shape&) override { no(); }
  Tensor do_conv2d(const Tensor&, const Tensor&, const Tensor*, int, int, const Tensor*, const Shape&) override { no(); }
  Tensor do_group_norm(const Tensor&, int, const Tensor&, const Tensor&, float, bool) override { no(); }
  Tensor do_layer_norm(const Tensor&, const Tensor&, const Tensor&, float) override { no(); }
  Tensor do_attention(const Tensor&, const Tensor&, const Tensor&, int, bool) override { no(); }
  Tensor do_activation(const Tensor&, Activation) override { no(); }
  Tensor do_geglu(const Tensor&, const Shape&) override { no(); }
  Tensor do_binary(BinaryOp, const Tensor&, const Tensor&) override { no(); }
  Tensor do_binary_scalar(BinaryOp, const Tensor&, float, bool) override { no(); }
  Tensor do_add_batch_channel(const Tensor&, const Tensor&) override { no(); }
  Tensor do_clamp(const Tensor&, float, float) override { no(); }
  Tensor do_upsample_nearest(const Tensor&, int64_t, int64_t) override { no(); }
  Tensor do_pad2d(const Tensor&, int, int, int, int, const Shape&) override { no(); }
  Tensor do_concat_channels(const Tensor&, const Tensor&, const Shape&) override { no(); }
  Tensor do_concat_batch(const std::vector<Tensor>&, const Shape&) override { no(); }
  Tensor do_embedding(const std::vector<int32_t>&, const Tensor&) override { no(); }
  Tensor do_copy(const Tensor&) override { no(); }
};

std::string finish_message(WeightLoader& loader) {
  try {
    loader.finish();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(MemoryWeightSource, AddGetNames) {
  MemoryWeightSource src("tiny");
  src.add_f32("b.weight", {2, 2}, {1, 2, 3, 4});
  std::vector<uint8_t> half = {0x00, 0x3c, 0x00, 0xc0};  // 1.0, -2.0
  src.add("a.bias", DType::F16, {2}, half);
  EXPECT_EQ(src.names(), (std::vector<std::string>{"a.bias", "b.weight"}));
  EXPECT_TRUE(src.has("a.bias"));
  EXPECT_FALSE(src.has("c"));
  WeightView w = src.get("a.bias");
  EXPECT_EQ(w.dtype, DType::F16);
  EXPECT_EQ(w.shape, (Shape{2}));
  EXPECT_EQ(half_to_float(static_cast<const uint16_t*>(w.data)[1]), -2.0f);
  EXPECT_THROW(src.get("c"), InputError);
  EXPECT_THROW(src.add_f32("bad", {3}, {1, 2}), Error);  // byte count does not fit the shape
  EXPECT_EQ(src.describe(), "tiny");
}

TEST(WeightLoader, AllPresentUploadsEachOnce) {
  MemoryWeightSource src;
  src.add_f32("conv.weight", {2, 1, 1, 1}, {5, 6});
  src.add_f32("conv.bias", {2}, {7, 8});
  RecordingBackend be;
  WeightLoader loader(src, be, "unet");
  Tensor w = loader.load("conv.weight", {2, 1, 1, 1}, WeightKind::Conv);
  Tensor b = loader.load("conv.bias", {2}, WeightKind::Vector);
  EXPECT_TRUE(w.defined());
  EXPECT_TRUE(b.defined());
  EXPECT_NO_THROW(loader.finish());
  ASSERT_EQ(be.uploads.size(), 2u);
  EXPECT_EQ(be.uploads[0].name, "conv.weight");
  EXPECT_EQ(be.uploads[0].kind, WeightKind::Conv);
  EXPECT_EQ(be.uploads[1].values, (std::vector<float>{7, 8}));
}

// After each upload the loader tells the source it may drop that tensor's bytes (a mapped file
// releases its pages: SafetensorsFile::drop_resident); a view the backend may use in place
// (keep_alive) is never released, nor is a tensor that failed to load.
TEST(WeightLoader, ReleasesWhatTheBackendCopied) {
  struct Recording : MemoryWeightSource {
    mutable std::vector<std::string> released;
    std::shared_ptr<const void> owner = std::make_shared<int>(0);
    void release(const std::string& name) const override { released.push_back(name); }
    WeightView get(const std::string& name) const override {
      WeightView w = MemoryWeightSource::get(name);
      if (name == "in_place") w.keep_alive = owner;
      return w;
    }
  } src;
  src.add_f32("copied", {2}, {1, 2});
  src.add_f32("in_place", {2}, {3, 4});
  src.add_f32("misshaped", {3}, {5, 6, 7});
  RecordingBackend be;
  WeightLoader loader(src, be, "unet");
  EXPECT_TRUE(loader.load("copied", {2}, WeightKind::Vector).defined());
  EXPECT_TRUE(loader.load("in_place", {2}, WeightKind::Vector).defined());
  EXPECT_FALSE(loader.load("misshaped", {2}, WeightKind::Vector).defined());
  EXPECT_EQ(src.released, (std::vector<std::string>{"copied"}));
}

TEST(WeightLoader, ReportsEveryProblemAtOnce) {
  MemoryWeightSource src("unet.safetensors");
  src.add_f32("ok", {1}, {1});
  src.add_f32("lin.weight", {2, 3}, std::vector<float>(6));
  src.add_f32("extra.one", {1}, {1});
  src.add_f32("extra.two", {1}, {1});
  src.add_f32("encoder.conv", {1}, {1});
  src.add_f32("position_ids", {1}, {1});
  RecordingBackend be;
  WeightLoader loader(src, be, "unet");
  EXPECT_TRUE(loader.load("ok", {1}, WeightKind::Vector).defined());
  EXPECT_FALSE(loader.load("down_blocks.0.resnets.0.conv1.weight", {4, 4, 3, 3}, WeightKind::Conv).defined());
  EXPECT_FALSE(loader.load("down_blocks.0.resnets.0.conv1.bias", {4}, WeightKind::Vector).defined());
  EXPECT_FALSE(loader.load("lin.weight", {3, 2}, WeightKind::Linear).defined());
  loader.ignore_prefix("encoder.");
  loader.ignore("position_ids");
  EXPECT_EQ(finish_message(loader),
            "unet (unet.safetensors): 2 missing tensors (down_blocks.0.resnets.0.conv1.weight, "
            "down_blocks.0.resnets.0.conv1.bias), 1 mis-shaped (lin.weight: file [2, 3] expected [3, 2]), "
            "2 unexpected (extra.one, extra.two)");
  EXPECT_EQ(be.uploads.size(), 1u);  // nothing uploaded for a bad tensor
}

TEST(WeightLoader, LongListsAreCutButCounted) {
  MemoryWeightSource src;
  RecordingBackend be;
  WeightLoader loader(src, be, "vae");
  for (int i = 0; i < 10; ++i) {
    char name[16];  // snprintf, not "t" + std::to_string(i): GCC 12 -Wrestrict false positive (bug 105329)
    std::snprintf(name, sizeof name, "t%d", i);
    loader.load(name, {1}, WeightKind::Vector);
  }
  std::string msg = finish_message(loader);
  EXPECT_EQ(msg, "vae (memory): 10 missing tensors (t0, t1, t2, t3, t4, t5, ... and 4 more)");
}

TEST(WeightLoader, OneMissingIsSingular) {
  MemoryWeightSource src;
  RecordingBackend be;
  WeightLoader loader(src, be, "text_encoder");
  loader.load("text_model.final_layer_norm.weight", {8}, WeightKind::Vector);
  EXPECT_EQ(finish_message(loader), "text_encoder (memory): 1 missing tensor (text_model.final_layer_norm.weight)");
}

// A tensor of a dtype we do not read (I64) where a float is expected: named as unreadable.
TEST(WeightLoader, UnsupportedDtypeIsUnreadable) {
  auto f = SafetensorsFile::open(std::string(SDMPI_TEST_DATA) + "/malformed/safetensors/unsupported_i64.safetensors");
  SafetensorsWeightSource src("ids.safetensors");
  src.add_file(f);
  EXPECT_TRUE(src.has("position_ids"));
  RecordingBackend be;
  WeightLoader loader(src, be, "text_encoder");
  EXPECT_FALSE(loader.load("position_ids", {3}, WeightKind::Vector).defined());
  std::string msg = finish_message(loader);
  EXPECT_NE(msg.find("1 unreadable ("), std::string::npos) << msg;
  EXPECT_NE(msg.find("'position_ids' has dtype I64, which is unsupported"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("unexpected"), std::string::npos) << msg;
}
