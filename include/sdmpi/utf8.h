// UTF-8: the one validator, decoder and repair of the project.
//
// Every text that comes from a user (prompt files, --prompt, configs, archive strings, PNG text)
// must be well-formed UTF-8 before it goes anywhere; each reader words its own message ("line 7:
// invalid UTF-8 at byte 4") from the offset found here. Well-formed means what Unicode §3.9 says and
// utf8proc_iterate checks: no truncated sequence, stray continuation byte, overlong form, surrogate
// or value past U+10FFFF. Only core includes utf8proc for this; text uses it for NFC and case.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace sdmpi {

// Byte offset of the first byte that does not start a well-formed sequence; npos when the whole
// text is well-formed.
size_t find_invalid_utf8(std::string_view text);

// Whether `text` is well-formed; if not and bad_offset is given, *bad_offset is that byte's offset.
bool valid_utf8(std::string_view text, size_t* bad_offset = nullptr);

// The bad byte for a message: "byte 0xC3 at offset 3 does not start a well-formed character".
std::string describe_invalid_utf8(std::string_view text, size_t offset);

// The code point that starts at byte `offset` and its length in bytes; length 0 when the bytes
// there are not a well-formed sequence (or offset is at the end).
struct Utf8CodePoint {
  char32_t code_point = 0;
  size_t length = 0;
};
Utf8CodePoint decode_utf8_at(std::string_view text, size_t offset);

// Every code point of well-formed text (throws Error on ill-formed input: check first).
std::vector<char32_t> decode_utf8(std::string_view valid_text);

// Appends the UTF-8 of one code point (a surrogate or a value past U+10FFFF is an internal error).
void append_utf8(std::string& out, char32_t code_point);

// The text with each maximal ill-formed subpart replaced by one U+FFFD (Unicode §3.9 "substitution
// of maximal subparts": what Python's errors="replace" and Rust's from_utf8_lossy do).
std::string replace_invalid_utf8(std::string_view text);

// Python's str.isspace() for one code point: general category Zs, or bidi class WS, B or S.
bool is_python_space(char32_t code_point);

}  // namespace sdmpi
