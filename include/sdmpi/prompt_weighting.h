// AUTOMATIC1111's prompt weighting ("attention" syntax), the text side: a prompt → weighted
// fragments → chunks of 77 token ids with one multiplier per token.
//
// Off by default (GenerationParams::prompt_weighting "none": the prompt is plain text, tokenized as
// diffusers does, and the pipeline stays exact against diffusers). With "a1111" the prompt is read as
// stable-diffusion-webui's modules/prompt_parser.py (parse_prompt_attention) reads it, and chunked
// as its modules/sd_hijack_clip.py (FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line) does;
// the pipeline then encodes each chunk separately and applies the multipliers
// (src/pipeline/weighted_prompt.h). The rules, as implemented here:
//
//   (text)        weight x 1.1            [text]        weight / 1.1 (x (1 / 1.1) in double)
//   (text:1.5)    weight x 1.5            nesting multiplies, in the order the brackets close
//   \( \) \[ \] \\   the literal character; a lone "\" vanishes
//   an unmatched ")" or "]" is text; an unclosed "(" or "[" applies to the end of the prompt
//   ":1.5)" without an open "(" is text; a weight that is not a number ("1.2.3", ".") is an InputError
//   BREAK         (upper case, a word of its own) ends the chunk; inside brackets it is text
//   adjacent fragments with equal weights are joined before tokenizing (so "(a)(b)" is "ab" x 1.1)
//
// Differences from the Python original, all in code points the regexes classify: Python's \d also
// takes non-ASCII decimal digits inside "(x:w)"; here only 0-9 do. Python's \s and \w (around
// BREAK and in ":  1.5 )") are spelt out below from str.isspace / str.isalnum.
//
// Chunks (tokenize_line): each fragment is tokenized on its own without bos/eos; tokens fill chunks
// of 75; a chunk is closed when full, at BREAK, and, when it is full and the last comma lies within
// the last `comma_backtrack` (A1111's comma_padding_backtrack, default 20) tokens, right after that
// comma, the rest moving to the next chunk. Each chunk is [bos] + tokens + eos ... , with the
// tokenizer's pad id after the first eos where it differs from eos (SD 2.x, SDXL's tokenizer_2,
// as A1111's process_tokens does), multipliers 1 on bos/eos/pad. At least one chunk.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sdmpi/clip_tokenizer.h"

namespace sdmpi {

// One piece of a parsed prompt. A BREAK is the fragment {"BREAK", -1.0} (is_break()).
struct WeightedFragment {
  std::string text;
  double weight = 1.0;
  bool is_break() const { return text == "BREAK" && weight == -1.0; }
  bool operator==(const WeightedFragment&) const = default;
};

// parse_prompt_attention: never empty ("" gives {"", 1.0}).
std::vector<WeightedFragment> parse_prompt_attention(const std::string& prompt);

// One chunk: 77 ids for the text encoder and the multiplier of each position.
struct WeightedChunk {
  std::vector<int32_t> ids;
  std::vector<double> multipliers;
};

constexpr int kA1111ChunkTokens = 75;          // content tokens per chunk
constexpr int kA1111CommaBacktrack = 20;       // A1111's default comma_padding_backtrack

std::vector<WeightedChunk> chunk_weighted_prompt(const ClipTokenizer& tokenizer,
                                                 const std::vector<WeightedFragment>& fragments,
                                                 int comma_backtrack = kA1111CommaBacktrack);

// A1111's empty_chunk(): what a shorter prompt of a batch is padded with ("" encodes the same).
WeightedChunk empty_weighted_chunk(const ClipTokenizer& tokenizer);

}  // namespace sdmpi
