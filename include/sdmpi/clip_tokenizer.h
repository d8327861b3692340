// The CLIP tokenizer of Stable Diffusion: a prompt → the 77 token ids the text encoder reads.
//
// It gives exactly the ids of the reference pipeline's tokenizer: transformers 5.24
// `CLIPTokenizer.from_pretrained(model/tokenizer)` (served by the `tokenizers` library, no ftfy),
// called as `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`:
//
//   raw text ─ added tokens (<|startoftext|>, <|endoftext|>) cut out
//            ─ NFC, whitespace runs → " ", lower-case
//            ─ regex split into words, each word's UTF-8 bytes → printable characters
//            ─ byte-pair merges by rank, last symbol with "</w>" ─ vocabulary ids
//            ─ [bos] + ids[:75] + [eos] + pad … to 77
//
// builtin() is the SD 1.x tokenizer (openai/clip-vit-large-patch14) built from the BPE merge list
// compiled into the library; from_dir() reads a model folder's tokenizer/ in either layout: the hub's
// vocab.json + merges.txt, or the tokenizer.json that transformers 5 save_pretrained writes (plus,
// when present, tokenizer_config.json and special_tokens_map.json). Details and the Unicode
// versions of each step: src/text/clip_tokenizer.cpp, clip_tokenizer_text.cpp and
// clip_tokenizer_files.cpp (folders).
//
// A ClipTokenizer is immutable once made; copies share their data (cheap to copy). All methods
// are const and thread-safe (the per-word BPE cache is guarded by a mutex).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sdmpi {

// A string matched as a whole before BPE ("added token" in the tokenizers library): CLIP's
// <|startoftext|> and <|endoftext|>, and any token a config adds.
struct ClipAddedToken {
  std::string content;
  int32_t id = -1;
  bool normalized = false;   // matched in the normalized (NFC, lower-cased) text, else in the raw text
  bool lstrip = false;       // the match swallows the whitespace on its left
  bool rstrip = false;       // ... and on its right
  bool single_word = false;  // matches only where it is not part of a longer word
  bool special = true;
  bool operator==(const ClipAddedToken&) const = default;
};

// What the pipeline needs of one prompt.
struct ClipEncoding {
  std::vector<int32_t> ids;        // max_length ids: bos, content tokens, eos, pad …
  int32_t num_content_tokens = 0;  // content tokens before truncation (without bos/eos)
  bool truncated = false;          // num_content_tokens > max_length - 2
  // The dropped tokens decoded back to text, as diffusers logs it ("The following part of your
  // input was truncated because CLIP can only handle sequences up to 77 tokens: …").
  std::string truncated_text;
};

class ClipTokenizer {
 public:
  // An empty tokenizer, to be assigned later (a member filled in once the model is known): every
  // method but empty() throws Error until then.
  ClipTokenizer() = default;
  bool empty() const { return impl_ == nullptr; }

  // The SD 1.x tokenizer: 256 byte characters, the same with "</w>", the first 48,894 merges of
  // OpenAI's bpe_simple_vocab_16e6.txt.gz (embedded in the library), then <|startoftext|> = 49406
  // and <|endoftext|> = 49407 (= eos = unk = pad). Special-token flags as the SD 1.5 hub folder
  // gives them under transformers 5.24: <|startoftext|> is matched in the normalized text (so
  // "<|STARTOFTEXT|>" is one token too), <|endoftext|> only verbatim. model_max_length 77.
  // Built once per process (about 50 ms of CPU); later calls share it.
  static ClipTokenizer builtin();

  // Reads `tokenizer_dir`: its tokenizer.json when there is one (as transformers 5.24 does, which
  // then ignores vocab.json and merges.txt), else vocab.json and merges.txt; plus
  // tokenizer_config.json and special_tokens_map.json when present (special tokens and their
  // flags, model_max_length). Any defect (missing file, bad JSON, a merge without exactly two
  // parts, a merge whose parts or result are not in the vocabulary, a special token that is not a
  // string …) throws InputError naming the file and the line, key or JSON path. So does a
  // tokenizer.json whose normalizer, pre-tokenizer, model options, post-processor or decoder
  // describe anything but CLIP's pipeline: refused rather than tokenized differently.
  static ClipTokenizer from_dir(const std::string& tokenizer_dir);

  // A tokenizer folder's files held in memory, by file name ("vocab.json", "merges.txt",
  // "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"; others are ignored).
  using Files = std::map<std::string, std::string>;
  // What from_dir does once it has read the files (from_dir is this on the folder's files):
  // `tokenizer_dir` names the folder in messages, each file as tokenizer_dir/NAME.
  static ClipTokenizer from_files(const Files& files, const std::string& tokenizer_dir);

  // The two folder layouts write_dir can produce.
  enum class FolderFormat {
    VocabMerges,    // vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (the SD 1.5 hub's)
    TokenizerJson,  // tokenizer.json, tokenizer_config.json (transformers 5.24 save_pretrained's; for the
                    // builtin tokenizer, tokenizer.json is byte for byte the file transformers writes)
  };

  // Writes the folder `dir` (created if missing) in the VocabMerges layout, so that from_dir(dir) and
  // transformers' CLIPTokenizer.from_pretrained(dir) both give this tokenizer's ids. Throws Error on
  // I/O failure.
  void write_dir(const std::string& dir) const;
  // The same in either layout. A file of the other layout that readers would prefer or merge in
  // (tokenizer.json for VocabMerges, special_tokens_map.json for TokenizerJson) is removed.
  void write_dir(const std::string& dir, FolderFormat format) const;
  // The files write_dir writes, in memory: from_files(to_files(f), ...) == *this for either layout.
  Files to_files(FolderFormat format) const;

  // BPE ids of the text, without bos/eos. Throws InputError when the text is not well-formed UTF-8
  // (naming the byte offset); NUL and other control characters are ordinary characters.
  std::vector<int32_t> encode(const std::string& utf8_text) const;
  // [bos] + encode(text)[:max_length-2] + [eos], padded with pad_id() to max_length (2 .. 2^20,
  // else InputError).
  std::vector<int32_t> encode_padded(const std::string& utf8_text, int max_length = 77) const;
  // The same ids plus whether, and what, truncation dropped.
  ClipEncoding encode_prompt(const std::string& utf8_text, int max_length = 77) const;

  // Ids → text as transformers' decode (skip_special_tokens=False): byte characters back to bytes
  // (ill-formed UTF-8 → U+FFFD), "</w>" → " ", surrounding whitespace stripped.
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;  // -1 when the unk token is not in the vocabulary
  int model_max_length() const;

  size_t vocab_size() const;  // entries of vocab.json (49,408 for SD 1.x)
  size_t num_merges() const;  // 48,894 for SD 1.x (a pair listed twice counts once, at its later rank)
  std::optional<int32_t> token_to_id(const std::string& token) const;  // vocab.json or added token
  std::optional<std::string> id_to_token(int32_t id) const;
  const std::vector<ClipAddedToken>& added_tokens() const;

  // Same vocabulary, merges, special tokens (with flags) and model_max_length.
  bool operator==(const ClipTokenizer& other) const;

  struct Impl;

 private:
  explicit ClipTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  const Impl& impl() const;  // throws Error when empty()
  std::shared_ptr<const Impl> impl_;
};

}  // namespace sdmpi
