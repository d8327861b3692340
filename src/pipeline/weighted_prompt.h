// A1111 prompt weighting, the encoding side (AUTOMATIC1111's sd_hijack_clip.py,
// FrozenCLIPEmbedderWithCustomWordsBase.forward with the "Original" emphasis): each prompt's chunks
// (sdmpi/prompt_weighting.h) go through the text encoder separately, as rows of one batch; each
// chunk's hidden states z [77, D] are multiplied per token by its multiplier and rescaled so the
// chunk's mean is what it was: z' = z·m, z'' = z'·(mean(z) / mean(z')), means over the whole chunk
// (float32, as torch computes them on the float32 tensor). The chunks are joined along the
// sequence: the context of a prompt is [77·k, D].
//
// A1111 takes those means over all prompts of its batch at once; here they are per prompt (A1111
// with batch size 1), so an item's context never depends on the items beside it. Prompts with fewer
// chunks than `chunks` are padded with A1111's empty chunk (the encoding of "": its empty_chunk()
// and cond_stage_model_empty_prompt, which the "pad prompt/negative prompt to the same length"
// option appends to the shorter of prompt and negative prompt).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/prompt_weighting.h"

namespace sdmpi {

// Hidden states [rows, 77, D] of `rows` rows of 77 ids (the model's forward, with its clip skip).
using ChunkEncoder = std::function<Tensor(const std::vector<int32_t>& ids, int rows)>;

// The chunks of one prompt read with A1111's syntax.
std::vector<WeightedChunk> a1111_prompt_chunks(const ClipTokenizer& tokenizer, const std::string& prompt);

// The weighted context of each prompt, padded to `chunks` chunks: [prompts, 77·chunks, D] in the
// encoder's dtype. Chunk 0 of prompt i is row i·chunks of the encoder's batch (SDXL's pooled output
// comes from there). InputError when a prompt needs more than `chunks` chunks.
Tensor a1111_weighted_context(Backend& backend, const ClipTokenizer& tokenizer, const std::vector<std::string>& prompts,
                              size_t chunks, const ChunkEncoder& encode);

// Applies the multipliers to one chunk's hidden states z (77·D floats) and restores its mean.
void apply_chunk_weights(float* z, size_t width, const std::vector<double>& multipliers);

}  // namespace sdmpi
