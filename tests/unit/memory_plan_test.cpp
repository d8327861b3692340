// The resource plan (src/pipeline/memory_plan.h): its weights are the declared parameter counts
// times the dtype size; its total is an upper bound on what the tiny model really uses, within
// kEstimateFactor, at two image sizes (peak RSS of a forked child that runs the pipeline on the
// CPU); and a request that does not fit gives the one error line.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <map>

#include "pipeline/lora_model.h"
#include "pipeline/memory_plan.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/param_sink.h"
#include "sdmpi/png.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

using namespace sdmpi;

namespace {

// Peak RSS in bytes of a child process that makes one tiny-model image of side `side` (CFG on,
// one step), or -1 when the child failed. With `loras`, the model has them merged (as a rank does);
// with `init_image` (a PNG of that side), the item is img2img at strength 1.
// The estimate bounds weights and activations; the CPU backend's kept Winograd transforms come out
// of the headroom the plan leaves (generate_plan.cpp, cpu_winograd_budget), so they are off unless
// `winograd_bytes` allows them (KeptWinogradWeightsStayWithinTheirBudget).
int64_t measured_peak_rss(int side, const std::vector<LoraSpec>& loras = {}, const std::string& init_image = "",
                          int64_t winograd_bytes = 0) {
  pid_t pid = fork();
  if (pid == 0) {
    try {
      ModelSource model = with_loras(ModelSource::open("tiny"), loras);
      auto backend = make_cpu_backend(2, winograd_bytes);
      Txt2ImgPipeline pipeline(model, *backend);
      WorkItem item;
      item.params.prompt = "a cat";
      item.params.steps = 1;
      item.params.width = item.params.height = side;
      item.params.init_image = init_image;
      item.params.strength = 1.0f;
      std::vector<ImageResult> images = pipeline.generate({item});
      _exit(images.size() == 1 && images[0].ok ? 0 : 1);
    } catch (...) {
      _exit(1);
    }
  }
  int status = 0;
  struct rusage usage {};
  if (pid < 0 || wait4(pid, &status, 0, &usage) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

MemoryRequest cpu_request(int side) {
  MemoryRequest r;
  r.width = r.height = side;
  r.batch = 1;
  r.cfg = true;
  r.dtype = DType::F32;
  return r;
}

}  // namespace

TEST(MemoryPlan, WeightsAreTheDeclaredParametersTimesTheDtypeSize) {
  MemoryRequest r = cpu_request(512);
  r.dtype = DType::F16;
  r.gpu = true;
  MemoryNeed need = estimate_memory(UNetConfig::sd15(), VAEConfig::sd15(), ClipTextConfig::sd15(), r);
  int64_t decoder = 0;
  for (const ParamSpec& p : vae_parameters(VAEConfig::sd15()))
    if (p.name.rfind("encoder.", 0) != 0 && p.name.rfind("quant_conv.", 0) != 0) decoder += shape_numel(p.shape);
  const int64_t unet = count_parameters(unet_parameters(UNetConfig::sd15()));
  EXPECT_EQ(unet, 859520964);  // make_model.h
  EXPECT_EQ(need.weight_bytes, 2 * (unet + decoder + count_parameters(clip_text_parameters(ClipTextConfig::sd15()))));
  // SD 1.5 at 512x512 with CFG in fp16 fits a 16 GB card, as it does in diffusers.
  EXPECT_LT(need.total(), int64_t{16} << 30);
}

TEST(MemoryPlan, ActivationsGrowWithSizeBatchAndGuidance) {
  const UNetConfig unet = UNetConfig::sd15();
  const VAEConfig vae = VAEConfig::sd15();
  const ClipTextConfig text = ClipTextConfig::sd15();
  MemoryRequest r = cpu_request(512);
  const int64_t base = estimate_memory(unet, vae, text, r).activation_bytes;
  r.cfg = false;
  EXPECT_LT(estimate_memory(unet, vae, text, r).activation_bytes, base);
  r.cfg = true;
  r.batch = 4;
  EXPECT_GT(estimate_memory(unet, vae, text, r).activation_bytes, base);
  r.batch = 1;
  r.width = r.height = 1024;
  EXPECT_GT(estimate_memory(unet, vae, text, r).activation_bytes, 3 * base);
  // The 100000x100000 request: terabytes, computed without overflow.
  r.width = r.height = 100000;
  EXPECT_GT(estimate_memory(unet, vae, text, r).total(), int64_t{1} << 40);
}

// AddressSanitizer's shadow memory and redzones inflate RSS, so the bound is checked only in the
// uninstrumented build (build/ in CI); the sanitizer tree skips it visibly.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SDMPI_TEST_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define SDMPI_TEST_UNDER_ASAN 1
#endif

namespace {

// Runs `f` in a child process and returns what it returns (-1 when the child failed), so the
// parent starts no OpenMP threads before the children of the measurements below are forked.
int64_t in_child(const std::function<int64_t()>& f) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    int64_t value = -1;
    try {
      value = f();
    } catch (...) {
    }
    _exit(write(fds[1], &value, sizeof value) == sizeof value ? 0 : 1);
  }
  close(fds[1]);
  int64_t value = -1;
  if (pid < 0 || read(fds[0], &value, sizeof value) != sizeof value) value = -1;
  close(fds[0]);
  int status = 0;
  if (pid > 0) waitpid(pid, &status, 0);
  return value;
}

}  // namespace

// Runs before the test below, whose parent opens the tiny model (OpenMP): a child forked after that
// could hang in libgomp, so here the parent only forks (the estimate too is made in a child).
TEST(MemoryPlan, BoundsTheTinyModelWithALoraAndAnInitImage) {
#ifdef SDMPI_TEST_UNDER_ASAN
  GTEST_SKIP() << "under AddressSanitizer RSS includes its shadow memory; checked in the uninstrumented build";
#endif
  if (!kPngSupported) GTEST_SKIP() << "built without libpng: no init image";
  // The tiny model's own kohya LoRA (tools/golden/make_lora_golden.py) and a 512x512 init image.
  const std::string lora = std::string(SDMPI_TEST_DATA) + "/golden/lora/tiny_kohya.safetensors";
  const std::string init = std::string(SDMPI_BINARY_DIR) + "/memory_plan_init_" + std::to_string(::getpid()) + ".png";
  std::vector<uint8_t> rgb(512 * 512 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 7);
  write_png(init, rgb.data(), 512, 512, "");
  const int64_t measured = measured_peak_rss(512, {{lora, 0.8f}}, init);
  std::remove(init.c_str());
  ASSERT_GT(measured, 0) << "the child that runs img2img with a LoRA failed";
  // The plan of that job (total, or the LoRA's share), each made in a child.
  auto plan = [&](bool total) {
    return in_child([&] {
      ModelSource model = ModelSource::open("tiny");
      std::map<std::string, std::shared_ptr<WeightSource>> sources;
      std::map<std::string, const WeightSource*> targets;
      for (const char* c : {"unet", "text_encoder"}) targets[c] = (sources[c] = model.weights(c)).get();
      const LoraFile file = read_lora(lora, targets);
      MemoryRequest r = cpu_request(512);
      r.init_images = true;
      r.lora_bytes = lora_merge_bytes({&file});
      return total ? estimate_memory(model, r).total() : r.lora_bytes;
    });
  };
  const int64_t estimate = plan(true), lora_bytes = plan(false);
  ASSERT_GT(estimate, 0) << "the child that makes the estimate failed";
  EXPECT_GT(lora_bytes, 0);
  std::printf("512x512 img2img with a LoRA: estimate %s (LoRA %s), measured peak RSS %s (ratio %.2f)\n",
              format_gib(estimate).c_str(), format_gib(lora_bytes).c_str(), format_gib(measured).c_str(),
              static_cast<double>(estimate) / static_cast<double>(measured));
  EXPECT_GE(estimate, measured);
  EXPECT_LE(static_cast<double>(estimate), kEstimateFactor * static_cast<double>(measured));
}

TEST(MemoryPlan, BoundsTheTinyModelsMeasuredPeakWithinTheStatedFactor) {
#ifdef SDMPI_TEST_UNDER_ASAN
  GTEST_SKIP() << "under AddressSanitizer RSS includes its shadow memory; checked in the uninstrumented build";
#endif
  // The children run first: a child forked after this process started OpenMP threads could hang.
  std::map<int, int64_t> peak;
  for (int side : {128, 512}) {
    peak[side] = measured_peak_rss(side);
    ASSERT_GT(peak[side], 0) << "the child that generates a " << side << "px image failed";
  }
  ModelSource model = ModelSource::open("tiny");
  for (auto [side, measured] : peak) {
    const int64_t estimate = estimate_memory(model, cpu_request(side)).total();
    std::printf("%dx%d: estimate %s, measured peak RSS %s (ratio %.2f)\n", side, side, format_gib(estimate).c_str(),
                format_gib(measured).c_str(), static_cast<double>(estimate) / static_cast<double>(measured));
    EXPECT_GE(estimate, measured) << side << "px";
    EXPECT_LE(static_cast<double>(estimate), kEstimateFactor * static_cast<double>(measured)) << side << "px";
  }
}

TEST(MemoryPlan, KeptWinogradWeightsStayWithinTheirBudget) {
#ifdef SDMPI_TEST_UNDER_ASAN
  GTEST_SKIP() << "under AddressSanitizer RSS includes its shadow memory; checked in the uninstrumented build";
#endif
  // The tiny model at 512x512 (its VAE's 3x3 layers take Winograd's path): the peak with a budget
  // for kept transforms exceeds the peak without by at most that budget (plus allocator slack).
  const int64_t budget = int64_t{96} << 20, slack = int64_t{8} << 20;
  const int64_t without = measured_peak_rss(512), with = measured_peak_rss(512, {}, "", budget);
  ASSERT_GT(without, 0);
  ASSERT_GT(with, 0);
  std::printf("peak RSS without kept transforms %s, with a %s budget %s\n", format_gib(without).c_str(),
              format_gib(budget).c_str(), format_gib(with).c_str());
  EXPECT_LE(with - without, budget + slack);
}

TEST(MemoryPlan, InitImagesAddTheVaeEncoder) {
  const UNetConfig unet = UNetConfig::sd15();
  const VAEConfig vae = VAEConfig::sd15();
  const ClipTextConfig text = ClipTextConfig::sd15();
  MemoryRequest r = cpu_request(512);
  const MemoryNeed txt2img = estimate_memory(unet, vae, text, r);
  r.init_images = true;
  const MemoryNeed img2img = estimate_memory(unet, vae, text, r);
  int64_t encoder = 0;
  for (const ParamSpec& p : vae_parameters(vae))
    if (p.name.rfind("encoder.", 0) == 0 || p.name.rfind("quant_conv.", 0) == 0) encoder += shape_numel(p.shape);
  EXPECT_EQ(img2img.weight_bytes - txt2img.weight_bytes, 4 * encoder);
  // The encoder's first block at full resolution: at least six 512x512x128 float32 tensors.
  EXPECT_GE(img2img.activation_bytes - txt2img.activation_bytes, int64_t{6} * 512 * 512 * 128 * 4);
}

TEST(MemoryPlan, LoraMergeCountsTouchedWeightsOnceAndTheFilesTensors) {
  auto layer = [](const std::string& target, Shape down, Shape up) {
    LoraLayer l;
    l.component = "unet";
    l.target = target;
    l.down_shape = std::move(down);
    l.up_shape = std::move(up);
    return l;
  };
  LoraFile a, b;
  a.layers = {layer("q.weight", {4, 320}, {320, 4}), layer("conv.weight", {4, 320, 3, 3}, {640, 4, 1, 1})};
  b.layers = {layer("q.weight", {8, 320}, {320, 8})};  // the same weight: one copy
  const int64_t files = 4 * (4 * 320 + 320 * 4 + 4 * 320 * 9 + 640 * 4 + 8 * 320 + 320 * 8);
  const int64_t copies = 4 * (320 * 320 + 640 * 320 * 9);
  EXPECT_EQ(lora_merge_bytes({&a}), 4 * (4 * 320 + 320 * 4 + 4 * 320 * 9 + 640 * 4) + copies);
  EXPECT_EQ(lora_merge_bytes({&a, &b}), files + copies);
  EXPECT_EQ(lora_merge_bytes({}), 0);
  MemoryRequest r = cpu_request(512);
  const int64_t plain = estimate_memory(UNetConfig::sd15(), VAEConfig::sd15(), ClipTextConfig::sd15(), r).weight_bytes;
  r.lora_bytes = lora_merge_bytes({&a, &b});
  EXPECT_EQ(estimate_memory(UNetConfig::sd15(), VAEConfig::sd15(), ClipTextConfig::sd15(), r).weight_bytes, plain + files + copies);
}

TEST(MemoryPlan, ShortfallIsOneLineNamingRequestNeedAndLimit) {
  MemoryNeed need;
  need.weight_bytes = int64_t{2} << 30;
  need.activation_bytes = int64_t{30} << 30;
  EXPECT_EQ(memory_shortfall("512x512 images", need, int64_t{64} << 30, "(host)"), "");
  EXPECT_EQ(memory_shortfall("512x512 images", need, -1, "(host)"), "");  // unknown: nothing checked
  EXPECT_EQ(memory_shortfall("512x512 images", need, int64_t{8} << 30, "(host)"),
            "512x512 images needs about 32 GiB per rank (weights 2.00 GiB + activations 30 GiB); this rank has "
            "8.00 GiB (host)");
}

TEST(MemoryPlan, HostMemoryIsKnownOnLinux) {
  const int64_t available = host_memory_available();
  EXPECT_GT(available, int64_t{0});
  EXPECT_GT(make_cpu_backend(1)->memory_available(), int64_t{0});
}

// diffusers' SDXL pipelines decode a force_upcast VAE in float32 under fp16 (vae_compute_dtype);
// the plan counts its weights at 4 bytes there, and only there.
TEST(MemoryPlan, AnUpcastVaeCountsItsWeightsInFloat32) {
  MemoryRequest r = cpu_request(512);
  r.dtype = DType::F16;
  r.gpu = true;
  int64_t decoder = 0;
  for (const ParamSpec& p : vae_parameters(VAEConfig::sd15()))
    if (p.name.rfind("encoder.", 0) != 0 && p.name.rfind("quant_conv.", 0) != 0) decoder += shape_numel(p.shape);
  const ClipTextConfig text = ClipTextConfig::sd15();
  VAEConfig vae = VAEConfig::sd15();
  vae.force_upcast = true;
  const MemoryNeed sd15 = estimate_memory(UNetConfig::sd15(), vae, text, r);
  const MemoryNeed sdxl_like = estimate_memory(UNetConfig::sd15(), vae, text, r, &text);  // a second encoder: SDXL's pipeline
  EXPECT_EQ(sdxl_like.weight_bytes - sd15.weight_bytes,
            2 * count_parameters(clip_text_parameters(text)) + (4 - 2) * decoder);
  EXPECT_GT(sdxl_like.activation_bytes, sd15.activation_bytes);
  vae.force_upcast = false;
  EXPECT_EQ(estimate_memory(UNetConfig::sd15(), vae, text, r, &text).weight_bytes,
            sd15.weight_bytes + 2 * count_parameters(clip_text_parameters(text)));
  r.dtype = DType::BF16;  // bf16 has float32's range: no upcast
  vae.force_upcast = true;
  EXPECT_EQ(estimate_memory(UNetConfig::sd15(), vae, text, r, &text).weight_bytes,
            estimate_memory(UNetConfig::sd15(), vae, text, r).weight_bytes + 2 * count_parameters(clip_text_parameters(text)));
}
