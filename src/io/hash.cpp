// SHA-256 through OpenSSL's EVP interface (streamed in 4 MiB reads), FNV-1a for fingerprints.
#include "sdmpi/hash.h"

#include <algorithm>
#include <cstdio>
#include <memory>

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

std::string weights_hash(const std::vector<std::string>& files, const std::string& root) {
  if (files.empty()) return "";
  if (files.size() == 1) return sha256_file(files[0]);
  std::vector<std::string> sorted = files;
  std::sort(sorted.begin(), sorted.end());
  std::string lines;
  for (const std::string& f : sorted) {
    std::string rel = f.rfind(root, 0) == 0 ? f.substr(root.size()) : f;
    while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
    lines += sha256_file(f) + "  " + rel + "\n";
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
