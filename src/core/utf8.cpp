// UTF-8 checks and repair on utf8proc_iterate (see include/sdmpi/utf8.h): one definition of
// "well-formed" for every reader of user text.
#include "sdmpi/utf8.h"

#include <utf8proc.h>

#include <cstdio>

#include "sdmpi/error.h"

namespace sdmpi {

Utf8CodePoint decode_utf8_at(std::string_view text, size_t offset) {
  if (offset >= text.size()) return {};
  utf8proc_int32_t cp = 0;
  // utf8proc_iterate rejects truncated sequences, stray continuation bytes, overlong forms,
  // surrogates and values past U+10FFFF with a negative result.
  const utf8proc_ssize_t n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data()) + offset,
                                              static_cast<utf8proc_ssize_t>(text.size() - offset), &cp);
  if (n <= 0 || cp < 0) return {};
  return {static_cast<char32_t>(cp), static_cast<size_t>(n)};
}

size_t find_invalid_utf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const Utf8CodePoint c = decode_utf8_at(text, i);
    if (c.length == 0) return i;
    i += c.length;
  }
  return std::string_view::npos;
}

bool valid_utf8(std::string_view text, size_t* bad_offset) {
  const size_t bad = find_invalid_utf8(text);
  if (bad == std::string_view::npos) return true;
  if (bad_offset) *bad_offset = bad;
  return false;
}

std::string describe_invalid_utf8(std::string_view text, size_t offset) {
  SDMPI_CHECK(offset < text.size(), "describe_invalid_utf8: offset past the end");
  char byte[8];
  std::snprintf(byte, sizeof byte, "0x%02X", static_cast<unsigned char>(text[offset]));
  return "byte " + std::string(byte) + " at offset " + std::to_string(offset) +
         " does not start a well-formed character";
}

std::vector<char32_t> decode_utf8(std::string_view text) {
  std::vector<char32_t> out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const Utf8CodePoint c = decode_utf8_at(text, i);
    SDMPI_CHECK(c.length > 0, "decode_utf8() needs well-formed UTF-8 (" + describe_invalid_utf8(text, i) + ")");
    out.push_back(c.code_point);
    i += c.length;
  }
  return out;
}

void append_utf8(std::string& out, char32_t code_point) {
  SDMPI_CHECK(utf8proc_codepoint_valid(static_cast<utf8proc_int32_t>(code_point)),
              "append_utf8: U+" + std::to_string(static_cast<uint32_t>(code_point)) + " is not a code point");
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(code_point), buf);
  out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

std::string replace_invalid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const size_t bad = find_invalid_utf8(bytes.substr(i));
    if (bad == std::string_view::npos) {
      out.append(bytes.substr(i));
      break;
    }
    out.append(bytes.substr(i, bad));
    i += bad;
    // Length of the maximal subpart: the lead byte plus the continuation bytes that could still
    // have completed a well-formed sequence (the ranges of Unicode Table 3-7).
    const auto b0 = static_cast<unsigned char>(bytes[i]);
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) need = 1;
    else if (b0 >= 0xE0 && b0 <= 0xEF) need = 2, lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    else if (b0 >= 0xF0 && b0 <= 0xF4) need = 3, lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    size_t len = 1;
    for (size_t k = 0; k < need && i + len < bytes.size(); ++k) {
      const auto b = static_cast<unsigned char>(bytes[i + len]);
      if (b < (k == 0 ? lo : 0x80) || b > (k == 0 ? hi : 0xBF)) break;
      ++len;
    }
    out.append("\xEF\xBF\xBD");
    i += len;
  }
  return out;
}

bool is_python_space(char32_t code_point) {
  if (!utf8proc_codepoint_valid(static_cast<utf8proc_int32_t>(code_point))) return false;
  const utf8proc_property_t* prop = utf8proc_get_property(static_cast<utf8proc_int32_t>(code_point));
  return prop->category == UTF8PROC_CATEGORY_ZS || prop->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         prop->bidi_class == UTF8PROC_BIDI_CLASS_B || prop->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

}  // namespace sdmpi
