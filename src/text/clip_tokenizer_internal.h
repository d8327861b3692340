// Inside the CLIP tokenizer: internal to src/text (the unit tests include it too).
//
// clip_text: the steps that the `tokenizers` library runs before BPE, written out so that each can
// be checked on its own against the reference (tests/unit/clip_tokenizer_test.cpp walks all
// 1.1 million code points): UTF-8 checks, the normalizer, the two regex splits and GPT-2's
// byte-to-character map. clip_tokenizer_text.cpp says which Unicode version each step follows.
// ClipTokenizer::Impl: the vocabulary, merges and special tokens that clip_tokenizer.cpp (BPE,
// builtin()) and clip_tokenizer_files.cpp (from_dir, write_dir) share.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/utf8.h"  // find_invalid_utf8, decode_utf8, append_utf8: core's, for the whole tokenizer

namespace sdmpi::clip_text {

// White_Space (the 25 code points that oniguruma's \s matches in the reference).
bool is_whitespace(char32_t cp);
// Rust regex's Unicode \w, used by the single_word option of added tokens.
bool is_word_char(char32_t cp);

// CLIP's normalizer: NFC, every run of whitespace → one " ", then each code point lower-cased on
// its own (full mapping: U+0130 → "i̇"). Input must be well-formed UTF-8.
std::string normalize(std::string_view valid_utf8);

// CLIP's pre-tokenizer on normalized text: the CLIP split (whitespace dropped), then the GPT-2
// split of the ByteLevel step inside each piece. Returns the pieces (views into `normalized`),
// still as UTF-8, not yet mapped to byte characters.
std::vector<std::string_view> pre_tokenize(std::string_view normalized);

// GPT-2's reversible byte → printable character map (bytes_to_unicode): code point of each byte.
const std::array<char32_t, 256>& byte_to_unicode();

}  // namespace sdmpi::clip_text

// ---- the tokenizer's data, shared by clip_tokenizer.cpp and clip_tokenizer_files.cpp ------------

namespace sdmpi {

struct ClipTokenizer::Impl {
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  // One special token as a config names it (bos_token, eos_token, …), before ids are known.
  struct Named {
    std::string key;  // "bos_token", …
    ClipAddedToken token;
  };

  std::unordered_map<std::string, int32_t> vocab;    // vocab.json
  std::unordered_map<int32_t, std::string> vocab_r;  // id → token
  std::vector<std::pair<std::string, std::string>> merges;  // merges.txt, in rank order
  std::unordered_map<uint64_t, Merge> merge_map;            // (left id, right id) → merge
  std::array<int32_t, 256> byte_id{};      // id of each byte's character, -1 if absent
  std::array<int32_t, 256> byte_eow_id{};  // the same with "</w>"
  std::vector<ClipAddedToken> added;       // one per content, in order of first definition
  std::vector<std::string> added_pattern;  // what each added token matches (normalized if flagged)
  std::string bos, eos, unk, pad;          // contents
  int32_t bos_id = -1, eos_id = -1, pad_id = -1, unk_id = -1;
  int model_max_length = 77;

  // Words seen before → their ids. Prompts repeat words; the cache makes repeated BPE free. Its
  // memory is bounded: each entry counts its word, its ids and a fixed overhead (cache_entry_bytes),
  // and when the next entry would pass cache_limit_bytes the cache is emptied first (a miss costs
  // one BPE of one word, so a refill is cheap; a long-lived process or a fuzzer feeding millions
  // of distinct words stays within the limit).
  static constexpr size_t kDefaultCacheLimitBytes = size_t{8} << 20;
  size_t cache_limit_bytes = kDefaultCacheLimitBytes;  // tests set a small one
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
  mutable size_t cache_bytes = 0;  // sum of cache_entry_bytes over `cache`
  static size_t cache_entry_bytes(size_t word_bytes, size_t num_ids) {
    constexpr size_t kNodeOverhead = 96;  // hash node, string and vector headers, allocator slack
    return kNodeOverhead + word_bytes + num_ids * sizeof(int32_t);
  }

  // Sets vocab (validating ids), then merges; `where(i)` names merge i's file and line for errors.
  void set_vocab(std::unordered_map<std::string, int32_t> tokens);
  void set_merges(std::vector<std::pair<std::string, std::string>> merge_list,
                  const std::function<std::string(size_t)>& where);
  // Resolves the named special tokens as transformers does (a later definition of the same content
  // replaces the flags of an earlier one), gives tokens outside the vocabulary new ids, and picks
  // bos/eos/unk/pad. `label` names the folder for errors.
  void set_special_tokens(const std::vector<Named>& named, const std::string& label);

  std::vector<int32_t> encode(std::string_view text) const;
  void bpe(std::string_view word, std::vector<int32_t>& ids) const;
  std::optional<int32_t> token_to_id(const std::string& token) const;
};

}  // namespace sdmpi
