// The text side of the CLIP tokenizer: normalizer, pre-tokenizer, byte map (UTF-8 itself: sdmpi/utf8.h).
//
// The reference is transformers 5.24's CLIPTokenizer, which is backed by the `tokenizers` library
// 0.23.3 (tokenizers/src/normalizers, pre_tokenizers). Each step below does what that library does,
// and each was compared with it code point by code point (tools/golden/make_tokenizer_golden.py
// writes the probe, tests/unit/clip_tokenizer_test.cpp checks it):
//
//   normalizer    NFC → Replace(\s+ → " ") → Lowercase
//   pre-tokenizer Split(CLIP regex, matches kept, the rest dropped) → ByteLevel(GPT-2 regex split,
//                 then bytes → printable characters)
//
// The library's Unicode data is not one version, so neither is ours:
//   - NFC comes from the crate unicode-normalization-alignments, which carries Unicode 9.0 tables.
//     utf8proc has Unicode 15. Characters added since 9.0 are unassigned to the reference: no
//     decomposition, no composition, combining class 0. kNewerThanUnicode9 lists those of them that
//     utf8proc would treat differently (non-zero combining class or a composition); we cut the
//     text at them and leave them as they are. Older characters normalize alike in both (Unicode's
//     normalization stability policy), which the exhaustive test confirms.
//   - Lowercase is Rust's char::to_lowercase (Unicode 17, full mapping, no context, no locale:
//     Σ is always σ, never final ς). utf8proc_tolower is the simple mapping of Unicode 15; the
//     two differ on U+0130 (İ → "i̇", two code points, so "İstanbul" gives the pieces "i", "̇",
//     "stanbul") and on the Unicode 16 and 17 additions in kLowercaseExtra/kLowercaseBlocks.
//   - The regexes run on oniguruma (Unicode 16 property tables). PCRE2 10.42 has Unicode 14 tables:
//     the letters and numbers added in 15.0 and 16.0 are appended to \p{L} and \p{N} below
//     (kExtraLetters, kExtraNumbers). Whitespace is spelt out: PCRE2's \s also takes U+180E, which
//     oniguruma's does not. Without ignore-case: the text is lower-cased before the split.
//   - Invalid UTF-8 cannot reach the reference (Python strings are code points); here it is an
//     InputError raised by the tokenizer (core's find_invalid_utf8 names the byte).
// These tables fit utf8proc 2.8 and PCRE2 10.42 (Debian 12). With other versions of either, the
// exhaustive test (ClipTokenizerUnicode) names each code point that then differs.
#include "text/clip_tokenizer_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>

#include "sdmpi/error.h"

namespace sdmpi::clip_text {
namespace {

struct Range {
  char32_t first, last;
};

bool in_ranges(const Range* ranges, size_t n, char32_t cp) {
  const Range* end = ranges + n;
  const Range* it = std::upper_bound(ranges, end, cp, [](char32_t c, const Range& r) { return c < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

// Characters added after Unicode 9.0 that utf8proc (Unicode 15) would reorder or compose: all have
// a non-zero canonical combining class there, except U+11935, the first half of the one new
// canonical composition (Dives Akuru, 13.0: U+11935 U+11930 → U+11938). Found by probing the
// reference with every mark and every canonical decomposition; see the header comment.
constexpr Range kNewerThanUnicode9[] = {
    {0x07FD, 0x07FD},   {0x0898, 0x089F},   {0x08CA, 0x08D3},   {0x09FE, 0x09FE},
    {0x0C3C, 0x0C3C},   {0x0D3B, 0x0D3C},   {0x0EBA, 0x0EBA},   {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0xA82C, 0xA82C},   {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x11935, 0x11935}, {0x1193D, 0x1193E}, {0x11943, 0x11943},
    {0x119E0, 0x119E0}, {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99},
    {0x11D42, 0x11D42}, {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42},
    {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};

// Lower-case mappings that Rust (Unicode 17, full mapping) has and utf8proc_tolower lacks.
struct Lower {
  char32_t upper;
  char32_t lower[2];  // 0 = unused
};
constexpr Lower kLowercaseExtra[] = {
    {0x0130, {0x0069, 0x0307}},  // İ: SpecialCasing's unconditional full mapping
    {0x1C89, {0x1C8A, 0}},       // Unicode 16: Cyrillic TJE
    {0xA7CB, {0x0264, 0}},       // Unicode 16: Latin ram's horn
    {0xA7CC, {0xA7CD, 0}},       // Unicode 16: Latin S with diagonal stroke
    {0xA7DA, {0xA7DB, 0}},       // Unicode 16: Latin lambda
    {0xA7DC, {0x019B, 0}},       // Unicode 16: Latin lambda with stroke
    {0xA7CE, {0xA7CF, 0}},       // Unicode 17: Latin pharyngeal voiced fricative
    {0xA7D2, {0xA7D3, 0}},       // Unicode 17: Latin double thorn
    {0xA7D4, {0xA7D5, 0}},       // Unicode 17: Latin double wynn
};
// Whole alphabets with a fixed distance between capital and small letters.
struct LowerBlock {
  char32_t first, last, offset;
};
constexpr LowerBlock kLowercaseBlocks[] = {
    {0x10D50, 0x10D65, 0x10D70 - 0x10D50},  // Unicode 16: Garay
    {0x16EA0, 0x16EB8, 0x16EBB - 0x16EA0},  // Unicode 17: Beria Erfe
};

// The letters (\p{L}) and numbers (\p{N}) of Unicode 15.0 and 16.0 that PCRE2 10.42's Unicode 14
// tables lack. A newer PCRE2 already has them; listing them again is harmless.
constexpr const char* kExtraLetters =
    "\\x{1C89}-\\x{1C8A}\\x{A7CB}-\\x{A7CD}\\x{A7DA}-\\x{A7DC}\\x{105C0}-\\x{105F3}"
    "\\x{10D4A}-\\x{10D65}\\x{10D6F}-\\x{10D85}\\x{10EC2}-\\x{10EC4}\\x{1123F}-\\x{11240}"
    "\\x{11380}-\\x{11389}\\x{1138B}\\x{1138E}\\x{11390}-\\x{113B5}\\x{113B7}\\x{113D1}\\x{113D3}"
    "\\x{11BC0}-\\x{11BE0}\\x{11F02}\\x{11F04}-\\x{11F10}\\x{11F12}-\\x{11F33}\\x{1342F}"
    "\\x{13441}-\\x{13446}\\x{13460}-\\x{143FA}\\x{16100}-\\x{1611D}\\x{16D40}-\\x{16D6C}"
    "\\x{18CFF}\\x{1B132}\\x{1B155}\\x{1DF25}-\\x{1DF2A}\\x{1E030}-\\x{1E06D}\\x{1E4D0}-\\x{1E4EB}"
    "\\x{1E5D0}-\\x{1E5ED}\\x{1E5F0}\\x{2B739}\\x{2EBF0}-\\x{2EE5D}\\x{31350}-\\x{323AF}";
constexpr const char* kExtraNumbers =
    "\\x{10D40}-\\x{10D49}\\x{116D0}-\\x{116E3}\\x{11BF0}-\\x{11BF9}\\x{11F50}-\\x{11F59}"
    "\\x{16130}-\\x{16139}\\x{16D70}-\\x{16D79}\\x{1CCF0}-\\x{1CCF9}\\x{1D2C0}-\\x{1D2D3}"
    "\\x{1E4F0}-\\x{1E4F9}\\x{1E5F1}-\\x{1E5FA}";
// White_Space, as oniguruma's \s in the reference.
constexpr const char* kSpaces =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// One compiled pattern, shared read-only by all threads (pcre2_match is reentrant).
class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw Error("internal: CLIP tokenizer regex does not compile at offset " + std::to_string(offset) +
                  ": " + reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is the fallback
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends every match of the pattern in `text` (non-overlapping, left to right) to `out`.
  void find_all(std::string_view text, std::vector<std::string_view>& out) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code_, nullptr), &pcre2_match_data_free);
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t start = 0;
    while (start < text.size()) {
      int rc = pcre2_match(code_, subject, text.size(), start, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) throw Error("internal: CLIP tokenizer regex failed with PCRE2 error " + std::to_string(rc));
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
      // Every alternative consumes at least one character, so matches are never empty.
      SDMPI_CHECK(ovector[1] > ovector[0], "empty regex match in the CLIP pre-tokenizer");
      out.emplace_back(text.substr(ovector[0], ovector[1] - ovector[0]));
      start = ovector[1];
    }
  }

 private:
  pcre2_code* code_ = nullptr;
};

std::string letters() { return std::string("\\p{L}") + kExtraLetters; }
std::string numbers() { return std::string("\\p{N}") + kExtraNumbers; }

// CLIPTokenizer's split: the special-token strings, the contractions, letter runs, single digits
// and runs of anything else that is not whitespace. Whitespace matches nothing and is dropped.
const Regex& clip_split() {
  static const Regex regex(
      "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[" + letters() + "]+|[" +
      numbers() + "]|[^" + kSpaces + letters() + numbers() + "]+");
  return regex;
}

// ByteLevel's GPT-2 split (use_regex = true). On CLIP's pieces it only changes the literal
// "<|startoftext|>"/"<|endoftext|>" (→ "<|", "startoftext", "|>"), as no piece holds whitespace.
const Regex& gpt2_split() {
  static const Regex regex("'s|'t|'re|'ve|'m|'ll|'d| ?[" + letters() + "]+| ?[" + numbers() + "]+| ?[^" +
                           kSpaces + letters() + numbers() + "]+|[" + kSpaces + "]+(?![^" + kSpaces +
                           "])|[" + kSpaces + "]+");
  return regex;
}

// NFC as Unicode 9.0 tables give it (see the header comment).
void nfc_append(std::string& out, std::string_view segment) {
  if (segment.empty()) return;
  utf8proc_uint8_t* result = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(segment.data()),
                                    static_cast<utf8proc_ssize_t>(segment.size()), &result,
                                    static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw Error(std::string("internal: utf8proc NFC failed: ") + utf8proc_errmsg(n));
  out.append(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
}

std::string nfc_unicode9(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t segment_start = 0, i = 0;
  while (i < text.size()) {
    const Utf8CodePoint c = decode_utf8_at(text, i);
    SDMPI_CHECK(c.length > 0, "normalize() needs well-formed UTF-8");
    if (in_ranges(kNewerThanUnicode9, std::size(kNewerThanUnicode9), c.code_point)) {
      nfc_append(out, text.substr(segment_start, i - segment_start));
      out.append(text.substr(i, c.length));  // unassigned in 9.0: a starter, kept as is
      segment_start = i + c.length;
    }
    i += c.length;
  }
  nfc_append(out, text.substr(segment_start));
  return out;
}

void append_lowercase(std::string& out, char32_t cp) {
  for (const Lower& l : kLowercaseExtra) {
    if (l.upper == cp) {
      for (char32_t c : l.lower)
        if (c) append_utf8(out, c);
      return;
    }
  }
  for (const LowerBlock& b : kLowercaseBlocks) {
    if (cp >= b.first && cp <= b.last) {
      append_utf8(out, cp + b.offset);
      return;
    }
  }
  append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
}

}  // namespace

bool is_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool is_word_char(char32_t cp) {
  // Rust's \w: Alphabetic, marks, decimal digits, connector punctuation, joiners. Alphabetic is
  // taken as letters + letter numbers + the circled/squared Latin letters (Other_Alphabetic So).
  if (cp == 0x200C || cp == 0x200D) return true;
  if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) ||
      (cp >= 0x1F150 && cp <= 0x1F169) || (cp >= 0x1F170 && cp <= 0x1F189))
    return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

std::string normalize(std::string_view text) {
  std::string composed = nfc_unicode9(text);
  std::string out;
  out.reserve(composed.size() + 8);
  bool in_space = false;
  for (char32_t cp : decode_utf8(composed)) {
    if (is_whitespace(cp)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
      continue;
    }
    in_space = false;
    append_lowercase(out, cp);
  }
  return out;
}

std::vector<std::string_view> pre_tokenize(std::string_view normalized) {
  std::vector<std::string_view> clip_pieces, pieces;
  clip_split().find_all(normalized, clip_pieces);
  pieces.reserve(clip_pieces.size());
  for (std::string_view piece : clip_pieces) gpt2_split().find_all(piece, pieces);
  return pieces;
}

const std::array<char32_t, 256>& byte_to_unicode() {
  // Printable bytes (33..126, 161..172, 174..255) stand for themselves; the other 68 bytes, in
  // increasing order, take the code points from U+0100 on.
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[static_cast<size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

}  // namespace sdmpi::clip_text
