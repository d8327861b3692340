// A1111 prompt weighting, the encoding side (src/pipeline/weighted_prompt.h). The multipliers and
// the mean restoration run on the host: a few 77 x D chunks per prompt, once per batch.
#include "pipeline/weighted_prompt.h"

#include "sdmpi/error.h"

namespace sdmpi {

std::vector<WeightedChunk> a1111_prompt_chunks(const ClipTokenizer& tokenizer, const std::string& prompt) {
  return chunk_weighted_prompt(tokenizer, parse_prompt_attention(prompt));
}

namespace {
// torch's mean of a float32 tensor, to float32 (the sum in double first: within an ulp or so).
float mean_of(const float* z, size_t n) {
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += z[i];
  return static_cast<float>(sum / static_cast<double>(n));
}
}  // namespace

void apply_chunk_weights(float* z, size_t width, const std::vector<double>& multipliers) {
  const size_t n = multipliers.size() * width;
  const float original_mean = mean_of(z, n);
  for (size_t t = 0; t < multipliers.size(); ++t) {
    const float m = static_cast<float>(multipliers[t]);  // torch.asarray of Python floats: float32
    for (size_t c = 0; c < width; ++c) z[t * width + c] *= m;
  }
  const float ratio = original_mean / mean_of(z, n);
  for (size_t i = 0; i < n; ++i) z[i] *= ratio;
}

Tensor a1111_weighted_context(Backend& backend, const ClipTokenizer& tokenizer, const std::vector<std::string>& prompts,
                              size_t chunks, const ChunkEncoder& encode) {
  SDMPI_CHECK(!prompts.empty() && chunks > 0, "a1111_weighted_context: no prompts or no chunks");
  const WeightedChunk empty = empty_weighted_chunk(tokenizer);
  std::vector<WeightedChunk> rows;
  for (const std::string& prompt : prompts) {
    std::vector<WeightedChunk> own = a1111_prompt_chunks(tokenizer, prompt);
    if (own.size() > chunks)
      throw InputError("prompt weighting: \"" + prompt + "\" needs " + std::to_string(own.size()) +
                       " chunks of 75 tokens, more than the " + std::to_string(chunks) + " planned");
    own.resize(chunks, empty);
    rows.insert(rows.end(), own.begin(), own.end());
  }
  const size_t length = empty.ids.size();
  std::vector<int32_t> ids;
  for (const WeightedChunk& c : rows) ids.insert(ids.end(), c.ids.begin(), c.ids.end());
  const Tensor hidden = encode(ids, static_cast<int>(rows.size()));  // [rows, 77, D]
  SDMPI_CHECK(hidden.rank() == 3 && hidden.dim(0) == static_cast<int64_t>(rows.size()) &&
                  hidden.dim(1) == static_cast<int64_t>(length),
              "a1111_weighted_context: the encoder returned " + shape_str(hidden.shape()));
  const size_t width = static_cast<size_t>(hidden.dim(2));
  std::vector<float> z = backend.to_host(hidden);
  for (size_t r = 0; r < rows.size(); ++r) apply_chunk_weights(z.data() + r * length * width, width, rows[r].multipliers);
  // Rows are already in order: prompt i's chunks are rows i·chunks .. (i+1)·chunks - 1, so the
  // joined context of prompt i is the same memory read as [77·chunks, D].
  const Shape shape{static_cast<int64_t>(prompts.size()), static_cast<int64_t>(chunks * length), static_cast<int64_t>(width)};
  return backend.cast(backend.from_host(z.data(), shape), hidden.dtype());
}

}  // namespace sdmpi
