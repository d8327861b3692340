// AUTOMATIC1111's attention syntax and chunking (include/sdmpi/prompt_weighting.h has the rules).
//
// The parser is a hand-written scanner for the alternatives of A1111's re_attention, tried in its
// order at each position (escapes, "(", "[", ":<weight>)", ")", "]", a run of other characters, a
// lone ":"); none of them needs backtracking, so one pass decides each token. Weights stay Python
// floats (double) through the multiplications, so "equal weights" (the merge) means what it does
// in Python: (a)[b] gives 1.1 * (1 / 1.1) = 1.0000000000000002, not 1.
#include "sdmpi/prompt_weighting.h"

#include <charconv>
#include <cstring>

#include <utf8proc.h>

#include "sdmpi/error.h"

namespace sdmpi {

namespace {

// The code point at byte i (and its length), leniently: a malformed byte counts as itself.
int32_t code_point_at(const std::string& s, size_t i, size_t* length) {
  utf8proc_int32_t cp = -1;
  const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                              static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  if (n <= 0) {
    *length = 1;
    return static_cast<unsigned char>(s[i]);
  }
  *length = static_cast<size_t>(n);
  return cp;
}

// The code point that ends just before byte i.
int32_t code_point_before(const std::string& s, size_t i) {
  size_t start = i - 1;
  while (start > 0 && i - start < 4 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t length = 0;
  const int32_t cp = code_point_at(s, start, &length);
  return start + length == i ? cp : static_cast<unsigned char>(s[i - 1]);
}

// Python's str.isspace(), which re's \s follows for str patterns.
bool is_python_space(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python re's \w for str patterns: str.isalnum() (letters and numbers) or "_".
bool is_python_word(int32_t c) {
  if (c == '_') return true;
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

size_t skip_spaces(const std::string& s, size_t i) {
  while (i < s.size()) {
    size_t n = 0;
    if (!is_python_space(code_point_at(s, i, &n))) break;
    i += n;
  }
  return i;
}

// re.split(r"\s*\bBREAK\b\s*", text): the pieces between the BREAK words.
std::vector<std::string> split_at_break(const std::string& text) {
  std::vector<std::string> parts;
  size_t piece_start = 0, search = 0;
  while (true) {
    const size_t at = text.find("BREAK", search);
    if (at == std::string::npos) break;
    const size_t end = at + 5;
    const bool boundary_before = at == 0 || !is_python_word(code_point_before(text, at));
    size_t n = 0;
    const bool boundary_after = end == text.size() || !is_python_word(code_point_at(text, end, &n));
    if (!boundary_before || !boundary_after) {
      search = at + 1;
      continue;
    }
    // The match starts at the whitespace run right before BREAK (not before the previous match).
    size_t match_start = at;
    while (match_start > piece_start) {
      size_t start = match_start - 1;
      while (start > piece_start && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
      size_t length = 0;
      if (!is_python_space(code_point_at(text, start, &length))) break;
      match_start = start;
    }
    parts.push_back(text.substr(piece_start, match_start - piece_start));
    piece_start = search = skip_spaces(text, end);
  }
  parts.push_back(text.substr(piece_start));
  return parts;
}

// ":" \s* ([+-]?[.\d]+) \s* ")" at i: the length matched and the number's text, or 0.
size_t match_weight(const std::string& s, size_t i, std::string* number) {
  size_t j = skip_spaces(s, i + 1);
  const size_t number_start = j;
  if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
  const size_t digits = j;
  while (j < s.size() && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9'))) ++j;
  if (j == digits) return 0;
  *number = s.substr(number_start, j - number_start);
  j = skip_spaces(s, j);
  if (j >= s.size() || s[j] != ')') return 0;
  return j + 1 - i;
}

// Python's float() on what the weight pattern matched.
double python_float(const std::string& number, const std::string& prompt) {
  const char* begin = number.data();
  const char* end = number.data() + number.size();
  if (begin != end && *begin == '+') ++begin;
  double value = 0;
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end)
    throw InputError("prompt weighting: \"" + number + "\" in \"" + prompt + "\" is not a number (as in \"(word:1.2)\")");
  return value;
}

bool is_plain(char c) { return c != '\\' && c != '(' && c != ')' && c != '[' && c != ']' && c != ':'; }

}  // namespace

std::vector<WeightedFragment> parse_prompt_attention(const std::string& prompt) {
  std::vector<WeightedFragment> res;
  std::vector<size_t> round, square;
  const double round_multiplier = 1.1, square_multiplier = 1 / 1.1;
  auto multiply_from = [&res](size_t start, double multiplier) {
    for (size_t p = start; p < res.size(); ++p) res[p].weight *= multiplier;
  };
  auto add_text = [&res](const std::string& text) {
    const std::vector<std::string> parts = split_at_break(text);
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i > 0) res.push_back({"BREAK", -1.0});
      res.push_back({parts[i], 1.0});
    }
  };
  size_t i = 0;
  while (i < prompt.size()) {
    const char c = prompt[i];
    if (c == '\\') {
      const char next = i + 1 < prompt.size() ? prompt[i + 1] : '\0';
      if (next && std::strchr("()[]\\", next)) {
        res.push_back({std::string(1, next), 1.0});
        i += 2;
      } else {
        res.push_back({"", 1.0});  // a lone backslash: text[1:] of "\" is ""
        i += 1;
      }
    } else if (c == '(') {
      round.push_back(res.size());
      ++i;
    } else if (c == '[') {
      square.push_back(res.size());
      ++i;
    } else if (c == ':') {
      std::string number;
      const size_t n = match_weight(prompt, i, &number);
      if (n > 0 && !round.empty()) {
        const double weight = python_float(number, prompt);
        multiply_from(round.back(), weight);
        round.pop_back();
      } else {
        add_text(n > 0 ? prompt.substr(i, n) : std::string(":"));
      }
      i += n > 0 ? n : 1;
    } else if (c == ')' && !round.empty()) {
      multiply_from(round.back(), round_multiplier);
      round.pop_back();
      ++i;
    } else if (c == ']' && !square.empty()) {
      multiply_from(square.back(), square_multiplier);
      square.pop_back();
      ++i;
    } else if (c == ')' || c == ']') {
      add_text(std::string(1, c));
      ++i;
    } else {
      size_t j = i;
      while (j < prompt.size() && is_plain(prompt[j])) ++j;
      add_text(prompt.substr(i, j - i));
      i = j;
    }
  }
  for (size_t pos : round) multiply_from(pos, round_multiplier);
  for (size_t pos : square) multiply_from(pos, square_multiplier);
  if (res.empty()) res.push_back({"", 1.0});
  for (size_t k = 0; k + 1 < res.size();) {
    if (res[k].weight == res[k + 1].weight) {
      res[k].text += res[k + 1].text;
      res.erase(res.begin() + static_cast<ptrdiff_t>(k + 1));
    } else {
      ++k;
    }
  }
  return res;
}

namespace {
WeightedChunk close_chunk(const ClipTokenizer& tokenizer, std::vector<int32_t> tokens, std::vector<double> multipliers) {
  WeightedChunk chunk;
  const int32_t eos = tokenizer.eos_id(), pad = tokenizer.pad_id();
  chunk.ids.push_back(tokenizer.bos_id());
  chunk.ids.insert(chunk.ids.end(), tokens.begin(), tokens.end());
  chunk.multipliers.push_back(1.0);
  chunk.multipliers.insert(chunk.multipliers.end(), multipliers.begin(), multipliers.end());
  while (chunk.ids.size() < static_cast<size_t>(kA1111ChunkTokens + 2)) {
    chunk.ids.push_back(eos);
    chunk.multipliers.push_back(1.0);
  }
  // process_tokens: where pad differs from eos, everything after the first eos becomes pad.
  if (pad != eos) {
    bool seen = false;
    for (int32_t& id : chunk.ids) {
      if (seen) id = pad;
      else if (id == eos) seen = true;
    }
  }
  return chunk;
}
}  // namespace

std::vector<WeightedChunk> chunk_weighted_prompt(const ClipTokenizer& tokenizer,
                                                 const std::vector<WeightedFragment>& fragments, int comma_backtrack) {
  const std::optional<int32_t> comma = tokenizer.token_to_id(",</w>");
  std::vector<WeightedChunk> chunks;
  std::vector<int32_t> tokens;
  std::vector<double> multipliers;
  int64_t last_comma = -1;
  auto next_chunk = [&] {
    chunks.push_back(close_chunk(tokenizer, std::move(tokens), std::move(multipliers)));
    tokens.clear();
    multipliers.clear();
    last_comma = -1;
  };
  const size_t full = kA1111ChunkTokens;
  for (const WeightedFragment& fragment : fragments) {
    if (fragment.is_break()) {
      next_chunk();
      continue;
    }
    for (int32_t token : tokenizer.encode(fragment.text)) {
      if (comma && token == *comma) {
        last_comma = static_cast<int64_t>(tokens.size());
      } else if (comma_backtrack != 0 && tokens.size() == full && last_comma != -1 &&
                 static_cast<int64_t>(tokens.size()) - last_comma <= comma_backtrack) {
        const size_t cut = static_cast<size_t>(last_comma + 1);
        std::vector<int32_t> moved_tokens(tokens.begin() + static_cast<ptrdiff_t>(cut), tokens.end());
        std::vector<double> moved_multipliers(multipliers.begin() + static_cast<ptrdiff_t>(cut), multipliers.end());
        tokens.resize(cut);
        multipliers.resize(cut);
        next_chunk();
        tokens = std::move(moved_tokens);
        multipliers = std::move(moved_multipliers);
      }
      if (tokens.size() == full) next_chunk();
      tokens.push_back(token);
      multipliers.push_back(fragment.weight);
    }
  }
  if (!tokens.empty() || chunks.empty()) next_chunk();
  return chunks;
}

WeightedChunk empty_weighted_chunk(const ClipTokenizer& tokenizer) { return close_chunk(tokenizer, {}, {}); }

}  // namespace sdmpi
