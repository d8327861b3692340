// libFuzzer target: arbitrary bytes as a prompt for the SD 1.x CLIP tokenizer, and as token ids to
// decode. Every input must give ids or an InputError (ill-formed UTF-8): never a crash, a hang or
// a sanitizer report. Seeds: tests/data/malformed/clip_tokenizer/ (made by make_seeds.py there).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const sdmpi::ClipTokenizer tokenizer = sdmpi::ClipTokenizer::builtin();
  std::string text(reinterpret_cast<const char*>(data), size);
  // The first byte also picks a length, so short ones (truncation at every point) get exercised.
  const int max_length = size ? 2 + data[0] % 90 : 77;
  try {
    sdmpi::ClipEncoding e = tokenizer.encode_prompt(text, max_length);
    if (e.ids.size() != static_cast<size_t>(max_length) || e.ids.front() != tokenizer.bos_id()) __builtin_trap();
    tokenizer.decode(e.ids);
  } catch (const sdmpi::InputError&) {
  }
  // The same bytes as ids, in and out of range: decode skips unknown ids and repairs broken UTF-8.
  std::vector<int32_t> ids(size / 4);
  if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
  for (int32_t& id : ids) id = static_cast<int32_t>(static_cast<uint32_t>(id) % 50000u);
  tokenizer.decode(ids);
  return 0;
}
