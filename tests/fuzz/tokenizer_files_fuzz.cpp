// libFuzzer target for the tokenizer *files*: what ClipTokenizer::from_dir makes of a folder whose
// files come from the input (clip_tokenizer_fuzz covers the prompt side with the built-in tokenizer).
//
// The input packs the files of one tokenizer folder as text (fuzz_files.h): a line
// "@@ vocab.json" starts that file, and so on for merges.txt, tokenizer.json,
// tokenizer_config.json and special_tokens_map.json. Each iteration reads them from memory with
// ClipTokenizer::from_files, the code from_dir runs on a folder's files once it has read them,
// and writes them back with to_files, the code of write_dir; no file is touched (writing and
// reading folders is what made this target slow). Asserted: every folder gives a tokenizer or an
// InputError, never a crash, leak, hang or sanitizer report; a tokenizer that loads encodes and
// decodes prompts (or names the byte it has no token for), and survives to_files → from_files in
// both layouts unchanged (operator==). Seeds: tests/data/malformed/tokenizer_files/ (made by
// make_seeds.py there from the tokenizer/ folder corpus).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_files.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sdmpi::ClipTokenizer::Files files;
  for (auto& [name, content] : sdmpi_fuzz::unpack_files(data, size)) files[name] = std::move(content);

  sdmpi::ClipTokenizer tok;
  try {
    tok = sdmpi::ClipTokenizer::from_files(files, "fuzz");
  } catch (const sdmpi::InputError&) {
    return 0;
  }
  // A loaded tokenizer must work: prompts with its own added tokens, and ids back to text.
  // A vocabulary without some byte's character and without an unk token refuses such prompts with
  // an InputError naming the byte (clip_tokenizer.cpp), which is fine.
  for (const char* prompt : {"a photo of a cat", "<|startoftext|>ab ba<|endoftext|>", "", "AB\xc3\xa9 \xe2\x80\x83z"}) {
    try {
      const auto ids = tok.encode_padded(prompt, 8);
      if (ids.size() != 8 || ids.front() != tok.bos_id()) __builtin_trap();
      (void)tok.decode(ids);
    } catch (const sdmpi::InputError&) {
    }
  }
  // Write and read back in both layouts: what from_files accepted must survive unchanged. (A folder
  // giving two added tokens one id, which once loaded but did not survive this, is now refused;
  // seed known_two_specials_one_id.seed.)
  for (auto format : {sdmpi::ClipTokenizer::FolderFormat::VocabMerges, sdmpi::ClipTokenizer::FolderFormat::TokenizerJson})
    if (!(sdmpi::ClipTokenizer::from_files(tok.to_files(format), "fuzz round trip") == tok)) __builtin_trap();
  return 0;
}
