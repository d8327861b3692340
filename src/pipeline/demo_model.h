// The built-in demo model (`--model demo`): a small SD 1.x pipeline trained on captioned
// synthetic shapes (tools/demo_model/), embedded in the binary at build time, so a first run draws
// pictures that match their prompts without downloading anything.
#pragma once

#include <string>

#include "sdmpi/pipeline.h"

namespace sdmpi {

inline constexpr const char* kDemoModelName = "demo";

// SD 1.5's usual sampling settings, every model's defaults but the demo's.
inline constexpr int kDefaultSteps = 50;
inline constexpr float kDefaultGuidance = 7.5f;
// How the demo model is drawn unless the command line or a prompt says otherwise (chosen on
// held-out captions disjoint from the semantic test's: tools/demo_model/README.md, "Its
// defaults"). SD 1.5's overshoot on this small model.
inline constexpr int kDemoSteps = 40;
inline constexpr float kDemoGuidance = 2.5f;
inline constexpr const char* kDemoSampler = "euler_a";

// A model's sampling defaults: the demo's own above, else SD's (sampler empty: the one its
// scheduler config names). The one place that tells the demo model apart.
struct SamplingDefaults {
  int steps;
  float guidance;
  std::string sampler;
};
inline SamplingDefaults sampling_defaults(const ModelSource& model) {
  if (model.builtin() && model.spec() == kDemoModelName) return {kDemoSteps, kDemoGuidance, kDemoSampler};
  return {kDefaultSteps, kDefaultGuidance, ""};
}

// The embedded configs and fp16 weights as a ModelSource (the tokenizer is the built-in CLIP one,
// the same vocabulary as the folder's tokenizer/).
ModelSource open_demo_model();

}  // namespace sdmpi
