// The built-in demo model (`--model demo`): a small SD 1.x pipeline trained on captioned
// synthetic shapes (tools/demo_model/), embedded in the binary at build time, so a first run draws
// pictures that match their prompts without downloading anything.
#pragma once

#include "sdmpi/pipeline.h"

namespace sdmpi {

inline constexpr const char* kDemoModelName = "demo";

// The embedded configs and fp16 weights as a ModelSource (the tokenizer is the built-in CLIP one,
// the same vocabulary as the folder's tokenizer/).
ModelSource open_demo_model();

}  // namespace sdmpi
