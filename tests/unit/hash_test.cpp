// Hashes: SHA-256 known answers (FIPS 180-2 examples) and FNV-1a's published test vectors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "sdmpi/hash.h"

using namespace sdmpi;

TEST(Hash, Sha256KnownAnswers) {
#ifdef SDMPI_HAVE_OPENSSL
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  auto path = std::filesystem::temp_directory_path() / "sdmpi_hash_test.bin";
  std::string big(10u << 20, 'a');  // spans several 4 MiB reads
  std::ofstream(path, std::ios::binary) << big;
  EXPECT_EQ(sha256_file(path.string()), sha256_hex(big));
  std::filesystem::remove(path);
#else
  GTEST_SKIP() << "built without OpenSSL";
#endif
}

TEST(Hash, Fnv1a64) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(hex64(255), "00000000000000ff");
}
