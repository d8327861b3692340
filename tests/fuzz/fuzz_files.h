// What the fuzz targets that read *files* share: a scratch folder per process, writing bytes to a
// file, and the text container that packs several files into one fuzz input.
//
// Container: a line "@@ NAME" starts file NAME; its bytes run to the next such line, less the one
// newline before it (and less one final newline at the end of the input), so that
// "@@ a\n" + A + "\n" + "@@ b\n" + B + "\n" unpacks to exactly {a: A, b: B}. Bytes before the first
// header are ignored. The seed scripts (tests/data/malformed/*/make_seeds.py) write the same form.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace sdmpi_fuzz {

// A fresh folder under $TMPDIR (or /tmp) for this process, removed at exit.
inline std::filesystem::path scratch_dir(const char* name) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/sdmpi-fuzz-" + name + "-XXXXXX";
  if (!mkdtemp(templ.data())) {
    std::perror("mkdtemp");
    std::abort();
  }
  static std::vector<std::string> to_remove;
  if (to_remove.empty())
    std::atexit([] {
      for (const auto& d : to_remove) {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
      }
    });
  to_remove.push_back(templ);
  return templ;
}

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
}

inline std::vector<std::pair<std::string, std::string>> unpack_files(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<std::pair<std::string, std::string>> files;
  // Header positions: "@@ " at the start of the input or right after a newline.
  std::vector<size_t> heads;
  for (size_t p = 0; p + 3 <= in.size(); p = in.find("@@ ", p + 1)) {
    if (p == std::string::npos) break;
    if (in.compare(p, 3, "@@ ") == 0 && (p == 0 || in[p - 1] == '\n')) heads.push_back(p);
  }
  for (size_t k = 0; k < heads.size(); ++k) {
    const size_t name_begin = heads[k] + 3;
    size_t name_end = in.find('\n', name_begin);
    if (name_end == std::string::npos) name_end = in.size();
    size_t end = k + 1 < heads.size() ? heads[k + 1] : in.size();
    const size_t begin = std::min(name_end + 1, end);
    if (end > begin && in[end - 1] == '\n') --end;  // the newline before the next header / at the end
    files.emplace_back(in.substr(name_begin, name_end - name_begin), in.substr(begin, end - begin));
  }
  return files;
}

}  // namespace sdmpi_fuzz
