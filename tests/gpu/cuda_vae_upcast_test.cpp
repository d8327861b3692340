// The SDXL VAE under fp16 (vae_compute_dtype, docs/reference/sdxl-semantics.md "VAE in fp16"):
// diffusers' SDXL pipelines upcast a force_upcast VAE to float32 when the rest runs in float16,
// because SDXL's VAE activations overflow fp16. On an fp16 CUDA backend:
//   - a decoder loaded in F32 computes in F32 (its output is F32) and matches the CPU within 1
//     level of uint8 on fresh random latents, like an all-F32 GPU run;
//   - loaded without a dtype it stays in the compute dtype (F16 output);
//   - the tiny SDXL pipeline generates on the fp16 GPU close to the CPU image.
// Skips visibly without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "gpu/gpu_test_util.h"
#include "sdmpi/job.h"
#include "sdmpi/make_model.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/vae.h"

using namespace sdmpi;
using namespace sdmpi::gputest;

namespace {

int max_level_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  int worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i])));
  return worst;
}

TEST(CudaVaeUpcast, DecoderLoadedInFloat32ComputesInFloat32UnderFp16) {
  SDMPI_REQUIRE_GPU();
  InMemoryModel model = make_model_in_memory("tiny-sdxl", 0);
  const VAEConfig& config = model.configs.vae;
  ASSERT_EQ(vae_compute_dtype(config, /*sdxl_pipeline=*/true, DType::F16), DType::F32);
  Backend& half = gpu(DType::F16);
  const AutoencoderKLDecoder on_cpu = AutoencoderKLDecoder::load(config, *model.vae, cpu());
  const AutoencoderKLDecoder upcast = AutoencoderKLDecoder::load(config, *model.vae, half, DType::F32);
  const AutoencoderKLDecoder plain = AutoencoderKLDecoder::load(config, *model.vae, half);

  std::mt19937_64 rng(base_seed());
  std::normal_distribution<float> normal;
  for (const auto& [h, w] : std::vector<std::pair<int64_t, int64_t>>{{8, 8}, {5, 11}, {16, 12}}) {
    SCOPED_TRACE(std::to_string(h) + "x" + std::to_string(w));
    std::vector<float> z(static_cast<size_t>(h * w * config.latent_channels));
    for (float& v : z) v = normal(rng);
    const Shape shape{1, h, w, config.latent_channels};
    const std::vector<float> ref = cpu().to_host(on_cpu.decode(cpu(), cpu().from_host(z.data(), shape)));

    // Latents arrive in float32 (the pipeline keeps them so); F16 latents are cast up as well.
    const Tensor z32 = half.cast(half.from_host(z.data(), shape), DType::F32);
    const Tensor image = upcast.decode(half, z32);
    EXPECT_EQ(image.dtype(), DType::F32);
    EXPECT_EQ(upcast.decode(half, half.from_host(z.data(), shape)).dtype(), DType::F32);
    const std::vector<float> got = half.to_host(image);
    EXPECT_LE(max_level_difference(image_to_uint8(got), image_to_uint8(ref)), 1);

    EXPECT_EQ(plain.decode(half, z32).dtype(), DType::F16);
  }
}

TEST(CudaVaeUpcast, TinySdxlPipelineOnFp16StaysCloseToTheCpu) {
  SDMPI_REQUIRE_GPU();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("sdmpi_vae_upcast_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  make_model("tiny-sdxl", 0, dir.string());
  {
    ModelSource model = ModelSource::open(dir.string());
    Txt2ImgPipeline on_cpu(model, cpu());
    Txt2ImgPipeline on_gpu(model, gpu(DType::F16));
    WorkItem item;
    item.params.prompt = "a red cube on a blue table";
    item.params.seed = 7;
    item.params.steps = 3;
    item.params.width = item.params.height = 64;
    const std::vector<ImageResult> ref = on_cpu.generate({item});
    const std::vector<ImageResult> got = on_gpu.generate({item});
    ASSERT_TRUE(ref.at(0).ok) << ref.at(0).error;
    ASSERT_TRUE(got.at(0).ok) << got.at(0).error;
    double mean = 0;
    for (size_t i = 0; i < ref[0].rgb.size(); ++i)
      mean += std::abs(static_cast<int>(ref[0].rgb[i]) - static_cast<int>(got[0].rgb[i]));
    mean /= static_cast<double>(ref[0].rgb.size());
    EXPECT_LE(mean, 8.0);  // the fp16 UNet's rounding, as cuda_pipeline_test allows
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
