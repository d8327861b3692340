// libFuzzer target for the safetensors reader: any bytes → a clean InputError or a usable file.
//
// The input is parsed from memory (SafetensorsFile::from_bytes runs the same checks as open()),
// then used as a loader would: every tensor viewed and converted, every unsupported one asked
// for. Anything but InputError escaping, and any sanitizer report, is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sdmpi/error.h"
#include "sdmpi/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = sdmpi::SafetensorsFile::from_bytes("fuzz.safetensors", std::vector<uint8_t>(data, data + size));
    for (const auto& kv : f->entries()) {
      // Bound the work: a valid header may describe a big (but present) tensor.
      if (kv.second.end - kv.second.begin <= (1u << 20)) (void)f->to_f32(kv.first);
      (void)f->view(kv.first);
    }
    for (const auto& kv : f->unsupported()) {
      try {
        (void)f->view(kv.first);
      } catch (const sdmpi::InputError&) {
      }
    }
  } catch (const sdmpi::InputError&) {
  }
  return 0;
}
