// Helpers shared by the golden tests of the models and pipelines: weights from a golden
// safetensors file, relative error (also between our NHWC latents and diffusers' NCHW ones), uint8
// images against diffusers', and the message of an expected InputError.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/error.h"
#include "sdmpi/job.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/weights.h"

namespace sdmpi::testing_util {

// Every tensor of a safetensors file, bytes as stored (F16 stays F16), minus `drop`.
inline std::shared_ptr<MemoryWeightSource> file_source(const std::string& path, const std::set<std::string>& drop = {}) {
  auto file = SafetensorsFile::open(path);
  auto source = std::make_shared<MemoryWeightSource>(path);
  for (const auto& [name, entry] : file->entries()) {
    if (drop.count(name)) continue;
    WeightView v = file->view(name);
    const auto* p = static_cast<const uint8_t*>(v.data);
    source->add(name, v.dtype, v.shape, std::vector<uint8_t>(p, p + shape_numel(v.shape) * dtype_size(v.dtype)));
  }
  return source;
}

// ‖ours − ref‖ / ‖ref‖ in double.
inline double rel_error(const std::vector<float>& ours, const std::vector<float>& ref) {
  EXPECT_EQ(ours.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(ours.size(), ref.size()); ++i) {
    num += (double(ours[i]) - ref[i]) * (double(ours[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

// A golden JSON document, or null when the file is absent (the test then says which).
inline nlohmann::json load_json_or_null(const std::string& path) {
  std::ifstream f(path);
  if (!f) return {};
  return nlohmann::json::parse(f);
}

// Weights from a golden recipe: each tensor is randn(seed) * scale (+ offset) in float32, like the
// torch expression that made it (tools/golden/make_pipeline_golden.py, make_sd2_golden.py).
inline std::shared_ptr<MemoryWeightSource> rebuild(const nlohmann::json& recipe, const std::string& what) {
  auto src = std::make_shared<MemoryWeightSource>("golden " + what);
  for (const auto& p : recipe) {
    Shape shape = p["shape"].get<Shape>();
    TorchGenerator g(p["seed"].get<uint64_t>());
    std::vector<float> v = g.randn(static_cast<size_t>(shape_numel(shape)));
    float scale = static_cast<float>(p["scale"].get<double>()), offset = static_cast<float>(p["offset"].get<double>());
    for (float& x : v) {
      x = x * scale;
      if (offset != 0.0f) x = x + offset;
    }
    src->add_f32(p["name"].get<std::string>(), shape, v);
  }
  return src;
}

// A golden pipeline's weight recipes ("weights", or those of the pipeline its "weights_of" names).
inline const nlohmann::json& weight_recipes(const nlohmann::json& doc, const std::string& name) {
  const auto& p = doc["pipelines"][name];
  return p.contains("weights_of") ? doc["pipelines"][p["weights_of"].get<std::string>()]["weights"] : p["weights"];
}

// A golden pipeline (doc["pipelines"][name]) as an in-memory model: its configs, and every
// component its weight recipes list, rebuilt; `tokenizers` as ModelSource::from_memory takes them.
inline ModelSource golden_model(const nlohmann::json& doc, const std::string& name,
                                std::map<std::string, ClipTokenizer> tokenizers = {}) {
  std::map<std::string, nlohmann::json> configs;
  for (auto& [k, v] : doc["pipelines"][name]["configs"].items()) configs[k] = v;
  std::map<std::string, std::shared_ptr<WeightSource>> weights;
  for (auto& [component, recipe] : weight_recipes(doc, name).items())
    weights[component] = rebuild(recipe, name + " " + component);
  return ModelSource::from_memory(name, configs, weights, std::move(tokenizers));
}

// SDXL's tokenizer_2: the CLIP vocabulary padded with "!" (its special_tokens_map.json), written as
// a tokenizer folder under the build tree (`folder`: one per test program, so parallel tests do not
// share it) and read back, the way a model folder's tokenizer_2/ is read.
inline ClipTokenizer bang_padded_tokenizer(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SDMPI_BINARY_DIR) / folder;
  fs::remove_all(dir);
  ClipTokenizer::builtin().write_dir(dir.string());
  for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"}) {
    const fs::path file = dir / name;
    std::ifstream in(file);
    if (!in) continue;
    nlohmann::json j = nlohmann::json::parse(in);
    in.close();
    if (j.contains("pad_token")) j["pad_token"] = "!";
    std::ofstream(file) << j.dump(1);
  }
  return ClipTokenizer::from_dir(dir.string());
}

// A golden run's items (a row of a "runs" list): prompts, negative prompts (when the run has them),
// seeds, steps, guidance, size and sampler; every other parameter at its default.
inline std::vector<WorkItem> golden_run_items(const nlohmann::json& run) {
  std::vector<WorkItem> items;
  for (size_t i = 0; i < run["prompts"].size(); ++i) {
    WorkItem it;
    it.index = static_cast<int64_t>(i);
    it.params.prompt = run["prompts"][i];
    if (run.contains("negative_prompts") && !run["negative_prompts"].is_null())
      it.params.negative_prompt = run["negative_prompts"][i];
    it.params.seed = run["seeds"][i].get<uint64_t>();
    it.params.steps = run["steps"];
    it.params.guidance = run["guidance"].get<float>();
    it.params.width = run["width"];
    it.params.height = run["height"];
    it.params.sampler = run["sampler"];
    items.push_back(it);
  }
  return items;
}

// |ours - ref| / |ref| between our latents [N, h, w, C] (NHWC) and diffusers' [N, C, h, w].
inline double nhwc_vs_nchw_rel_error(const std::vector<float>& ours, const std::vector<float>& ref, const Shape& nchw) {
  double num = 0, den = 0;
  for (int64_t n = 0; n < nchw[0]; ++n)
    for (int64_t c = 0; c < nchw[1]; ++c)
      for (int64_t y = 0; y < nchw[2]; ++y)
        for (int64_t x = 0; x < nchw[3]; ++x) {
          double r = ref[static_cast<size_t>(((n * nchw[1] + c) * nchw[2] + y) * nchw[3] + x)];
          double o = ours[static_cast<size_t>(((n * nchw[2] + y) * nchw[3] + x) * nchw[1] + c)];
          num += (o - r) * (o - r);
          den += r * r;
        }
  return std::sqrt(num / den);
}

// Our images against diffusers' uint8 images [N, H, W, 3] stored from byte `offset` of `ref`.
struct PixelComparison {
  int worst = 0;            // largest |ours - ref| over every value
  size_t off_by_one = 0;    // values that differ by exactly one level
  size_t values = 0;
};
inline PixelComparison compare_images(const std::vector<ImageResult>& got, const std::vector<uint8_t>& ref,
                                      size_t offset, const std::vector<size_t>& nhwc, const std::string& id) {
  PixelComparison c;
  const size_t per = nhwc[1] * nhwc[2] * nhwc[3];
  EXPECT_EQ(got.size(), nhwc[0]) << id;
  for (size_t i = 0; i < std::min(got.size(), nhwc[0]); ++i) {
    EXPECT_TRUE(got[i].ok) << id << ": " << got[i].error;
    EXPECT_EQ(got[i].rgb.size(), per) << id;
    if (!got[i].ok || got[i].rgb.size() != per) {
      c.worst = 255;
      continue;
    }
    for (size_t k = 0; k < per; ++k) {
      int d = std::abs(int(got[i].rgb[k]) - int(ref[offset + i * per + k]));
      c.worst = std::max(c.worst, d);
      c.off_by_one += d == 1;
    }
  }
  c.values = per * nhwc[0];
  return c;
}

// One golden run (a row of a pipelines.json "runs" list): the batch's images against diffusers'
// uint8 images (every value within 1 level) and its final latents against diffusers' (relative
// error under 1e-3), then each item generated alone must give its batch's bytes (an item's image
// does not depend on its batch). Prints one line per run; returns what it measured.
struct GoldenRun {
  PixelComparison pixels;
  double latents_rel = 0;
};
inline GoldenRun check_golden_run(Txt2ImgPipeline& pipe, const std::vector<WorkItem>& items, const nlohmann::json& run,
                                  const std::vector<uint8_t>& ref_images, const SafetensorsFile& ref_latents) {
  const std::string id = run["id"];
  const std::vector<ImageResult> got = pipe.generate(items);
  GoldenRun r;
  r.latents_rel = nhwc_vs_nchw_rel_error(pipe.last_latents(), ref_latents.to_f32(id), ref_latents.entries().at(id).shape);
  r.pixels = compare_images(got, ref_images, run["images_offset"].get<size_t>(),
                            run["images_shape"].get<std::vector<size_t>>(), id);
  EXPECT_LE(r.pixels.worst, 1) << id << ": max pixel difference " << r.pixels.worst << " (latents rel "
                               << r.latents_rel << ")";
  EXPECT_LT(r.latents_rel, 1e-3) << id;
  std::printf("%-24s guidance %4.1f: latents rel %.2e, max |Δpixel| %d, %zu of %zu values off by one\n", id.c_str(),
              run["guidance"].get<double>(), r.latents_rel, r.pixels.worst, r.pixels.off_by_one, r.pixels.values);
  for (size_t i = 0; i < items.size(); ++i)
    EXPECT_EQ(pipe.generate({items[i]})[0].rgb, got[i].rgb) << id << ": item " << i << " differs when generated alone";
  return r;
}

// Diffusers' images of a golden folder (images.u8: every run's uint8 images, back to back).
inline std::vector<uint8_t> read_golden_images(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "missing " << path;
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The message of the InputError f throws ("no exception" / "not an InputError: ..." otherwise).
inline std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("not an InputError: ") + e.what();
  }
  return "no exception";
}

}  // namespace sdmpi::testing_util
