// The CLIP tokenizer against transformers 5.24 (tools/golden/make_tokenizer_golden.py and
// make_tokenizer_json_golden.py): every golden prompt's 77 ids, an exhaustive walk over all code
// points for the normalizer and the pre-tokenizer, tokenizer folders of several layouts (vocab.json +
// merges.txt, and the tokenizer.json that transformers 5 saves), malformed folders, invalid UTF-8.
#include <gtest/gtest.h>
#include <zlib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/error.h"
#include "text/clip_tokenizer_internal.h"

using namespace sdmpi;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kGolden = fs::path(SDMPI_TEST_DATA) / "golden" / "tokenizer";
const fs::path kGoldenJson = kGolden / "json";
const fs::path kMalformed = fs::path(SDMPI_TEST_DATA) / "malformed" / "tokenizer";
const fs::path kFuzzSeeds = fs::path(SDMPI_TEST_DATA) / "malformed" / "clip_tokenizer";

std::string read_gz(const fs::path& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path.string());
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}

const json& prompts_golden() {
  static const json j = json::parse(read_gz(kGolden / "prompts.json.gz"));
  return j;
}

// A fresh scratch folder under the build tree, removed when the test ends.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name) {
    path = fs::path(SDMPI_BINARY_DIR) / "test_scratch" /
           (name + "_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string show(const std::string& s) { return json(s).dump(); }

uint32_t crc32_of(const std::string& s) {
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<uInt>(s.size())));
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << p;
}

// A tokenizer against what transformers made of the same folder (a variants.json.gz entry): special
// ids, added tokens with their flags, and the ids of each probe.
void expect_like_reference(const ClipTokenizer& tok, const json& v) {
  EXPECT_EQ(tok.pad_id(), v["pad_id"].get<int32_t>());
  EXPECT_EQ(tok.bos_id(), v["bos_id"].get<int32_t>());
  EXPECT_EQ(tok.eos_id(), v["eos_id"].get<int32_t>());
  ASSERT_EQ(tok.added_tokens().size(), v["added_tokens"].size());
  for (const json& want : v["added_tokens"]) {
    auto it = std::find_if(tok.added_tokens().begin(), tok.added_tokens().end(),
                           [&](const ClipAddedToken& t) { return t.content == want["content"]; });
    ASSERT_NE(it, tok.added_tokens().end()) << want.dump();
    EXPECT_EQ(it->id, want["id"].get<int32_t>()) << want.dump();
    EXPECT_EQ(it->normalized, want["normalized"].get<bool>()) << want.dump();
    EXPECT_EQ(it->lstrip, want["lstrip"].get<bool>()) << want.dump();
    EXPECT_EQ(it->rstrip, want["rstrip"].get<bool>()) << want.dump();
    EXPECT_EQ(it->single_word, want["single_word"].get<bool>()) << want.dump();
    EXPECT_EQ(it->special, want["special"].get<bool>()) << want.dump();
  }
  for (const json& c : v["cases"])
    EXPECT_EQ(tok.encode_padded(c["prompt"]), c["ids"].get<std::vector<int32_t>>()) << show(c["prompt"]);
}

// The patch language of make_tokenizer_json_golden.py, on a parsed tokenizer.json.
json apply_patch(json doc, const json& patch) {
  if (patch.contains("set"))
    for (const auto& [key, value] : patch["set"].items()) doc[key] = value;
  if (patch.contains("model"))
    for (const auto& [key, value] : patch["model"].items()) doc["model"][key] = value;
  if (patch.contains("model_delete"))
    for (const json& key : patch["model_delete"]) doc["model"].erase(key.get<std::string>());
  if (patch.value("merges_as_strings", false))
    for (json& m : doc["model"]["merges"])
      if (m.is_array()) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  return doc;
}

}  // namespace

// ---- the SD 1.x vocabulary ------------------------------------------------------------------------

// First in the file, so that it times the one build of the process (CPU time: the test machines
// are shared, and sanitizer builds run a few times slower).
TEST(ClipTokenizer, BuiltinBuildsInWellUnderHalfASecond) {
  std::clock_t t0 = std::clock();
  ClipTokenizer tok = ClipTokenizer::builtin();
  double seconds = static_cast<double>(std::clock() - t0) / CLOCKS_PER_SEC;
  EXPECT_LT(seconds, 0.5);
  std::printf("[ timing   ] builtin(): %.0f ms of CPU\n", seconds * 1e3);
  EXPECT_FALSE(tok.empty());
  EXPECT_TRUE(ClipTokenizer().empty());
  EXPECT_THROW(ClipTokenizer().encode("a"), Error);
}

TEST(ClipTokenizer, PhotoOfACat) {
  std::vector<int32_t> expected = {49406, 320, 1125, 539, 320, 2368, 49407};
  expected.resize(77, 49407);
  EXPECT_EQ(ClipTokenizer::builtin().encode_padded("a photo of a cat"), expected);
  EXPECT_EQ(ClipTokenizer::builtin().encode("a photo of a cat"), (std::vector<int32_t>{320, 1125, 539, 320, 2368}));
}

TEST(ClipTokenizer, BuiltinVocabularyAndMergesMatchTheReference) {
  const json& meta = prompts_golden()["meta"];
  ClipTokenizer tok = ClipTokenizer::builtin();
  EXPECT_EQ(tok.vocab_size(), meta["vocab_size"].get<size_t>());
  EXPECT_EQ(tok.num_merges(), meta["num_merges"].get<size_t>());
  std::string lines;
  for (int32_t id = 0; id < static_cast<int32_t>(tok.vocab_size()); ++id) {
    auto token = tok.id_to_token(id);
    ASSERT_TRUE(token) << id;
    lines += std::to_string(id) + "\t" + *token + "\n";
    ASSERT_EQ(tok.token_to_id(*token), id) << show(*token);
  }
  EXPECT_EQ(crc32_of(lines), meta["vocab_crc32"].get<uint32_t>()) << "vocabulary differs from the reference";

  ScratchDir dir("builtin_merges");
  tok.write_dir(dir.path.string());
  std::string merges = read_file(dir.path / "merges.txt");
  ASSERT_EQ(merges.rfind("#version: 0.2\n", 0), 0u);
  EXPECT_EQ(crc32_of(merges.substr(14)), meta["merges_crc32"].get<uint32_t>()) << "merges differ from the reference";

  EXPECT_EQ(tok.bos_id(), 49406);
  EXPECT_EQ(tok.eos_id(), 49407);
  EXPECT_EQ(tok.pad_id(), 49407);
  EXPECT_EQ(tok.unk_id(), 49407);
  EXPECT_EQ(tok.model_max_length(), 77);
  // Added tokens and their flags as transformers resolves the SD 1.5 hub files.
  ASSERT_EQ(tok.added_tokens().size(), meta["added_tokens"].size());
  for (const json& want : meta["added_tokens"]) {
    auto it = std::find_if(tok.added_tokens().begin(), tok.added_tokens().end(),
                           [&](const ClipAddedToken& t) { return t.content == want["content"]; });
    ASSERT_NE(it, tok.added_tokens().end()) << want.dump();
    EXPECT_EQ(it->id, want["id"].get<int32_t>());
    EXPECT_EQ(it->normalized, want["normalized"].get<bool>()) << want.dump();
    EXPECT_EQ(it->lstrip, want["lstrip"].get<bool>());
    EXPECT_EQ(it->rstrip, want["rstrip"].get<bool>());
    EXPECT_EQ(it->single_word, want["single_word"].get<bool>());
  }
}

// ---- golden prompts ----------------------------------------------------------------------------------

TEST(ClipTokenizer, GoldenPromptsGiveTheReferenceIds) {
  const json& cases = prompts_golden()["cases"];
  ClipTokenizer tok = ClipTokenizer::builtin();
  size_t same = 0, truncated = 0;
  for (const json& c : cases) {
    const std::string prompt = c["prompt"];
    ClipEncoding e = tok.encode_prompt(prompt);
    const auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(e.ids, want) << "prompt " << show(prompt);
    EXPECT_EQ(e.num_content_tokens, c["n"].get<int32_t>()) << show(prompt);
    EXPECT_EQ(e.truncated, c.contains("dropped")) << show(prompt);
    if (c.contains("dropped")) {
      ++truncated;
      EXPECT_EQ(e.truncated_text, c["dropped"].get<std::string>()) << show(prompt);
    }
    same += e.ids == want;
  }
  EXPECT_GE(cases.size(), 2000u);
  EXPECT_EQ(same, cases.size());
  std::printf("[ golden   ] %zu/%zu prompts give the reference ids (%zu truncated)\n", same, cases.size(), truncated);
}

TEST(ClipTokenizer, ThreadsShareTheCache) {
  const json& cases = prompts_golden()["cases"];
  ClipTokenizer tok = ClipTokenizer::from_dir([] {
    static ScratchDir dir("threads");
    ClipTokenizer::builtin().write_dir(dir.path.string());
    return dir.path.string();
  }());  // a fresh tokenizer, so the threads fill its cache together
  std::vector<std::thread> threads;
  std::vector<size_t> bad(4, 0);
  for (size_t t = 0; t < bad.size(); ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < cases.size(); i += 2)
        bad[t] += tok.encode_padded(cases[i]["prompt"].get<std::string>()) != cases[i]["ids"].get<std::vector<int32_t>>();
    });
  for (auto& th : threads) th.join();
  for (size_t b : bad) EXPECT_EQ(b, 0u);
}

// The per-word BPE cache stays within its byte limit however many distinct words it sees, and the
// ids do not change when it is emptied: the builtin tokenizer's data with a 64 KiB cache against
// builtin() itself (default limit), on the golden prompts and 20,000 made-up words, twice.
TEST(ClipTokenizer, CacheStaysWithinItsLimitAndChangesNoIds) {
  ScratchDir dir("cache");
  const ClipTokenizer reference = ClipTokenizer::builtin();
  reference.write_dir(dir.path.string());
  ClipTokenizer::Impl impl;
  impl.cache_limit_bytes = 64 << 10;
  std::unordered_map<std::string, int32_t> vocab;
  const json vocab_json = json::parse(read_file(dir.path / "vocab.json"));
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) vocab[it.key()] = it.value().get<int32_t>();
  impl.set_vocab(std::move(vocab));
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream lines(read_file(dir.path / "merges.txt"));
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("#version", 0) != 0) merges.emplace_back(line.substr(0, line.find(' ')), line.substr(line.find(' ') + 1));
  impl.set_merges(std::move(merges), [](size_t i) { return "merge " + std::to_string(i); });
  // Plain special tokens: the texts below have none, so their flags play no part.
  ClipAddedToken sot, eot;
  sot.content = "<|startoftext|>";
  eot.content = "<|endoftext|>";
  impl.set_special_tokens({{"bos_token", sot}, {"eos_token", eot}, {"unk_token", eot}, {"pad_token", eot}}, "test");

  std::vector<std::string> texts;
  for (const auto& c : prompts_golden()["cases"]) {
    std::string prompt = c["prompt"].get<std::string>();
    if (prompt.find("<|") == std::string::npos && find_invalid_utf8(prompt) == std::string::npos) texts.push_back(prompt);
  }
  uint64_t state = 12345;
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (int i = 0; i < 20000; ++i) {
    std::string word;
    for (int n = 2 + i % 40; n > 0; --n) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      word += alphabet[(state >> 33) % 36];
    }
    texts.push_back(word);
  }
  size_t largest = 0, emptied = 0, before = 0;
  for (int round = 0; round < 2; ++round)
    for (const std::string& text : texts) {
      ASSERT_EQ(impl.encode(text), reference.encode(text)) << show(text);
      largest = std::max(largest, impl.cache_bytes);
      emptied += impl.cache_bytes < before;
      before = impl.cache_bytes;
    }
  EXPECT_LE(largest, impl.cache_limit_bytes);
  EXPECT_GT(largest, impl.cache_limit_bytes / 2);
  EXPECT_GE(emptied, 10u);  // full many times over, and the ids stayed the same
}

// ---- framing -------------------------------------------------------------------------------------

TEST(ClipTokenizer, TruncationKeepsTheFirst75Tokens) {
  ClipTokenizer tok = ClipTokenizer::builtin();
  std::string prompt;
  for (int i = 0; i < 75; ++i) prompt += "a ";
  ClipEncoding exact = tok.encode_prompt(prompt);
  EXPECT_FALSE(exact.truncated);
  EXPECT_EQ(exact.num_content_tokens, 75);
  EXPECT_EQ(exact.ids[75], 320);
  EXPECT_EQ(exact.ids[76], 49407);

  ClipEncoding over = tok.encode_prompt(prompt + "photo of a cat");
  EXPECT_TRUE(over.truncated);
  EXPECT_EQ(over.num_content_tokens, 79);
  EXPECT_EQ(over.ids, exact.ids);
  EXPECT_EQ(over.truncated_text, "photo of a cat");

  // Other lengths: the same prefix, then eos and padding.
  std::vector<int32_t> ten = tok.encode_padded("a photo of a cat, a photo of a dog", 10);
  EXPECT_EQ(ten, (std::vector<int32_t>{49406, 320, 1125, 539, 320, 2368, 267, 320, 1125, 49407}));
  EXPECT_EQ(tok.encode_padded("", 2), (std::vector<int32_t>{49406, 49407}));
  EXPECT_THROW(tok.encode_padded("a", 1), InputError);
  EXPECT_THROW(tok.encode_padded("a", (1 << 20) + 1), InputError);
  EXPECT_EQ(tok.decode({320, 1125, 539}), "a photo of");
}

// ---- invalid UTF-8 -----------------------------------------------------------------------------------

TEST(ClipTokenizer, InvalidUtf8IsAnInputErrorNamingTheByte) {
  ClipTokenizer tok = ClipTokenizer::builtin();
  const std::pair<std::string, size_t> bad[] = {
      {"abc\xff", 3},                   // never valid
      {"\xc3\x28", 0},                  // lead byte without continuation
      {"ok \xe2\x82", 3},               // truncated at the end
      {"\xc0\xaf", 0},                  // overlong '/'
      {"x\xed\xa0\x80", 1},             // UTF-16 surrogate
      {"\xf4\x90\x80\x80", 0},          // past U+10FFFF
      {"caf\xc3\xa9 \x80", 6},          // stray continuation byte after valid text
  };
  for (const auto& [text, offset] : bad) {
    try {
      tok.encode_padded(text);
      ADD_FAILURE() << "accepted " << show(std::string(text.begin(), text.end()));
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("offset " + std::to_string(offset)), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
  // NUL and control characters are text (the reference gives them byte tokens).
  EXPECT_EQ(tok.encode(std::string("a\0b", 3)), (std::vector<int32_t>{320, 444, 321}));
}

// The fuzz target's seeds: each tokenizes, or fails with the one-line error its manifest names.
TEST(ClipTokenizer, FuzzSeedsTokenizeOrFailAsListed) {
  const json manifest = json::parse(read_file(kFuzzSeeds / "MANIFEST.json"));
  ASSERT_GE(manifest.size(), 5u);
  ClipTokenizer tok = ClipTokenizer::builtin();
  for (const auto& [name, expected] : manifest.items()) {
    std::string text = read_file(kFuzzSeeds / name);
    ASSERT_FALSE(text.empty()) << name;
    try {
      ClipEncoding e = tok.encode_prompt(text);
      EXPECT_TRUE(expected.is_null()) << name << " was accepted";
      EXPECT_EQ(e.ids.size(), 77u);
    } catch (const InputError& err) {
      ASSERT_TRUE(expected.is_string()) << name << ": " << err.what();
      EXPECT_NE(std::string(err.what()).find(expected.get<std::string>()), std::string::npos) << err.what();
    }
  }
}

// ---- the text pipeline, code point by code point -------------------------------------------------------

TEST(ClipTokenizerUnicode, EveryCodePointAsTheReference) {
  const json probe = json::parse(read_gz(kGolden / "unicode.json.gz"));
  std::vector<char> klass(0x110000, '?');
  const json& runs = probe["classes"];
  for (size_t i = 0; i < runs.size(); ++i) {
    int first = runs[i][0], last = i + 1 < runs.size() ? runs[i + 1][0].get<int>() : 0x110000;
    char k = runs[i][1].get<std::string>()[0];
    std::fill(klass.begin() + first, klass.begin() + last, k);
  }
  const json& singles = probe["singles"];
  const json& reorder = probe["reorder"];
  size_t bad_class = 0, bad_single = 0, bad_reorder = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp < 0xE000) continue;
    std::string c;
    append_utf8(c, cp);
    // Class as the CLIP split sees it: glued to a letter, then to a punctuation mark.
    std::string after_letter = "x" + c, after_punct = "!" + c;
    auto a = clip_text::pre_tokenize(after_letter), b = clip_text::pre_tokenize(after_punct);
    char k = a.size() == 1 && b.size() == 1 ? (a[0] == "x" && b[0] == "!" ? 'S' : '?')
             : a.size() == 1                ? 'L'
             : b.size() == 1                ? 'O'
                                            : 'N';
    if (k != klass[cp] && ++bad_class <= 10) ADD_FAILURE() << "class of U+" << std::hex << static_cast<uint32_t>(cp) << ": " << k << " vs " << klass[cp];

    std::string normalized = clip_text::normalize(c);
    auto it = singles.find(std::to_string(cp));
    std::string want = it == singles.end() ? c : it->get<std::string>();
    if (normalized != want && ++bad_single <= 10)
      ADD_FAILURE() << "normalize(U+" << std::hex << static_cast<uint32_t>(cp) << ") = " << show(normalized) << ", reference " << show(want);

    std::string with_mark = clip_text::normalize("a" + c + "\u0334");
    auto r = reorder.find(std::to_string(cp));
    std::string want_mark = r == reorder.end() ? "a" + want + "\u0334" : r->get<std::string>();
    if (with_mark != want_mark && ++bad_reorder <= 10)
      ADD_FAILURE() << "normalize(a U+" << std::hex << static_cast<uint32_t>(cp) << " U+0334) = " << show(with_mark) << ", reference " << show(want_mark);
  }
  EXPECT_EQ(bad_class, 0u);
  EXPECT_EQ(bad_single, 0u);
  EXPECT_EQ(bad_reorder, 0u);

  size_t bad_sequence = 0;
  for (const json& s : probe["sequences"]) {
    std::string got = clip_text::normalize(s[0].get<std::string>());
    if (got != s[1].get<std::string>() && ++bad_sequence <= 10)
      ADD_FAILURE() << "normalize(" << show(s[0]) << ") = " << show(got) << ", reference " << show(s[1]);
  }
  EXPECT_EQ(bad_sequence, 0u) << "of " << probe["sequences"].size();
}

// ---- tokenizer folders ---------------------------------------------------------------------------------

TEST(ClipTokenizerFolder, WriteThenReadGivesTheSameTokenizer) {
  ScratchDir dir("roundtrip");
  ClipTokenizer::builtin().write_dir(dir.path.string());
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_TRUE(fs::is_regular_file(dir.path / f)) << f;
  ClipTokenizer read = ClipTokenizer::from_dir(dir.path.string());
  EXPECT_TRUE(read == ClipTokenizer::builtin());
  const json& cases = prompts_golden()["cases"];
  for (size_t i = 0; i < cases.size(); i += 7)
    EXPECT_EQ(read.encode_padded(cases[i]["prompt"]), cases[i]["ids"].get<std::vector<int32_t>>()) << show(cases[i]["prompt"]);
}

// Folders with other layouts (configs of the transformers-4 era, SD 2, odd flags, a toy vocabulary):
// the ids transformers gives on each.
TEST(ClipTokenizerFolder, VariantsGiveTheReferenceIds) {
  const json variants = json::parse(read_gz(kGolden / "variants" / "variants.json.gz"));
  ScratchDir base("variants_base");
  ClipTokenizer::builtin().write_dir(base.path.string());
  for (const auto& [name, v] : variants.items()) {
    SCOPED_TRACE("variant " + name);
    ScratchDir dir("variant_" + name);
    fs::copy_file(base.path / "vocab.json", dir.path / "vocab.json");
    fs::copy_file(base.path / "merges.txt", dir.path / "merges.txt");
    if (fs::is_directory(kGolden / "variants" / name))
      for (const auto& f : fs::directory_iterator(kGolden / "variants" / name))
        fs::copy_file(f.path(), dir.path / f.path().filename(), fs::copy_options::overwrite_existing);
    ClipTokenizer tok = ClipTokenizer::from_dir(dir.path.string());
    expect_like_reference(tok, v);

    // And what we write of it reads back the same, in either layout.
    ScratchDir again("variant_again_" + name), again_json("variant_again_json_" + name);
    tok.write_dir(again.path.string());
    EXPECT_TRUE(ClipTokenizer::from_dir(again.path.string()) == tok);
    if (tok == ClipTokenizer::builtin()) continue;  // its tokenizer.json round trip is tested below
    tok.write_dir(again_json.path.string(), ClipTokenizer::FolderFormat::TokenizerJson);
    EXPECT_TRUE(ClipTokenizer::from_dir(again_json.path.string()) == tok);
  }
}

// ---- the tokenizer.json layout (transformers 5 save_pretrained) -------------------------------------------

// write_dir(TokenizerJson) of the SD 1.x tokenizer writes the very bytes of transformers' tokenizer.json
// for it, and the files save_pretrained writes; from_dir reads it back to the golden ids (which
// make_tokenizer_json_golden.py checked transformers gives on its own saved folder).
TEST(ClipTokenizerJson, BuiltinWritesWhatTransformersSaves) {
  const json meta = json::parse(read_file(kGoldenJson / "meta.json"));
  ScratchDir dir("json_builtin");
  ClipTokenizer::builtin().write_dir(dir.path.string(), ClipTokenizer::FolderFormat::TokenizerJson);
  std::vector<std::string> files;
  for (const auto& f : fs::directory_iterator(dir.path)) files.push_back(f.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, meta["saved_files"].get<std::vector<std::string>>());
  const std::string written = read_file(dir.path / "tokenizer.json");
  EXPECT_EQ(written.size(), meta["tokenizer_json_bytes"].get<size_t>());
  EXPECT_EQ(crc32_of(written), meta["tokenizer_json_crc32"].get<uint32_t>()) << "tokenizer.json differs from transformers'";
  // Our tokenizer_config.json says what transformers' does, bar its loading-time leftovers.
  json config = json::parse(read_file(dir.path / "tokenizer_config.json"));
  json saved = meta["saved_tokenizer_config"];
  for (const char* leftover : {"is_local", "local_files_only"}) saved.erase(leftover);
  EXPECT_EQ(config, saved);

  ClipTokenizer read = ClipTokenizer::from_dir(dir.path.string());
  EXPECT_TRUE(read == ClipTokenizer::builtin());
  const json& cases = prompts_golden()["cases"];
  ASSERT_EQ(cases.size(), meta["golden_prompts_same_ids"].get<size_t>());
  size_t same = 0;
  for (const json& c : cases) {
    const auto want = c["ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> got = read.encode_padded(c["prompt"]);
    EXPECT_EQ(got, want) << show(c["prompt"]);
    same += got == want;
  }
  std::printf("[ golden   ] tokenizer.json folder: %zu/%zu prompts give the reference ids\n", same, cases.size());
}

// Folders of the tokenizer.json layout as transformers saves them and as met elsewhere (older hub
// files, SD 2's pad "!", flags, configs that override it, other post-processor spellings, a folder
// with both layouts): the ids transformers gives on each.
TEST(ClipTokenizerJson, VariantsGiveTheReferenceIds) {
  const json variants = json::parse(read_gz(kGoldenJson / "variants.json.gz"));
  ASSERT_GE(variants.size(), 10u);
  ScratchDir base("json_variants_base"), base_vocab("json_variants_base_vocab");
  ClipTokenizer::builtin().write_dir(base.path.string(), ClipTokenizer::FolderFormat::TokenizerJson);
  ClipTokenizer::builtin().write_dir(base_vocab.path.string());
  const json base_doc = json::parse(read_file(base.path / "tokenizer.json"));
  for (const auto& [name, v] : variants.items()) {
    SCOPED_TRACE("variant " + name);
    ScratchDir dir("json_variant_" + name);
    const fs::path own = kGoldenJson / name;
    if (v["layout"] == "vocab.json" || v["sd_vocab_files"].get<bool>())
      for (const char* f : {"vocab.json", "merges.txt"}) fs::copy_file(base_vocab.path / f, dir.path / f);
    if (v["layout"] == "tokenizer.json" && !fs::exists(own / "tokenizer.json"))
      write_text(dir.path / "tokenizer.json", apply_patch(base_doc, v["patch"]).dump(2));
    if (fs::is_directory(own))
      for (const auto& f : fs::directory_iterator(own))
        fs::copy_file(f.path(), dir.path / f.path().filename(), fs::copy_options::overwrite_existing);
    ClipTokenizer tok = ClipTokenizer::from_dir(dir.path.string());
    expect_like_reference(tok, v);

    if (tok == ClipTokenizer::builtin()) continue;  // its round trip is BuiltinWritesWhatTransformersSaves
    ScratchDir again("json_variant_again_" + name);
    tok.write_dir(again.path.string(), ClipTokenizer::FolderFormat::TokenizerJson);
    EXPECT_TRUE(ClipTokenizer::from_dir(again.path.string()) == tok);
  }
}

// Special tokens in prompts (issue 15): upper and mixed case, beside spaces and punctuation, inside
// words, repeated, cut short, in other scripts, in folders whose configs define <|startoftext|> and
// <|endoftext|> in many ways (tools/golden/make_tokenizer_special_golden.py). Each folder's token flags
// and every prompt's ids are what transformers 5.24 makes of them.
TEST(ClipTokenizerSpecialTokens, CaseSpacesAndFlagsAsTheReference) {
  const json golden = json::parse(read_gz(kGolden / "special_tokens.json.gz"));
  const json& prompts = golden["prompts"];
  ASSERT_GE(prompts.size(), 60u);
  ASSERT_GE(golden["folders"].size(), 40u);
  ScratchDir base("special_base"), base_json("special_base_json");
  ClipTokenizer::builtin().write_dir(base.path.string());
  ClipTokenizer::builtin().write_dir(base_json.path.string(), ClipTokenizer::FolderFormat::TokenizerJson);
  const json base_doc = json::parse(read_file(base_json.path / "tokenizer.json"));
  size_t same = 0, total = 0;
  for (const json& folder : golden["folders"]) {
    const std::string name = folder["name"];
    SCOPED_TRACE("folder " + name);
    ScratchDir dir("special_" + name);
    if (folder["layout"] == "vocab_merges") {
      for (const char* f : {"vocab.json", "merges.txt"}) fs::copy_file(base.path / f, dir.path / f);
    } else {
      json doc = base_doc;
      doc["added_tokens"] = folder["added_tokens"];
      write_text(dir.path / "tokenizer.json", doc.dump(2));
    }
    for (const auto& [file, content] : folder["files"].items())
      write_text(dir.path / file, content.is_string() ? content.get<std::string>() : content.dump(2));
    ClipTokenizer tok = ClipTokenizer::from_dir(dir.path.string());
    for (const auto& [token, flags] : folder["flags"].items()) {
      const std::string content = token;  // a lambda may not capture a structured binding (clang 14)
      auto it = std::find_if(tok.added_tokens().begin(), tok.added_tokens().end(),
                             [&](const ClipAddedToken& t) { return t.content == content; });
      ASSERT_NE(it, tok.added_tokens().end()) << content;
      EXPECT_EQ((std::vector<bool>{it->normalized, it->lstrip, it->rstrip, it->single_word}),
                flags.get<std::vector<bool>>())
          << content << " (normalized, lstrip, rstrip, single_word)";
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto want = folder["ids"][i].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok.encode_padded(prompts[i]);
      EXPECT_EQ(got, want) << show(prompts[i]);
      same += got == want;
      ++total;
    }
  }
  std::printf("[ golden   ] special tokens: %zu/%zu (folder, prompt) pairs give the reference ids\n", same, total);
}

// A folder rewritten in the other layout reads as the new one: the file that readers would prefer
// (tokenizer.json) or merge in (special_tokens_map.json) does not survive.
TEST(ClipTokenizerJson, RewritingInTheOtherLayoutLeavesNoStaleFile) {
  ScratchDir dir("json_relayout");
  ClipTokenizer tiny = ClipTokenizer::from_dir((kGoldenJson / "both_layouts").string());
  ClipTokenizer::builtin().write_dir(dir.path.string());
  tiny.write_dir(dir.path.string(), ClipTokenizer::FolderFormat::TokenizerJson);
  EXPECT_FALSE(fs::exists(dir.path / "special_tokens_map.json"));
  EXPECT_TRUE(ClipTokenizer::from_dir(dir.path.string()) == tiny);
  ClipTokenizer::builtin().write_dir(dir.path.string());
  EXPECT_FALSE(fs::exists(dir.path / "tokenizer.json"));
  EXPECT_TRUE(ClipTokenizer::from_dir(dir.path.string()) == ClipTokenizer::builtin());
}

// Each folder of tests/data/malformed/tokenizer must be refused with one line that says where.
TEST(ClipTokenizerFolder, MalformedFoldersAreInputErrors) {
  const json manifest = json::parse(read_file(kMalformed / "MANIFEST.json"));
  ASSERT_GE(manifest.size(), 10u);
  for (const auto& [name, expected] : manifest.items()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(fs::is_directory(kMalformed / name)) << name;
    try {
      ClipTokenizer::from_dir((kMalformed / name).string());
      ADD_FAILURE() << name << " was accepted";
    } catch (const InputError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(expected.get<std::string>()), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(ClipTokenizer::from_dir((kMalformed / "no_such_folder").string()), InputError);
}
