// Hashes: SHA-256 known answers (FIPS 180-2 examples) and FNV-1a's published test vectors.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <thread>

#include "sdmpi/hash.h"

using namespace sdmpi;

// Built without OpenSSL, every SHA-256 is "" (the io layer's SDMPI_HAVE_OPENSSL is its own).
bool have_sha256() { return !sha256_hex("").empty(); }

TEST(Hash, Sha256KnownAnswers) {
  if (!have_sha256()) GTEST_SKIP() << "built without OpenSSL";
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  auto path = std::filesystem::temp_directory_path() / "sdmpi_hash_test.bin";
  std::string big(10u << 20, 'a');  // spans several 4 MiB reads
  std::ofstream(path, std::ios::binary) << big;
  EXPECT_EQ(sha256_file(path.string()), sha256_hex(big));
  std::filesystem::remove(path);
}

TEST(Hash, Fnv1a64) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(hex64(255), "00000000000000ff");
}

namespace {
namespace fs = std::filesystem;

// A scratch folder and SDMPI_HASH_CACHE pointing into it for one test; both undone after.
struct CacheScope {
  fs::path dir;
  explicit CacheScope(const std::string& cache_name) {
    dir = fs::temp_directory_path() / ("sdmpi_hash_cache_test_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    ::setenv("SDMPI_HASH_CACHE", cache_name == "off" ? "off" : (dir / cache_name).c_str(), 1);
  }
  ~CacheScope() {
    ::unsetenv("SDMPI_HASH_CACHE");
    fs::remove_all(dir);
  }
  fs::path write(const std::string& name, const std::string& bytes) const {
    std::ofstream(dir / name, std::ios::binary | std::ios::trunc) << bytes;
    return dir / name;
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

// The cache answers for the same file without reading it (a planted value comes back), and a
// file rewritten with the same size and its old mtime restored is hashed again (its ctime moved).
TEST(HashCache, ServesTheSameFileAndRehashesARewrittenOne) {
  if (!have_sha256()) GTEST_SKIP() << "built without OpenSSL";
  CacheScope scope("cache.json");
  const fs::path f = scope.write("w.safetensors", "abc");
  EXPECT_EQ(hash_cache_path(), (scope.dir / "cache.json").string());
  EXPECT_EQ(sha256_file_cached(f.string()), sha256_hex("abc"));
  ASSERT_TRUE(fs::exists(scope.dir / "cache.json"));
  std::string cached = slurp(scope.dir / "cache.json");
  const size_t at = cached.find(sha256_hex("abc"));
  ASSERT_NE(at, std::string::npos) << cached;
  cached.replace(at, 64, std::string(64, 'f'));  // a value only the cache can give
  std::ofstream(scope.dir / "cache.json", std::ios::trunc) << cached;
  EXPECT_EQ(sha256_file_cached(f.string()), std::string(64, 'f'));

  struct stat before{};
  ASSERT_EQ(::stat(f.c_str(), &before), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // past the file system's clock tick
  scope.write("w.safetensors", "abd");
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, f.c_str(), times, 0), 0);  // mtime as before, as cp -p would leave it
  EXPECT_EQ(sha256_file_cached(f.string()), sha256_hex("abd"));
  EXPECT_EQ(sha256_file_cached(f.string()), sha256_hex("abd"));  // and that is what is cached now

  // A model's hash over several files is the same through the cache as without it.
  const fs::path g = scope.write("v.safetensors", "xyz");
  const std::string expected =
      sha256_hex(sha256_hex("xyz") + "  v.safetensors\n" + sha256_hex("abd") + "  w.safetensors\n");
  EXPECT_EQ(weights_hash({f.string(), g.string()}, scope.dir.string()), expected);
  EXPECT_EQ(weights_hash({f.string(), g.string()}, scope.dir.string()), expected);
}

// Only a cache: malformed, of the wrong shape, unwritable or turned off, it never changes a hash
// or raises an error.
TEST(HashCache, MalformedUnwritableOrOffIsIgnored) {
  if (!have_sha256()) GTEST_SKIP() << "built without OpenSSL";
  {
    CacheScope scope("cache.json");
    const fs::path f = scope.write("w.bin", "abc");
    for (const std::string& junk :
         {std::string("not json {"), std::string("[1,2]"), std::string(R"({"files": 3})"),
          R"({"files": {")" + fs::weakly_canonical(f).string() +
              R"(": {"identity": 1, "sha256": 2, "hashed_ns": "x"}, "other": 7}})"}) {
      std::ofstream(scope.dir / "cache.json", std::ios::trunc) << junk;
      EXPECT_EQ(sha256_file_cached(f.string()), sha256_hex("abc")) << junk;
      // Rewritten well-formed, with this file's entry.
      const nlohmann::json j = nlohmann::json::parse(slurp(scope.dir / "cache.json"));
      EXPECT_EQ(j.at("files").at(fs::weakly_canonical(f).string()).at("sha256"), sha256_hex("abc")) << junk;
    }
  }
  {
    CacheScope scope("a_file/cache.json");  // its folder would have to be inside a regular file
    scope.write("a_file", "x");
    const fs::path f = scope.write("w.bin", "abc");
    EXPECT_EQ(sha256_file_cached(f.string()), sha256_hex("abc"));
  }
  {
    CacheScope scope("off");
    const fs::path f = scope.write("w.bin", "abc");
    EXPECT_EQ(hash_cache_path(), "");
    EXPECT_EQ(sha256_file_cached(f.string()), sha256_hex("abc"));
    EXPECT_EQ(std::distance(fs::directory_iterator(scope.dir), fs::directory_iterator()), 1);  // w.bin alone
  }
}
