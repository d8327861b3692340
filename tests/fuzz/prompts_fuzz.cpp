// libFuzzer target: arbitrary bytes as a .txt and a .jsonl prompt file, then expanded into a job.
// Every input must end in prompts or an InputError: never a crash, a hang or a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string>

#include "sdmpi/error.h"
#include "sdmpi/prompts.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  for (int format = 0; format < 2; ++format) {
    try {
      auto prompts = format ? sdmpi::parse_prompts_jsonl(text, "fuzz.jsonl") : sdmpi::parse_prompts_txt(text, "fuzz.txt");
      sdmpi::expand_job(prompts, 2, 7, sdmpi::GenerationParams{});
    } catch (const sdmpi::InputError&) {
    }
  }
  return 0;
}
