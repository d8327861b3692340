// The one JSON config reader: model configs, scheduler configs, tokenizer files, model indexes.
//
// A file that cannot be opened is "<file>: cannot open (<reason>)"; a syntax error is one line,
// "<file>: invalid JSON at line L, column C: <what the parser expected>", as a ConfigJsonError that
// keeps file, line, column and reason for readers whose messages word the file differently (the
// model folder's "<folder>: unet/config.json is not valid JSON at line ..."). A value the parser
// cannot hold (a number past double's range) has no position: "<file>: invalid JSON: <reason>".
// diffusers writes float('inf') and float('nan') the way Python's json module does, as the bare
// tokens Infinity, -Infinity and NaN; with `python_constants` those outside strings read as the
// strings "Infinity", "-Infinity" and "NaN" (nlohmann::json has no such numbers), and positions in
// messages still count in the file as written.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "sdmpi/error.h"

namespace sdmpi {

struct ConfigJsonOptions {
  bool python_constants = false;  // accept Infinity, -Infinity, NaN (as strings, see above)
};

class ConfigJsonError : public InputError {
 public:
  ConfigJsonError(std::string source, size_t line, size_t column, std::string reason);
  const std::string& source() const { return source_; }
  size_t line() const { return line_; }
  size_t column() const { return column_; }
  const std::string& reason() const { return reason_; }
  // " at line L, column C: <reason>" (or ": <reason>" without a position): what follows "invalid
  // JSON" in the message, for readers that name the file their own way.
  std::string detail() const;

 private:
  std::string source_;
  size_t line_, column_;
  std::string reason_;
};

// Parses `text`; `source` names it in the error (usually the file's path).
nlohmann::json parse_config_json(std::string_view text, const std::string& source, ConfigJsonOptions options = {});

// Reads and parses a file (InputError naming the path when it cannot be read).
nlohmann::json read_config_json(const std::filesystem::path& path, ConfigJsonOptions options = {});

}  // namespace sdmpi
