// End to end: the built-in tiny pipeline on the GPU against the CPU reference backend, same prompts
// and seeds. In float32 every pixel must be within 1 level of the CPU image; in float16/bfloat16 the
// images must be finite and close on average. Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gpu/gpu_test_util.h"
#include "sdmpi/job.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/weights.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

std::vector<WorkItem> items_for(const std::string& sampler) {
  std::vector<WorkItem> items;
  const char* prompts[] = {"a photograph of an astronaut riding a horse", "a red cube on a blue table"};
  for (int i = 0; i < 2; ++i) {
    WorkItem w;
    w.index = i;
    w.prompt_index = i;
    w.params.prompt = prompts[i];
    w.params.negative_prompt = i == 1 ? "blurry" : "";
    w.params.seed = 1234 + static_cast<uint64_t>(i);
    w.params.steps = 4;
    w.params.guidance = 7.5f;
    w.params.width = 64;
    w.params.height = 64;
    w.params.sampler = sampler;
    items.push_back(w);
  }
  return items;
}

struct Diff {
  int max_level = 0;
  double mean_level = 0;
};

Diff compare(const ImageResult& a, const ImageResult& b) {
  Diff d;
  EXPECT_EQ(a.rgb.size(), b.rgb.size());
  size_t n = std::min(a.rgb.size(), b.rgb.size());
  for (size_t i = 0; i < n; ++i) {
    int diff = std::abs(static_cast<int>(a.rgb[i]) - static_cast<int>(b.rgb[i]));
    d.max_level = std::max(d.max_level, diff);
    d.mean_level += diff;
  }
  if (n) d.mean_level /= static_cast<double>(n);
  return d;
}

class CudaPipeline : public ::testing::TestWithParam<DType> {};

TEST_P(CudaPipeline, TinyModelMatchesTheCpu) {
  SDMPI_REQUIRE_GPU();
  const DType t = GetParam();
  ModelSource model = ModelSource::open("tiny");
  Txt2ImgPipeline on_cpu(model, cpu());
  Txt2ImgPipeline on_gpu(model, gpu(t));
  for (const char* sampler : {"pndm", "euler_a", "dpm++2m"}) {
    SCOPED_TRACE(sampler);
    std::vector<WorkItem> items = items_for(sampler);
    std::vector<ImageResult> ref = on_cpu.generate(items);
    std::vector<ImageResult> got = on_gpu.generate(items);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_TRUE(ref[i].ok) << ref[i].error;
      ASSERT_TRUE(got[i].ok) << got[i].error;
      EXPECT_EQ(got[i].width, ref[i].width);
      EXPECT_EQ(got[i].height, ref[i].height);
      Diff d = compare(got[i], ref[i]);
      if (t == DType::F32) {
        EXPECT_LE(d.max_level, 1) << "image " << i << ": mean difference " << d.mean_level << " levels";
      } else {
        EXPECT_LE(d.mean_level, 8.0) << "image " << i << ": max difference " << d.max_level << " levels";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaPipeline, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& info) { return dtype_label(info.param); });

}  // namespace

// GPU ranks sharing a node upload from the node's block (src/app/shared_weights.h, which lets
// every GPU backend take part): float32 in the
// backend layout, converted once by the node's first rank. On an fp16/bf16 GPU that must give the
// very weights the files give (F16/BF16 → F32 is exact, the upload narrows once), so the images are
// identical bit for bit.
TEST_P(CudaPipeline, WeightsFromANodeSharedBlockGiveTheSameImages) {
  SDMPI_REQUIRE_GPU();
  const DType t = GetParam();
  ModelSource files = ModelSource::open("tiny");
  std::map<std::string, std::shared_ptr<WeightSource>> prepared;
  std::vector<std::shared_ptr<uint8_t[]>> blocks;
  for (const char* c : {"unet", "vae", "text_encoder"}) {
    std::shared_ptr<WeightSource> source = files.weights(c);
    std::vector<PreparedWeightSource::Slot> slots;
    const uint64_t end = PreparedWeightSource::plan(*source, DType::F32, 64, &slots);
    auto block = std::shared_ptr<uint8_t[]>(new uint8_t[end]);
    PreparedWeightSource::fill(*source, DType::F32, slots, block.get(), 2);
    prepared[c] = std::make_shared<PreparedWeightSource>(source, DType::F32, slots, block.get(), block);
  }
  ModelSource shared = files.with_weights(prepared);
  Txt2ImgPipeline from_files(files, gpu(t));
  Txt2ImgPipeline from_block(shared, gpu(t));
  const std::vector<WorkItem> items = items_for("euler_a");
  const std::vector<ImageResult> a = from_files.generate(items), b = from_block.generate(items);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(a[i].ok && b[i].ok) << a[i].error << b[i].error;
    EXPECT_EQ(a[i].rgb, b[i].rgb) << "image " << i;
  }
}
