// Inside the CLIP tokenizer's folder code: what clip_tokenizer_files.cpp (from_dir, write_dir, the
// vocab.json/merges.txt/config files) and clip_tokenizer_json.cpp (tokenizer.json) share.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sdmpi/clip_tokenizer.h"
#include "text/clip_tokenizer_internal.h"

namespace sdmpi::clip_files {

// ---- helpers of clip_tokenizer_files.cpp ----------------------------------------------------------

// The whole file; InputError naming it when it cannot be read.
std::string read_file(const std::filesystem::path& path);
// Parses `text` (the contents of `path`); InputError "PATH: malformed JSON: parse error at line …".
nlohmann::json parse_json_text(const std::filesystem::path& path, const std::string& text);
// An AddedToken written as a JSON object ({"content": …, "lstrip": …, …}). `special_forced` is set
// for special_tokens_map.json, where transformers passes special=True; elsewhere `special` defaults
// to false. `normalized` defaults to !special (tokenizers' AddedToken). `where` prefixes errors.
ClipAddedToken added_token_from_object(const nlohmann::json& o, bool special_forced, const std::string& where);
// Writes `content` to `path` through a temporary file, so a failed write leaves no complete-looking file.
void write_file(const std::filesystem::path& path, const std::string& content);

// ---- tokenizer.json (clip_tokenizer_json.cpp) -------------------------------------------------------

// What from_dir takes from a tokenizer.json: the BPE model's vocabulary and merges (checked against
// each other), the added tokens with their flags and ids as declared, and what can only be checked
// once the special tokens are known.
struct TokenizerJsonFile {
  struct Added {
    ClipAddedToken token;  // token.id = the declared id
    size_t index = 0;      // position in "added_tokens", for messages
  };
  std::string path;  // for messages
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<Added> added;                                 // in file order
  nlohmann::json post_processor;                            // checked by check_against
  std::optional<std::string> model_unk_token;               // model.unk_token when a string
};

// Reads and checks `path` (a tokenizer.json): its structure and types, the BPE model (vocabulary,
// merges, options) and the normalizer, pre-tokenizer and decoder, which must be CLIP's. Throws
// InputError naming the file and the JSON path at fault.
TokenizerJsonFile read_tokenizer_json(const std::filesystem::path& path);
// The same on the file's contents, already read (`path` names it in messages).
TokenizerJsonFile read_tokenizer_json(const std::filesystem::path& path, const std::string& text);

// Once the special tokens are resolved into `impl`: the post-processor must frame with impl's
// bos/eos, model.unk_token must be impl's unk, and (when `added_tokens_used`, i.e. transformers took
// the added tokens from this file) each added token's declared id must be the id it gets.
void check_against(const TokenizerJsonFile& file, const ClipTokenizer::Impl& impl, bool added_tokens_used);

// The tokenizer.json of `impl`, formatted as tokenizers 0.23.3 writes it (2-space indent, no final
// newline, vocab by id, merges as pairs).
std::string tokenizer_json_text(const ClipTokenizer::Impl& impl);

}  // namespace sdmpi::clip_files
