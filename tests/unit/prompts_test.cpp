// Prompt files: the formats, the seeds of docs/design.md §3, and the malformed-input corpus.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sdmpi/error.h"
#include "sdmpi/prompts.h"

using namespace sdmpi;
namespace fs = std::filesystem;

TEST(Prompts, TxtSkipsBlankLinesAndCarriageReturns) {
  auto p = parse_prompts_txt("a cat\r\n\n  \nan owl, night\n", "p.txt");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].prompt, "a cat");
  EXPECT_EQ(p[1].prompt, "an owl, night");
  EXPECT_EQ(p[1].origin, "p.txt:4");
}

TEST(Prompts, JsonlFieldsAndDefaults) {
  auto p = parse_prompts_jsonl(
      "{\"prompt\": \"a\", \"seed\": 18446744073709551615, \"steps\": 4, \"sampler\": \"Euler a\"}\n"
      "{\"prompt\": \"b\", \"negative_prompt\": \"blurry\", \"guidance\": 1.0, \"width\": 64, \"height\": 128}\n",
      "p.jsonl");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(*p[0].seed, 18446744073709551615ull);
  EXPECT_EQ(*p[0].steps, 4);
  EXPECT_EQ(*p[0].sampler, "Euler a");
  EXPECT_FALSE(p[0].guidance.has_value());
  EXPECT_EQ(*p[1].negative_prompt, "blurry");
  EXPECT_EQ(*p[1].height, 128);
}

TEST(Prompts, ExpandGivesGlobalIndicesAndSeeds) {
  auto p = parse_prompts_jsonl("{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"seed\": 100}\n{\"prompt\": \"c\"}\n", "p");
  GenerationParams defaults;
  defaults.steps = 7;
  auto items = expand_job(p, 2, 1000, defaults);
  ASSERT_EQ(items.size(), 6u);
  for (size_t g = 0; g < items.size(); ++g) {
    EXPECT_EQ(items[g].index, static_cast<int64_t>(g));
    EXPECT_EQ(items[g].prompt_index, static_cast<int64_t>(g / 2));
    EXPECT_EQ(items[g].sample, static_cast<int64_t>(g % 2));
    EXPECT_EQ(items[g].params.steps, 7);
  }
  EXPECT_EQ(items[0].params.seed, 1000u);  // base_seed + g
  EXPECT_EQ(items[1].params.seed, 1001u);
  EXPECT_EQ(items[2].params.seed, 100u);   // the line's seed, + k
  EXPECT_EQ(items[3].params.seed, 101u);
  EXPECT_EQ(items[4].params.seed, 1004u);
  EXPECT_EQ(items[5].params.prompt, "c");
}

TEST(Prompts, ValidUtf8) {
  size_t bad = 99;
  EXPECT_TRUE(valid_utf8("caf\xc3\xa9 \xf0\x9f\x90\xb1"));
  EXPECT_FALSE(valid_utf8("ab\xe2\x82", &bad));
  EXPECT_EQ(bad, 2u);
  EXPECT_FALSE(valid_utf8("\xed\xa0\x80", &bad));  // UTF-16 surrogate
  EXPECT_FALSE(valid_utf8("\xc0\xaf", &bad));       // overlong
}

// The one UTF-8 validator (sdmpi/utf8.h) that prompts, PNG text, archives and the tokenizer share.
TEST(Utf8, FindDescribeDecodeRepair) {
  EXPECT_EQ(find_invalid_utf8("caf\xc3\xa9"), std::string_view::npos);
  EXPECT_EQ(find_invalid_utf8("caf\xc3"), 3u);
  EXPECT_EQ(describe_invalid_utf8("caf\xc3", 3), "byte 0xC3 at offset 3 does not start a well-formed character");
  EXPECT_EQ(find_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // past U+10FFFF
  const Utf8CodePoint c = decode_utf8_at("a\xf0\x9f\x90\xb1", 1);
  EXPECT_EQ(c.code_point, U'\U0001F431');
  EXPECT_EQ(c.length, 4u);
  EXPECT_EQ(decode_utf8_at("a\xff", 1).length, 0u);
  std::string s;
  append_utf8(s, U'\u00e9');
  EXPECT_EQ(s, "\xc3\xa9");
  EXPECT_EQ(decode_utf8("a\xc3\xa9"), (std::vector<char32_t>{U'a', U'\u00e9'}));
  EXPECT_THROW(decode_utf8("a\xc3"), Error);
  // One U+FFFD per maximal ill-formed subpart (Unicode §3.9's example bytes).
  EXPECT_EQ(replace_invalid_utf8("a\xf1\x80\x80\xe1\x80\xc2" "b\x80"),
            "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" "b\xef\xbf\xbd");
  EXPECT_EQ(replace_invalid_utf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // a surrogate: 3 subparts
  // Python's str.isspace: the White_Space characters plus the separators U+001C..U+001F.
  std::vector<char32_t> spaces;
  for (char32_t cp = 0; cp < 0x110000; ++cp)
    if (is_python_space(cp)) spaces.push_back(cp);
  const std::vector<char32_t> python = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0,
                                        0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007,
                                        0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  EXPECT_EQ(spaces, python);
}

TEST(Prompts, MalformedCorpusGivesOneClearErrorEach) {
  fs::path dir = fs::path(SDMPI_TEST_DATA) / "malformed" / "prompts";
  std::ifstream mf(dir / "MANIFEST.json");
  ASSERT_TRUE(mf) << "missing " << (dir / "MANIFEST.json");
  nlohmann::json manifest = nlohmann::json::parse(mf);
  ASSERT_GE(manifest.size(), 15u);
  for (auto& [name, expect] : manifest.items()) {
    std::string msg;
    try {
      auto prompts = read_prompt_file((dir / name).string());
      expand_job(prompts, 1, 0, GenerationParams{});
    } catch (const InputError& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find(expect.get<std::string>()), std::string::npos)
        << name << ": expected \"" << expect.get<std::string>() << "\", got \"" << msg << "\"";
    EXPECT_EQ(msg.find('\n'), std::string::npos) << name << ": message must be one line";
  }
}

TEST(Prompts, MissingFileIsAnInputError) {
  EXPECT_THROW(read_prompt_file("/nonexistent/prompts.txt"), InputError);
}
