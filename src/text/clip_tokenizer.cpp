// The CLIP tokenizer: added tokens, BPE, framing; builtin() from the embedded merge list.
//
// Reference behaviour (what this file reproduces): transformers 5.24.0 `CLIPTokenizer`, which in
// transformers 5 is the `tokenizers`-backed class (0.23.3), without ftfy, loaded from a folder
// with vocab.json and merges.txt, and called as the SD pipelines do:
// `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`. Step by step:
//
//  1. Added tokens on the raw text: the special tokens not flagged `normalized` are cut out where
//     they occur verbatim (leftmost, then longest match; lstrip/rstrip/single_word as flagged).
//  2. Each remaining stretch is normalized on its own: NFC, every whitespace run → " ", lower-case
//     (clip_tokenizer_text.cpp). No ftfy, no HTML unescaping, no control-character removal, no
//     spaces around CJK: those belong to the slow tokenizer of transformers 4.
//  3. Added tokens flagged `normalized` are cut out of the normalized text (their content
//     normalized the same way). With the SD 1.5 configs that is <|startoftext|>, so
//     "<|StartOfText|>" becomes 49406, while <|endoftext|> is only matched verbatim.
//  4. Pre-tokenization: the CLIP regex, then ByteLevel's GPT-2 regex inside each piece.
//  5. BPE per piece, as tokenizers' Word::merge_all: the piece's bytes as byte characters, "</w>"
//     on the last one; then repeatedly the pair with the lowest merge rank (leftmost among equal
//     ranks) is merged, one occurrence at a time, through a min-heap. A character missing from the
//     vocabulary becomes the unk token (one per character, not fused).
//  6. [bos] + ids[:max_length-2] + [eos] + [pad]*…: truncation keeps the first max_length-2 ids.
//
// The per-piece BPE cache is bounded in bytes (Impl::cache_limit_bytes, then emptied) and mutex-guarded.
#include "sdmpi/clip_tokenizer.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <queue>
#include <string>
#include <string_view>

#include "sdmpi/error.h"
#include "text/clip_tokenizer_internal.h"

// The gzip'd BPE merge list, compiled in by tools/cmake/embed_file.cmake.
extern "C" const unsigned char sdmpi_clip_bpe_gz[];
extern "C" const unsigned long sdmpi_clip_bpe_gz_size;

namespace sdmpi {
namespace {

constexpr size_t kMaxCachedWordBytes = 256;
constexpr int kMaxLengthLimit = 1 << 20;  // far past any text encoder's positions
constexpr char kEndOfWord[] = "</w>";

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::string byte_char(int byte) {
  std::string s;
  append_utf8(s, clip_text::byte_to_unicode()[static_cast<size_t>(byte)]);
  return s;
}

// Where the code point that ends at byte `end` starts, and that code point; then the same for the
// code point that starts at byte `begin` (well-formed UTF-8).
size_t code_point_start_before(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}
char32_t code_point_before(std::string_view s, size_t end) {
  size_t i = code_point_start_before(s, end);
  return decode_utf8(s.substr(i, end - i)).front();
}
size_t code_point_length(std::string_view s, size_t begin) {
  size_t len = 1;
  while (begin + len < s.size() && (static_cast<unsigned char>(s[begin + len]) & 0xC0) == 0x80) ++len;
  return len;
}
char32_t code_point_at(std::string_view s, size_t begin) {
  return decode_utf8(s.substr(begin, code_point_length(s, begin))).front();
}

// Calls on_text for each stretch between matches of `tokens` in `sentence` and appends the id of
// each match to `ids`, as tokenizers' AddedVocabulary::find_matches: leftmost-longest matching,
// then the matched token's options (single_word: not next to a word character (Rust's \w),
// else skipped; lstrip/rstrip: the match grows over the whitespace beside it).
void split_on_added(std::string_view sentence, const std::vector<const ClipAddedToken*>& tokens,
                    const std::vector<const std::string*>& patterns, std::vector<int32_t>& ids,
                    const std::function<void(std::string_view)>& on_text) {
  if (tokens.empty() || sentence.empty()) {
    on_text(sentence);
    return;
  }
  size_t search = 0, text_start = 0;
  while (search < sentence.size()) {
    size_t match_start = std::string_view::npos, match_len = 0, which = 0;
    for (size_t pos = search; pos < sentence.size() && match_start == std::string_view::npos; ++pos) {
      for (size_t k = 0; k < patterns.size(); ++k) {
        const std::string& p = *patterns[k];
        if (p.size() > match_len && sentence.compare(pos, p.size(), p) == 0)
          match_start = pos, match_len = p.size(), which = k;
      }
    }
    if (match_start == std::string_view::npos) break;
    size_t start = match_start, stop = match_start + match_len;
    search = stop;  // the matcher goes on after the match, whatever the options make of it
    const ClipAddedToken& token = *tokens[which];
    if (token.single_word &&
        ((start > 0 && clip_text::is_word_char(code_point_before(sentence, start))) ||
         (stop < sentence.size() && clip_text::is_word_char(code_point_at(sentence, stop)))))
      continue;
    if (token.lstrip)  // not past the previous match, which may have taken these spaces already
      while (start > text_start && clip_text::is_whitespace(code_point_before(sentence, start)))
        start = code_point_start_before(sentence, start);
    if (token.rstrip)
      while (stop < sentence.size() && clip_text::is_whitespace(code_point_at(sentence, stop)))
        stop += code_point_length(sentence, stop);
    if (text_start < start) on_text(sentence.substr(text_start, start - text_start));
    ids.push_back(token.id);
    text_start = stop;
  }
  if (text_start != sentence.size()) on_text(sentence.substr(text_start));
}

// Inflates the embedded gzip stream up to the line we need, not the whole 3 MB.
std::string inflate_bpe_lines(size_t lines_needed) {
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error("zlib: inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(sdmpi_clip_bpe_gz);
  zs.avail_in = static_cast<uInt>(sdmpi_clip_bpe_gz_size);
  std::string out;
  size_t lines = 0, scanned = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END && lines < lines_needed) {
    size_t old = out.size();
    out.resize(old + (1 << 16));
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + old);
    zs.avail_out = 1 << 16;
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error("the embedded CLIP BPE list is corrupt (zlib error " + std::to_string(rc) + ")");
    }
    out.resize(out.size() - zs.avail_out);
    lines += static_cast<size_t>(std::count(out.begin() + static_cast<std::ptrdiff_t>(scanned), out.end(), '\n'));
    scanned = out.size();
  }
  inflateEnd(&zs);
  return out;
}

std::shared_ptr<const ClipTokenizer::Impl> build_builtin() {
  // OpenAI's list: a header line, then merges "a b" by rank. CLIP uses the first
  // 49152 - 256 - 2 = 48,894 of them (simple_tokenizer.py, and the vocab.json of every SD 1.x model).
  constexpr size_t kMerges = 49152 - 256 - 2;
  std::string text = inflate_bpe_lines(kMerges + 1);
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(kMerges);
  size_t pos = text.find('\n');
  SDMPI_CHECK(pos != std::string::npos, "embedded BPE list has no header line");
  ++pos;
  while (merges.size() < kMerges) {
    size_t end = text.find('\n', pos);
    SDMPI_CHECK(end != std::string::npos, "embedded BPE list is shorter than 48,894 merges");
    std::string_view line(text.data() + pos, end - pos);
    size_t space = line.find(' ');
    SDMPI_CHECK(space != std::string_view::npos && line.find(' ', space + 1) == std::string_view::npos,
                "embedded BPE list line " + std::to_string(merges.size() + 2) + " is not a pair");
    merges.emplace_back(std::string(line.substr(0, space)), std::string(line.substr(space + 1)));
    pos = end + 1;
  }

  // The vocabulary: byte characters in code point order (= GPT-2's bytes_to_unicode order), the
  // same with </w>, each merge's result, then the two special tokens.
  std::vector<char32_t> chars(clip_text::byte_to_unicode().begin(), clip_text::byte_to_unicode().end());
  std::sort(chars.begin(), chars.end());
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(49408);
  int32_t next = 0;
  auto add = [&](std::string token) { vocab.emplace(std::move(token), next++); };
  for (char32_t c : chars) {
    std::string s;
    append_utf8(s, c);
    add(s);
  }
  for (char32_t c : chars) {
    std::string s;
    append_utf8(s, c);
    add(s + kEndOfWord);
  }
  for (const auto& [a, b] : merges) add(a + b);
  add("<|startoftext|>");
  add("<|endoftext|>");
  SDMPI_CHECK(vocab.size() == 49408 && next == 49408, "builtin CLIP vocabulary has duplicates");

  auto impl = std::make_shared<ClipTokenizer::Impl>();
  impl->set_vocab(std::move(vocab));
  impl->set_merges(std::move(merges),
                   [](size_t i) { return "embedded bpe_simple_vocab_16e6.txt line " + std::to_string(i + 2); });
  // The SD 1.5 hub tokenizer_config.json: bos/eos/unk as AddedToken dicts with normalized=true,
  // pad_token the plain string "<|endoftext|>" (which, coming later, leaves <|endoftext|> raw).
  using Named = ClipTokenizer::Impl::Named;
  auto named = [](const char* key, const char* content, bool normalized) {
    Named n{key, {}};
    n.token.content = content;
    n.token.normalized = normalized;
    return n;
  };
  impl->set_special_tokens({named("bos_token", "<|startoftext|>", true), named("eos_token", "<|endoftext|>", true),
                            named("unk_token", "<|endoftext|>", true), named("pad_token", "<|endoftext|>", false)},
                           "builtin");
  impl->model_max_length = 77;
  return impl;
}

}  // namespace

// ---- Impl ------------------------------------------------------------------------------------------

void ClipTokenizer::Impl::set_vocab(std::unordered_map<std::string, int32_t> tokens) {
  vocab = std::move(tokens);
  vocab_r.clear();
  vocab_r.reserve(vocab.size());
  for (const auto& [token, id] : vocab) {
    auto [it, inserted] = vocab_r.emplace(id, token);
    if (!inserted && token < it->second) it->second = token;  // two tokens, one id: keep one, stably
  }
  for (int b = 0; b < 256; ++b) {
    std::string c = byte_char(b);
    auto it = vocab.find(c);
    byte_id[static_cast<size_t>(b)] = it == vocab.end() ? -1 : it->second;
    it = vocab.find(c + kEndOfWord);
    byte_eow_id[static_cast<size_t>(b)] = it == vocab.end() ? -1 : it->second;
  }
}

void ClipTokenizer::Impl::set_merges(std::vector<std::pair<std::string, std::string>> merge_list,
                                     const std::function<std::string(size_t)>& where) {
  std::vector<uint64_t> keys(merge_list.size());
  std::unordered_map<uint64_t, size_t> last;  // pair → its last position in the list
  last.reserve(merge_list.size());
  for (size_t i = 0; i < merge_list.size(); ++i) {
    const auto& [a, b] = merge_list[i];
    auto ia = vocab.find(a), ib = vocab.find(b);
    const std::string* missing = ia == vocab.end() ? &a : ib == vocab.end() ? &b : nullptr;
    if (missing)
      throw InputError(where(i) + ": merge \"" + a + " " + b + "\": \"" + *missing + "\" is not in vocab.json");
    if (!vocab.count(a + b))
      throw InputError(where(i) + ": merge \"" + a + " " + b + "\": its result \"" + a + b +
                       "\" is not in vocab.json");
    keys[i] = pair_key(ia->second, ib->second);
    last[keys[i]] = i;
  }
  // A pair listed twice keeps its later rank, as tokenizers' HashMap collect does; the earlier
  // entry is dropped, so `merges` is the effective list (what tokenizers writes back).
  merges.clear();
  merge_map.clear();
  merge_map.reserve(last.size());
  for (size_t i = 0; i < merge_list.size(); ++i) {
    if (last[keys[i]] != i) continue;
    const auto& [a, b] = merge_list[i];
    merge_map[keys[i]] = Merge{static_cast<int32_t>(merges.size()), vocab.at(a + b)};
    merges.push_back(std::move(merge_list[i]));
  }
}

std::optional<int32_t> ClipTokenizer::Impl::token_to_id(const std::string& token) const {
  for (const ClipAddedToken& t : added)
    if (t.content == token) return t.id;
  auto it = vocab.find(token);
  if (it == vocab.end()) return std::nullopt;
  return it->second;
}

void ClipTokenizer::Impl::set_special_tokens(const std::vector<Named>& named, const std::string& label) {
  added.clear();
  added_pattern.clear();
  for (const Named& n : named) {
    if (n.token.content.empty()) continue;
    auto it = std::find_if(added.begin(), added.end(),
                           [&](const ClipAddedToken& t) { return t.content == n.token.content; });
    ClipAddedToken token = n.token;
    if (it != added.end()) {
      token.id = it->id;
      *it = token;  // the later definition's flags win
      continue;
    }
    if (auto v = vocab.find(token.content); v != vocab.end()) {
      token.id = v->second;
    } else {
      // tokenizers' AddedVocabulary: after the largest id so far, or at the vocabulary's size.
      int32_t max_id = -1;
      for (const ClipAddedToken& t : added) max_id = std::max(max_id, t.id);
      auto size = static_cast<int32_t>(vocab.size());
      token.id = max_id < 0 ? size : (max_id >= size || size == 0 ? max_id + 1 : size);
    }
    added.push_back(token);
  }
  for (const ClipAddedToken& t : added)
    added_pattern.push_back(t.normalized ? clip_text::normalize(t.content) : t.content);

  auto content_of = [&](const char* key) -> std::string {
    std::string content;
    for (const Named& n : named)
      if (n.key == key) content = n.token.content;
    return content;
  };
  bos = content_of("bos_token");
  eos = content_of("eos_token");
  unk = content_of("unk_token");
  pad = content_of("pad_token");
  auto id_of = [&](const std::string& content, const char* key) {
    if (content.empty()) throw InputError(label + ": the tokenizer has no " + key);
    auto id = token_to_id(content);
    SDMPI_CHECK(id.has_value(), "special token without id");
    return *id;
  };
  bos_id = id_of(bos, "bos_token");
  eos_id = id_of(eos, "eos_token");
  pad_id = id_of(pad, "pad_token");
  // BPE's unknown token comes from the model's vocabulary only (tokenizers' BPE::merge_word).
  auto u = vocab.find(unk);
  unk_id = unk.empty() || u == vocab.end() ? -1 : u->second;
}

void ClipTokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& ids) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(std::string(word));
    if (it != cache.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }

  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours still alive, -1 at the ends
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i) {
    auto byte = static_cast<unsigned char>(word[i]);
    int32_t id = i + 1 == word.size() ? byte_eow_id[byte] : byte_id[byte];
    if (id < 0) {
      if (unk_id < 0)
        throw InputError("the tokenizer's vocabulary has neither the character of byte " +
                         std::to_string(byte) + " nor its unk token \"" + unk + "\"");
      id = unk_id;
    }
    auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, -1, true});
    if (n > 0) symbols[static_cast<size_t>(n - 1)].next = n;
  }

  // Min-heap on (rank, position): tokenizers' Word::merge_all without dropout.
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto find_merge = [&](int32_t left, int32_t right) -> const Merge* {
    auto it = merge_map.find(pair_key(left, right));
    return it == merge_map.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id))
      queue.push({m->rank, static_cast<int32_t>(i), m->new_id});

  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    // Stale entry: the pair at this position has changed since it was queued.
    const Merge* now = find_merge(left.id, right.id);
    if (!now || now->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;
    if (left.prev >= 0)
      if (const Merge* m = find_merge(symbols[static_cast<size_t>(left.prev)].id, left.id))
        queue.push({m->rank, left.prev, m->new_id});
    if (left.next >= 0)
      if (const Merge* m = find_merge(left.id, symbols[static_cast<size_t>(left.next)].id))
        queue.push({m->rank, top.pos, m->new_id});
  }

  std::vector<int32_t> result;
  for (const Symbol& s : symbols)
    if (s.alive) result.push_back(s.id);
  ids.insert(ids.end(), result.begin(), result.end());
  if (cacheable) {
    const size_t bytes = cache_entry_bytes(word.size(), result.size());
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache_bytes + bytes > cache_limit_bytes) {
      cache.clear();
      cache_bytes = 0;
    }
    if (cache.emplace(std::string(word), std::move(result)).second) cache_bytes += bytes;
  }
}

std::vector<int32_t> ClipTokenizer::Impl::encode(std::string_view text) const {
  size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos)
    throw InputError("the text to tokenize is not valid UTF-8: " + describe_invalid_utf8(text, bad));

  std::vector<const ClipAddedToken*> raw_tokens, normalized_tokens;
  std::vector<const std::string*> raw_patterns, normalized_patterns;
  for (size_t i = 0; i < added.size(); ++i) {
    if (added_pattern[i].empty()) continue;
    (added[i].normalized ? normalized_tokens : raw_tokens).push_back(&added[i]);
    (added[i].normalized ? normalized_patterns : raw_patterns).push_back(&added_pattern[i]);
  }

  std::vector<int32_t> ids;
  split_on_added(text, raw_tokens, raw_patterns, ids, [&](std::string_view raw) {
    std::string normalized = clip_text::normalize(raw);
    split_on_added(normalized, normalized_tokens, normalized_patterns, ids, [&](std::string_view piece) {
      for (std::string_view word : clip_text::pre_tokenize(piece)) bpe(word, ids);
    });
  });
  return ids;
}

// ---- ClipTokenizer -----------------------------------------------------------------------------

const ClipTokenizer::Impl& ClipTokenizer::impl() const {
  if (!impl_) throw Error("internal: an empty ClipTokenizer was used before a tokenizer was assigned to it");
  return *impl_;
}

ClipTokenizer ClipTokenizer::builtin() {
  static const std::shared_ptr<const Impl> impl = build_builtin();
  return ClipTokenizer(impl);
}

std::vector<int32_t> ClipTokenizer::encode(const std::string& utf8_text) const { return impl().encode(utf8_text); }

ClipEncoding ClipTokenizer::encode_prompt(const std::string& utf8_text, int max_length) const {
  if (max_length < 2)
    throw InputError("max_length " + std::to_string(max_length) + " leaves no room for the bos and eos tokens");
  if (max_length > kMaxLengthLimit)
    throw InputError("max_length " + std::to_string(max_length) + " is past the limit of " +
                     std::to_string(kMaxLengthLimit) + " tokens");
  std::vector<int32_t> content = impl().encode(utf8_text);
  const size_t keep = std::min(content.size(), static_cast<size_t>(max_length) - 2);
  ClipEncoding e;
  e.num_content_tokens = static_cast<int32_t>(content.size());
  e.truncated = content.size() > keep;
  e.ids.reserve(static_cast<size_t>(max_length));
  e.ids.push_back(impl().bos_id);
  e.ids.insert(e.ids.end(), content.begin(), content.begin() + static_cast<std::ptrdiff_t>(keep));
  e.ids.push_back(impl().eos_id);
  e.ids.resize(static_cast<size_t>(max_length), impl().pad_id);
  if (e.truncated)
    e.truncated_text = decode(std::vector<int32_t>(content.begin() + static_cast<std::ptrdiff_t>(keep), content.end()));
  return e;
}

std::vector<int32_t> ClipTokenizer::encode_padded(const std::string& utf8_text, int max_length) const {
  return encode_prompt(utf8_text, max_length).ids;
}

std::string ClipTokenizer::decode(const std::vector<int32_t>& ids) const {
  // Byte characters → bytes; a token with any other character keeps its UTF-8 (ByteLevel decoder).
  static const std::unordered_map<char32_t, unsigned char> char_to_byte = [] {
    std::unordered_map<char32_t, unsigned char> m;
    for (int b = 0; b < 256; ++b) m[clip_text::byte_to_unicode()[static_cast<size_t>(b)]] = static_cast<unsigned char>(b);
    return m;
  }();
  std::string bytes;
  for (int32_t id : ids) {
    auto token = id_to_token(id);
    if (!token) continue;  // tokenizers skips ids it does not know
    std::string mapped;
    bool all_bytes = true;
    for (char32_t c : decode_utf8(*token)) {
      auto it = char_to_byte.find(c);
      if (it == char_to_byte.end()) {
        all_bytes = false;
        break;
      }
      mapped.push_back(static_cast<char>(it->second));
    }
    bytes += all_bytes ? mapped : *token;
  }
  std::string text = replace_invalid_utf8(bytes);  // as Rust's String::from_utf8_lossy
  // CLIPTokenizer's decode wrapper: "</w>" → " ", then str.strip().
  std::string replaced;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 4, kEndOfWord) == 0) {
      replaced.push_back(' ');
      i += 4;
    } else {
      replaced.push_back(text[i++]);
    }
  }
  std::vector<char32_t> cps = decode_utf8(replaced);
  size_t first = 0, last = cps.size();
  while (first < last && is_python_space(cps[first])) ++first;
  while (last > first && is_python_space(cps[last - 1])) --last;
  std::string out;
  for (size_t i = first; i < last; ++i) append_utf8(out, cps[i]);
  return out;
}

int32_t ClipTokenizer::bos_id() const { return impl().bos_id; }
int32_t ClipTokenizer::eos_id() const { return impl().eos_id; }
int32_t ClipTokenizer::pad_id() const { return impl().pad_id; }
int32_t ClipTokenizer::unk_id() const { return impl().unk_id; }
int ClipTokenizer::model_max_length() const { return impl().model_max_length; }
size_t ClipTokenizer::vocab_size() const { return impl().vocab.size(); }
size_t ClipTokenizer::num_merges() const { return impl().merges.size(); }
const std::vector<ClipAddedToken>& ClipTokenizer::added_tokens() const { return impl().added; }

std::optional<int32_t> ClipTokenizer::token_to_id(const std::string& token) const { return impl().token_to_id(token); }

std::optional<std::string> ClipTokenizer::id_to_token(int32_t id) const {
  for (const ClipAddedToken& t : impl().added)
    if (t.id == id) return t.content;
  auto it = impl().vocab_r.find(id);
  if (it == impl().vocab_r.end()) return std::nullopt;
  return it->second;
}

bool ClipTokenizer::operator==(const ClipTokenizer& other) const {
  if (empty() || other.empty()) return empty() && other.empty();
  const Impl& a = impl();
  const Impl& b = other.impl();
  if (&a == &b) return true;
  auto sorted = [](std::vector<ClipAddedToken> v) {
    std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    return v;
  };
  return a.vocab == b.vocab && a.merges == b.merges && sorted(a.added) == sorted(b.added) && a.bos == b.bos &&
         a.eos == b.eos && a.unk == b.unk && a.pad == b.pad && a.model_max_length == b.model_max_length;
}

}  // namespace sdmpi
