// A model with LoRAs merged into its weights: one ModelSource per LoRA set.
//
// Each LoRA file is read against the model's own UNet and text encoder weights (include/sdmpi/
// lora.h), and every component a file touches is answered by a LoraMergedWeightSource over the
// model's current weights (a node's shared, read-only block included: merged layers get their own
// float32 copy, the block is never written). The pipeline built on the result sees ordinary
// weights; dropping it drops the copies, so the original model is untouched by construction.
#pragma once

#include <string>
#include <vector>

#include "sdmpi/lora.h"
#include "sdmpi/pipeline.h"

namespace sdmpi {

// `model` with `loras` merged in the order given (as diffusers fuses one adapter after another);
// `model` itself when the list is empty. Throws InputError for unreadable files, unknown keys and
// shapes that do not fit, naming the file.
ModelSource with_loras(const ModelSource& model, const std::vector<LoraSpec>& loras);

}  // namespace sdmpi
