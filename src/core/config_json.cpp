// Reading JSON config files (include/sdmpi/config_json.h): nlohmann::json behind one error form.
#include "sdmpi/config_json.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace sdmpi {
namespace {

// Python's json module writes Infinity, -Infinity and NaN bare; outside strings they become JSON
// strings. `inserted` gets the offset (in the output) of each quote added, to map positions back.
std::string quote_python_constants(std::string_view text, std::vector<size_t>& inserted) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool replaced = false;
    for (std::string_view token : {"-Infinity", "Infinity", "NaN"}) {
      if (text.compare(i, token.size(), token) == 0) {
        inserted.push_back(out.size());
        out += '"';
        out += token;
        inserted.push_back(out.size());
        out += '"';
        i += token.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

// nlohmann's position of a byte count: the line (from 1) and the characters read on it (a newline
// starts a new line at column 0), so messages say what nlohmann would say of the original file.
void line_and_column(std::string_view text, size_t chars_read, size_t& line, size_t& column) {
  line = 1;
  column = 0;
  for (size_t k = 0; k < chars_read; ++k) {
    ++column;
    if (k < text.size() && text[k] == '\n') ++line, column = 0;
  }
}

// The parser's own words without its "[json.exception.parse_error.101] parse error at ...: " lead.
std::string reason_of(const nlohmann::json::exception& e) {
  std::string what = e.what();
  size_t at = what.find("parse error");
  if (at != std::string::npos) {
    const size_t colon = what.find(": ", at);
    what = colon == std::string::npos ? what.substr(at) : what.substr(colon + 2);
  } else if (const size_t bracket = what.find("] "); what.rfind("[json.exception", 0) == 0 && bracket != std::string::npos) {
    what = what.substr(bracket + 2);
  }
  for (char& c : what)
    if (c == '\n' || c == '\r') c = ' ';
  return what;
}

std::string detail_of(size_t line, size_t column, const std::string& reason) {
  if (line == 0) return ": " + reason;
  return " at line " + std::to_string(line) + ", column " + std::to_string(column) + ": " + reason;
}

}  // namespace

ConfigJsonError::ConfigJsonError(std::string source, size_t line, size_t column, std::string reason)
    : InputError(source + ": invalid JSON" + detail_of(line, column, reason)),
      source_(std::move(source)),
      line_(line),
      column_(column),
      reason_(std::move(reason)) {}

std::string ConfigJsonError::detail() const { return detail_of(line_, column_, reason_); }

nlohmann::json parse_config_json(std::string_view text, const std::string& source, ConfigJsonOptions options) {
  std::vector<size_t> inserted;
  const std::string quoted = options.python_constants ? quote_python_constants(text, inserted) : std::string();
  const std::string_view parsed = options.python_constants ? std::string_view(quoted) : text;
  try {
    return nlohmann::json::parse(parsed.begin(), parsed.end());
  } catch (const nlohmann::json::parse_error& e) {
    const size_t read = e.byte;  // characters read in `parsed`, the failing one included
    size_t added = 0;            // of them, quotes that are not in `text`
    while (added < inserted.size() && inserted[added] < read) ++added;
    size_t line = 0, column = 0;
    line_and_column(text, read - added, line, column);
    throw ConfigJsonError(source, line, column, reason_of(e));
  } catch (const nlohmann::json::exception& e) {  // e.g. a number out of range
    throw ConfigJsonError(source, 0, 0, reason_of(e));
  }
}

nlohmann::json read_config_json(const std::filesystem::path& path, ConfigJsonOptions options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw InputError(path.string() + ": read error (" + std::strerror(errno) + ")");
  return parse_config_json(text.str(), path.string(), options);
}

}  // namespace sdmpi
