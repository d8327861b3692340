// The built-in demo model (`--model demo`): a small SD 1.x pipeline trained on captioned
// synthetic shapes (tools/demo_model/), embedded in the binary at build time, so a first run draws
// pictures that match their prompts without downloading anything.
#pragma once

#include "sdmpi/pipeline.h"

namespace sdmpi {

inline constexpr const char* kDemoModelName = "demo";

// How the demo model is drawn unless the command line or a prompt says otherwise (chosen on
// held-out captions disjoint from the semantic test's: tools/demo_model/README.md, "Guidance").
// SD 1.5's defaults (50 steps, guidance 7.5) overshoot on this small model.
inline constexpr int kDemoSteps = 40;
inline constexpr float kDemoGuidance = 2.5f;
inline constexpr const char* kDemoSampler = "euler_a";

// The embedded configs and fp16 weights as a ModelSource (the tokenizer is the built-in CLIP one,
// the same vocabulary as the folder's tokenizer/).
ModelSource open_demo_model();

}  // namespace sdmpi
