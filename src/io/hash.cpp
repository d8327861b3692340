// SHA-256 through OpenSSL's EVP interface (streamed in 4 MiB reads), FNV-1a for fingerprints, and
// the cache of weight files' hashes (sha256_file_cached, see sdmpi/hash.h).
#include "sdmpi/hash.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "sdmpi/error.h"

#ifdef SDMPI_HAVE_OPENSSL
#include <openssl/evp.h>
#endif

namespace sdmpi {
namespace {
#ifdef SDMPI_HAVE_OPENSSL
std::string to_hex(const unsigned char* d, unsigned n) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s += digits[d[i] >> 4];
    s += digits[d[i] & 15];
  }
  return s;
}
struct MdCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~MdCtx() { EVP_MD_CTX_free(ctx); }
};
#endif
}  // namespace

std::string sha256_hex(const std::string& data) {
#ifdef SDMPI_HAVE_OPENSSL
  MdCtx md;
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!md.ctx || !EVP_DigestInit_ex(md.ctx, EVP_sha256(), nullptr) || !EVP_DigestUpdate(md.ctx, data.data(), data.size()) ||
      !EVP_DigestFinal_ex(md.ctx, out, &n))
    throw Error("SHA-256 failed (OpenSSL)");
  return to_hex(out, n);
#else
  (void)data;
  return "";
#endif
}

std::string sha256_file(const std::string& path) {
#ifdef SDMPI_HAVE_OPENSSL
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw InputError("cannot open " + path + " to hash it");
  MdCtx md;
  if (!md.ctx || !EVP_DigestInit_ex(md.ctx, EVP_sha256(), nullptr)) throw Error("SHA-256 failed (OpenSSL)");
  std::vector<unsigned char> buf(4u << 20);
  size_t got;
  while ((got = std::fread(buf.data(), 1, buf.size(), f.get())) > 0)
    if (!EVP_DigestUpdate(md.ctx, buf.data(), got)) throw Error("SHA-256 failed (OpenSSL)");
  if (std::ferror(f.get())) throw InputError("read error while hashing " + path);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  if (!EVP_DigestFinal_ex(md.ctx, out, &n)) throw Error("SHA-256 failed (OpenSSL)");
  return to_hex(out, n);
#else
  (void)path;
  return "";
#endif
}

std::string hash_cache_path() {
  if (const char* env = std::getenv("SDMPI_HASH_CACHE")) {
    const std::string v = env;
    return v == "off" ? "" : v;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/sd_mpi/sha256.json";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/sd_mpi/sha256.json";
  return "";
}

namespace {

constexpr size_t kHashCacheEntries = 256;  // the most recently hashed files kept

// What identifies a file's contents without reading them: device, inode, size, modification and
// change times. The change time (ctime) moves on every write and cannot be set back, so a file
// rewritten in place with its old size and mtime restored (cp -p, rsync -t) still misses.
nlohmann::json file_identity(const struct stat& st) {
  auto ns = [](const struct timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; };
  return {{"dev", static_cast<uint64_t>(st.st_dev)}, {"ino", static_cast<uint64_t>(st.st_ino)},
          {"size", static_cast<int64_t>(st.st_size)}, {"mtime_ns", ns(st.st_mtim)}, {"ctime_ns", ns(st.st_ctim)}};
}

// The cache file's well-formed entries ({} when it is absent, unreadable or malformed: it is only
// a cache, and an entry of the wrong shape is dropped when the file is next written).
nlohmann::json read_hash_cache(const std::string& cache) {
  nlohmann::json files = nlohmann::json::object();
  std::ifstream in(cache);
  if (!in) return files;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("files") || !j["files"].is_object()) return files;
  for (const auto& [path, e] : j["files"].items())
    if (e.is_object() && e.contains("identity") && e["identity"].is_object() && e.contains("sha256") &&
        e["sha256"].is_string() && e.contains("hashed_ns") && e["hashed_ns"].is_number_integer())
      files[path] = e;
  return files;
}

}  // namespace

std::string sha256_file_cached(const std::string& path) {
#ifndef SDMPI_HAVE_OPENSSL
  return sha256_file(path);  // "": nothing to cache
#else
  const std::string cache = hash_cache_path();
  struct stat st{};
  std::error_code ec;
  const std::string key = std::filesystem::weakly_canonical(path, ec).string();
  if (cache.empty() || ec || ::stat(path.c_str(), &st) != 0) return sha256_file(path);
  const nlohmann::json identity = file_identity(st);
  nlohmann::json files = read_hash_cache(cache);
  if (auto it = files.find(key); it != files.end() && (*it)["identity"] == identity)
    return (*it)["sha256"].get<std::string>();
  const std::string hash = sha256_file(path);
  // Stored only if the file did not change while it was read (a write moves its ctime).
  struct stat after{};
  if (::stat(path.c_str(), &after) != 0 || file_identity(after) != identity) return hash;
  // Written to a file of our own, then renamed over the cache: a job reading it meanwhile sees
  // the old or the new one whole, and of two jobs writing at once one entry may be lost (it is
  // hashed again next time). Any failure leaves the cache as it was; the hash stands.
  const std::string tmp = cache + ".tmp." + std::to_string(::getpid());
  try {
    files = read_hash_cache(cache);  // what other jobs added while this one hashed
    const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count();
    files[key] = {{"identity", identity}, {"sha256", hash}, {"hashed_ns", now_ns}};
    while (files.size() > kHashCacheEntries)  // drop the longest ago hashed
      files.erase(std::min_element(files.begin(), files.end(), [](const nlohmann::json& a, const nlohmann::json& b) {
        return a["hashed_ns"].get<int64_t>() < b["hashed_ns"].get<int64_t>();
      }));
    std::filesystem::create_directories(std::filesystem::path(cache).parent_path(), ec);
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << nlohmann::json{{"format", "sd_mpi weight-file SHA-256 cache"}, {"files", files}}.dump(1) << "\n";
      if (!out) throw std::runtime_error("write");
    }
    std::filesystem::rename(tmp, cache, ec);
    if (ec) std::filesystem::remove(tmp, ec);
  } catch (const std::exception&) {
    std::filesystem::remove(tmp, ec);
  }
  return hash;
#endif
}

std::string weights_hash(const std::vector<std::string>& files, const std::string& root) {
  if (files.empty()) return "";
  if (files.size() == 1) return sha256_file_cached(files[0]);
  std::vector<std::string> sorted = files;
  std::sort(sorted.begin(), sorted.end());
  std::string lines;
  for (const std::string& f : sorted) {
    std::string rel = f.rfind(root, 0) == 0 ? f.substr(root.size()) : f;
    while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
    lines += sha256_file_cached(f) + "  " + rel + "\n";
  }
  return sha256_hex(lines);
}

uint64_t fnv1a64(const std::string& data) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace sdmpi
