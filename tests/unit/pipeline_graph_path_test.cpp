// The pipeline's captured-step bookkeeping (graphs, static inputs, overwritten outputs) run on the
// CPU, without a GPU.
//
// GraphEmulator is a Backend whose ops are the CPU backend's and whose run_graph keeps the CUDA
// backend's contract the way a real graph does: static input buffers that a call copies into,
// and outputs that are the same tensors every call, overwritten by each replay. While the callable
// "captures" or "replays" (every call after the first), host traffic throws, as it does inside a
// real capture. So the pipeline on it must give the CPU backend's images bit for bit (the same
// float32 ops on the same values): this proves its bookkeeping (what is a graph input, who
// owns the outputs, the per-pipeline keys, the precomputed timestep projections) on any machine.
// What it cannot prove: the dtype policy below float32, and the real capture (tests/gpu).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/error.h"
#include "sdmpi/job.h"
#include "sdmpi/make_model.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/unet.h"

using namespace sdmpi;

namespace {

class GraphEmulator final : public Backend {
 public:
  GraphEmulator() : cpu_(make_cpu_backend(2)) {}

  int captures = 0, replays = 0, drops = 0;

  std::string name() const override { return "graph emulator over " + cpu_->name(); }
  Device device() const override { return cpu_->device(); }
  DType compute_dtype() const override { return DType::F32; }
  void synchronize() override { refuse("synchronize"); }

 protected:
  // ---- the CPU's ops, host traffic refused while "capturing" -------------------------------------
  Tensor do_empty(const Shape& shape, DType dtype) override { return cpu_->empty(shape, dtype); }
  Tensor do_from_host(const float* data, const Shape& shape) override {
    refuse("from_host");
    return cpu_->from_host(data, shape);
  }
  std::vector<float> do_to_host(const Tensor& t) override {
    refuse("to_host");
    return cpu_->to_host(t);
  }
  Tensor do_upload_weight(const WeightView& w, WeightKind kind, const Shape&, DType model_dtype) override {
    refuse("upload_weight");
    return cpu_->upload_weight(w, kind, model_dtype);
  }
  Tensor do_cast(const Tensor& x, DType) override {
    throw Error("emulator: only F32 exists here, asked to cast " + x.describe());
  }
  Tensor do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual, const Shape&) override {
    return cpu_->linear(x, w, bias, residual);
  }
  Tensor do_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad, const Tensor* residual,
                   const Shape&) override {
    return cpu_->conv2d(x, w, bias, stride, pad, residual);
  }
  Tensor do_group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                       bool silu) override {
    return cpu_->group_norm(x, groups, gamma, beta, eps, silu);
  }
  Tensor do_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override {
    return cpu_->layer_norm(x, gamma, beta, eps);
  }
  Tensor do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override {
    return cpu_->attention(q, k, v, heads, causal);
  }
  Tensor do_activation(const Tensor& x, Activation act) override { return cpu_->activation(x, act); }
  Tensor do_geglu(const Tensor& x, const Shape&) override { return cpu_->geglu(x); }
  Tensor do_binary(BinaryOp op, const Tensor& a, const Tensor& b) override { return cpu_->binary(op, a, b); }
  Tensor do_binary_scalar(BinaryOp op, const Tensor& a, float s, bool scalar_first) override {
    return cpu_->binary_scalar(op, a, s, scalar_first);
  }
  Tensor do_add_batch_channel(const Tensor& x, const Tensor& t) override { return cpu_->add_batch_channel(x, t); }
  Tensor do_clamp(const Tensor& x, float lo, float hi) override { return cpu_->clamp(x, lo, hi); }
  Tensor do_upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) override {
    return cpu_->upsample_nearest(x, out_h, out_w);
  }
  Tensor do_pad2d(const Tensor& x, int top, int bottom, int left, int right, const Shape&) override {
    return cpu_->pad2d(x, top, bottom, left, right);
  }
  Tensor do_concat_channels(const Tensor& a, const Tensor& b, const Shape&) override {
    return cpu_->concat_channels(a, b);
  }
  Tensor do_concat_batch(const std::vector<Tensor>& parts, const Shape&) override { return cpu_->concat_batch(parts); }
  Tensor do_embedding(const std::vector<int32_t>& ids, const Tensor& table) override {
    refuse("embedding");
    return cpu_->embedding(ids, table);
  }
  Tensor do_copy(const Tensor& x) override { return cpu_->copy(x); }

 public:
  // ---- captured steps, as a CUDA graph keeps them ---------------------------------------------------
  std::vector<Tensor> run_graph(const GraphKey& key, const std::vector<Tensor>& inputs, const GraphFn& fn) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      Graph g;
      for (const Tensor& in : inputs) g.static_inputs.push_back(cpu_->copy(in));
      fn(g.static_inputs);  // warm-up, eager
      capturing_ = true;
      g.outputs = fn(g.static_inputs);
      capturing_ = false;
      ++captures;
      graphs_.emplace(key, g);
      return g.outputs;
    }
    Graph& g = it->second;
    if (inputs.size() != g.static_inputs.size()) throw Error("emulator: input count changed for a key");
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].shape() != g.static_inputs[i].shape() || inputs[i].dtype() != g.static_inputs[i].dtype())
        throw Error("emulator: input " + std::to_string(i) + " " + inputs[i].describe() + " differs from the captured " +
                    g.static_inputs[i].describe());
      if (inputs[i].raw() != g.static_inputs[i].raw())
        std::memcpy(g.static_inputs[i].raw(), inputs[i].raw(), inputs[i].nbytes());
    }
    // A replay: the captured work again, into the same output buffers.
    capturing_ = true;
    std::vector<Tensor> fresh = fn(g.static_inputs);
    capturing_ = false;
    if (fresh.size() != g.outputs.size()) throw Error("emulator: output count changed");
    for (size_t i = 0; i < fresh.size(); ++i) std::memcpy(g.outputs[i].raw(), fresh[i].raw(), fresh[i].nbytes());
    ++replays;
    return g.outputs;
  }
  bool graph_captured(const GraphKey& key) const override { return graphs_.count(key) > 0; }
  std::vector<Tensor> graph_inputs(const GraphKey& key) override {
    auto it = graphs_.find(key);
    return it == graphs_.end() ? std::vector<Tensor>{} : it->second.static_inputs;
  }
  void drop_graphs() override {
    graphs_.clear();
    ++drops;
  }
 private:
  void refuse(const char* op) const {
    if (capturing_) throw Error(std::string(op) + " inside a graph capture");
  }
  struct Graph {
    std::vector<Tensor> static_inputs, outputs;
  };
  std::unique_ptr<Backend> cpu_;
  std::map<GraphKey, Graph> graphs_;
  bool capturing_ = false;
};

std::vector<WorkItem> items(const std::string& sampler, float guidance, int batch, int width, int height) {
  std::vector<WorkItem> out;
  for (int i = 0; i < batch; ++i) {
    WorkItem w;
    w.index = i;
    w.prompt_index = i;
    w.params.prompt = i % 2 ? "a red cube on a blue table" : "a photograph of an astronaut riding a horse";
    w.params.negative_prompt = i == 1 ? "blurry" : "";
    w.params.seed = 99 + static_cast<uint64_t>(i);
    w.params.steps = 4;
    w.params.guidance = guidance;
    w.params.width = width;
    w.params.height = height;
    w.params.sampler = sampler;
    out.push_back(w);
  }
  return out;
}

void expect_same(const std::vector<ImageResult>& got, const std::vector<ImageResult>& want,
                 const std::vector<float>& got_latents, const std::vector<float>& want_latents) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_TRUE(want[i].ok) << want[i].error;
    ASSERT_TRUE(got[i].ok) << got[i].error;
    EXPECT_TRUE(got[i].rgb == want[i].rgb) << "image " << i << " differs from the CPU path's";
  }
  ASSERT_EQ(got_latents.size(), want_latents.size());
  EXPECT_EQ(std::memcmp(got_latents.data(), want_latents.data(), want_latents.size() * sizeof(float)), 0)
      << "final latents differ from the CPU path's";
}

TEST(PipelineGraphPath, SameBitsAsTheCpuPathForEverySamplerWithAndWithoutGuidance) {
  ModelSource model = ModelSource::open("tiny");
  std::unique_ptr<Backend> cpu = make_cpu_backend(2);
  GraphEmulator emu;
  Txt2ImgPipeline reference(model, *cpu);
  int drops_before = 0;
  {
    Txt2ImgPipeline graphed(model, emu);
    struct Run {
      const char* sampler;
      float guidance;
      int batch, width, height;
    };
    // PNDM and DPM++ keep earlier model outputs: without guidance the graph's own output would be
    // overwritten under them unless the pipeline copies it.
    const Run runs[] = {{"pndm", 7.5f, 2, 64, 48}, {"pndm", 1.0f, 2, 64, 48},  {"euler_a", 7.5f, 2, 64, 48},
                        {"dpm++2m", 1.0f, 1, 48, 64}, {"euler", 5.0f, 3, 64, 64}, {"pndm", 7.5f, 2, 64, 48}};
    for (const Run& r : runs) {
      SCOPED_TRACE(std::string(r.sampler) + " guidance " + std::to_string(r.guidance) + " batch " +
                   std::to_string(r.batch));
      const std::vector<WorkItem> batch = items(r.sampler, r.guidance, r.batch, r.width, r.height);
      std::vector<ImageResult> want = reference.generate(batch);
      std::vector<ImageResult> got = graphed.generate(batch);
      expect_same(got, want, graphed.last_latents(), reference.last_latents());
    }
    // Keys (batch, size, CFG): pndm/cfg 2x(64x48), pndm no-cfg, euler_a shares pndm/cfg's graph,
    // dpm++ 1x(48x64) no-cfg, euler 3x(64x64) cfg; the last run replays the first graph.
    EXPECT_EQ(emu.captures, 4);
    EXPECT_EQ(graphed.timings().unet_graph_calls, graphed.timings().unet_calls);
    EXPECT_EQ(reference.timings().unet_graph_calls, 0);
    drops_before = emu.drops;
  }
  EXPECT_EQ(emu.drops, drops_before + 1) << "the pipeline's destructor must free its graphs";
}

TEST(PipelineGraphPath, TwoPipelinesOnOneBackendUseSeparateGraphs) {
  GraphEmulator emu;
  ModelSource model = ModelSource::open("tiny");
  Txt2ImgPipeline a(model, emu), b(model, emu);
  const std::vector<WorkItem> batch = items("pndm", 7.5f, 1, 64, 64);
  a.generate(batch);
  b.generate(batch);
  EXPECT_EQ(emu.captures, 2) << "pipelines (models) must not share a graph: its weights are baked in";
}

// A1111 prompt weighting: contexts of 77 x chunks tokens are different K/V shapes, so each length is
// its own graph (GraphKey::context), and a batch mixing lengths runs as groups; same bits as the CPU.
TEST(PipelineGraphPath, WeightedPromptsOfDifferentLengthsUseTheirOwnGraphs) {
  GraphEmulator emu;
  ModelSource model = ModelSource::open("tiny");
  std::unique_ptr<Backend> cpu = make_cpu_backend(2);
  Txt2ImgPipeline graphed(model, emu), reference(model, *cpu);
  std::vector<WorkItem> batch = items("euler", 7.5f, 2, 64, 64);
  for (WorkItem& w : batch) w.params.prompt_weighting = "a1111";
  batch[1].params.prompt = "a (red:1.2) cube BREAK on a [blue] table";  // 2 chunks, item 0 has 1
  for (const auto& run : {std::vector<WorkItem>{batch[0]}, std::vector<WorkItem>{batch[1]}, batch}) {
    std::vector<ImageResult> want = reference.generate(run);
    std::vector<ImageResult> got = graphed.generate(run);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(got[i].ok) << got[i].error;
      EXPECT_TRUE(got[i].rgb == want[i].rgb) << "image " << i << " differs from the CPU path's";
    }
  }
  EXPECT_EQ(emu.captures, 2) << "one graph per context length (77 and 154 tokens), replayed by the mixed batch";
}

}  // namespace

// SDXL base → refiner (Txt2ImgPipeline::set_refiner): the first stage's latents and the items'
// generators go to the second pipeline, whose step is its own graph; same bits as the CPU path.
TEST(PipelineGraphPath, SdxlBaseThenRefinerSameBitsAsTheCpuPath) {
  auto in_memory = [](const std::string& preset) {
    InMemoryModel m = make_model_in_memory(preset, 5);
    std::map<std::string, nlohmann::json> configs{{"unet", m.configs.unet.to_json()},
                                                  {"vae", m.configs.vae.to_json()},
                                                  {"text_encoder_2", m.configs.text_encoder_2->to_json()},
                                                  {"scheduler", m.configs.scheduler},
                                                  {"model_index", m.configs.model_index}};
    std::map<std::string, std::shared_ptr<WeightSource>> weights{
        {"unet", m.unet}, {"vae", m.vae}, {"text_encoder_2", m.text_encoder_2}};
    if (m.text_encoder) {
      configs["text_encoder"] = m.configs.text_encoder.to_json();
      weights["text_encoder"] = m.text_encoder;
    }
    return ModelSource::from_memory(preset, configs, weights, {{"tokenizer_2", sdxl_tokenizer_2()}});
  };
  const ModelSource base = in_memory("tiny-sdxl"), refiner = in_memory("tiny-sdxl-refiner");
  GraphEmulator emu;
  std::unique_ptr<Backend> cpu = make_cpu_backend(2);
  Txt2ImgPipeline base_graphed(base, emu), refiner_graphed(refiner, emu);
  Txt2ImgPipeline base_reference(base, *cpu), refiner_reference(refiner, *cpu);
  base_graphed.set_refiner(&refiner_graphed);
  base_reference.set_refiner(&refiner_reference);
  std::vector<WorkItem> batch = items("euler_a", 5.0f, 2, 64, 64);
  for (WorkItem& w : batch) w.params.refiner_start = 0.5f;
  std::vector<ImageResult> want = base_reference.generate(batch);
  std::vector<ImageResult> got = base_graphed.generate(batch);
  expect_same(got, want, base_graphed.last_latents(), base_reference.last_latents());
  EXPECT_EQ(emu.captures, 2) << "one graph per stage's pipeline";
}
