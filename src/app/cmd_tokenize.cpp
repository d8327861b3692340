// sd_mpi tokenize --model PATH --prompt TEXT: the CLIP token ids the model would see, as JSON.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/log.h"
#include "sdmpi/prompts.h"

namespace sdmpi::app {

int cmd_tokenize(int argc, char** argv) {
  CLI::App cli{"Prints the CLIP token ids of a prompt (bos, tokens, eos, padding) as a JSON array,\n"
               "exactly as the text encoder receives them.",
               "sd_mpi tokenize"};
  std::string model, prompt;
  int max_length = 77;
  cli.add_option("--model", model, "model folder, .safetensors checkpoint, or 'tiny' (built in)")->required();
  cli.add_option("--prompt", prompt, "the text")->required();
  cli.add_option("--max-length", max_length, "sequence length (77 for SD 1.x)")->check(CLI::Range(2, 4096));
  int rc = 0;
  if (!parse_cli(cli, argc, argv, &rc)) return rc;
  size_t bad = 0;
  if (!valid_utf8(prompt, &bad)) throw InputError("--prompt: invalid UTF-8 at byte " + std::to_string(bad + 1));
  ClipTokenizer tok = load_tokenizer(model);
  ClipEncoding enc = tok.encode_prompt(prompt, max_length);
  if (enc.truncated)
    log::warn("the prompt has " + std::to_string(enc.num_content_tokens) + " tokens; only the first " +
              std::to_string(max_length - 2) + " are used. Dropped: \"" + enc.truncated_text + "\"");
  std::printf("%s\n", nlohmann::json(enc.ids).dump().c_str());
  return 0;
}

}  // namespace sdmpi::app
