// Tokenizer folders: ClipTokenizer::from_dir reads one, write_dir writes one (from_files and
// to_files: the same on the files held in memory; from_dir and write_dir only add the file I/O).
//
// A diffusers model keeps its tokenizer in tokenizer/: vocab.json (token → id), merges.txt
// ("#version" lines, then one merge "left right" per line, by rank) and, optionally,
// tokenizer_config.json and special_tokens_map.json (special tokens, model_max_length). We read
// them as transformers 5.24 + tokenizers 0.23.3 do, so that one folder gives one set of ids:
//   - merges.txt: every line that is not "#version…" is a merge (no cut at 48,894, unlike the slow
//     tokenizer); a line must split on ' ' into exactly two fields; CRLF endings are accepted. A
//     merge's halves and its result must be in vocab.json. A pair given twice keeps its last rank.
//   - Special tokens: CLIPTokenizer's defaults (bos <|startoftext|>, eos = unk = pad
//     <|endoftext|>), then tokenizer_config.json's, then (only when that file has no
//     added_tokens_decoder) special_tokens_map.json's. A plain string is a token matched verbatim;
//     an AddedToken object carries its flags. Where several names share one content (eos, unk, pad),
//     the last one in the order bos, eos, unk, sep, pad, cls, mask, extras sets the flags: so in
//     the SD 1.5 hub files <|startoftext|> is `normalized` (its dict says so) but <|endoftext|> is
//     not (pad_token, a plain string, comes after eos_token and unk_token).
//   - model_max_length: 77 when absent or transformers' "unbounded" 1e30.
//   - tokenizer.json, when present, replaces vocab.json and merges.txt (transformers 5.24 takes the
//     vocabulary and merges from it even when both are there), and unless tokenizer_config.json
//     has an added_tokens_decoder its "added_tokens" play that part: their flags win over those
//     that named tokens have in the configs. clip_tokenizer_json.cpp reads it and refuses a file
//     that describes another pipeline than CLIP's.
//   - A token named in additional_special_tokens/extra_special_tokens that added_tokens_decoder (or
//     tokenizer.json) already defines keeps that definition's flags: transformers adds it only once.
// transformers 5.24 save_pretrained writes tokenizer.json and tokenizer_config.json only (bos, eos,
// unk and pad as plain strings, the flags in tokenizer.json); write_dir(TokenizerJson) does the same.
// We are stricter than the reference on garbage: vocab values must be non-negative integers
// (tokenizers skips non-numbers), and any unreadable or mistyped entry is an InputError naming the
// file and the line, key or JSON path.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/config_json.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"
#include "text/clip_tokenizer_internal.h"
#include "text/clip_tokenizer_json.h"

namespace sdmpi {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- helpers shared with clip_tokenizer_json.cpp ----------------------------------------------------

namespace clip_files {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open (" + std::strerror(errno) + ")");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw InputError(path.string() + ": read error");
  return buffer.str();
}

json parse_json_text(const fs::path& path, const std::string& text) {
  try {
    return parse_config_json(text, path.string());
  } catch (const ConfigJsonError& e) {
    throw InputError(path.string() + ": malformed JSON" + e.detail());
  }
}

ClipAddedToken added_token_from_object(const json& o, bool special_forced, const std::string& where) {
  ClipAddedToken t;
  auto it = o.find("content");
  if (it == o.end() || !it->is_string()) throw InputError(where + ": an added token needs a string \"content\"");
  t.content = it->get<std::string>();
  auto flag = [&](const char* key, bool fallback) {
    auto f = o.find(key);
    if (f == o.end() || f->is_null()) return fallback;
    if (!f->is_boolean()) throw InputError(where + ": \"" + key + "\" must be true or false, got " + f->dump());
    return f->get<bool>();
  };
  t.special = special_forced ? true : flag("special", false);
  t.lstrip = flag("lstrip", false);
  t.rstrip = flag("rstrip", false);
  t.single_word = flag("single_word", false);
  t.normalized = flag("normalized", !t.special);
  return t;
}

void write_file(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(tmp.string() + ": cannot create (" + std::strerror(errno) + ")");
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    if (!out) {
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw Error(tmp.string() + ": write failed (" + std::strerror(errno) + ")");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Error(path.string() + ": cannot rename the temporary file: " + ec.message());
}

}  // namespace clip_files

namespace {

using Named = ClipTokenizer::Impl::Named;
using clip_files::added_token_from_object;
using clip_files::read_file;
using clip_files::write_file;

// A file of the folder: its contents from `files`, named `label`/NAME in messages.
struct FolderFiles {
  const ClipTokenizer::Files& files;
  fs::path label;
  const std::string* find(const char* name) const {
    auto it = files.find(name);
    return it == files.end() ? nullptr : &it->second;
  }
  fs::path path(const char* name) const { return label / name; }
};

constexpr const char* kNamedKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                      "pad_token", "cls_token", "mask_token"};
constexpr int kDefaultMaxLength = 77;
constexpr double kUnboundedMaxLength = 1e6;  // transformers writes int(1e30) for "no limit"

size_t line_of_key(const std::string& text, const std::string& key) {
  // Best effort for messages: the line where the key's JSON string first appears.
  std::string quoted = json(key).dump();
  size_t at = text.find(quoted);
  return at == std::string::npos ? 0 : 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
}

std::unordered_map<std::string, int32_t> read_vocab(const fs::path& path, const std::string& text) {
  json j = clip_files::parse_json_text(path, text);
  if (!j.is_object()) throw InputError(path.string() + ": expected a JSON object of token → id, got " + j.type_name());
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const json& v = it.value();
    bool ok = (v.is_number_unsigned() || v.is_number_integer()) && v.get<int64_t>() >= 0 &&
              v.get<int64_t>() <= INT32_MAX;
    if (!ok) {
      std::string where = path.string();
      if (size_t line = line_of_key(text, it.key())) where += ":" + std::to_string(line);
      throw InputError(where + ": token " + json(it.key()).dump() + " has id " + v.dump() +
                       ", expected an integer in 0.." + std::to_string(INT32_MAX));
    }
    vocab[it.key()] = static_cast<int32_t>(v.get<int64_t>());
  }
  if (vocab.empty()) throw InputError(path.string() + ": the vocabulary is empty");
  return vocab;
}

struct MergesFile {
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<size_t> line_of;  // 1-based line of each merge
};

MergesFile read_merges(const fs::path& path, const std::string& text) {
  MergesFile m;
  size_t pos = 0, line = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view l(text.data() + pos, end - pos);
    pos = end + 1;
    ++line;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    size_t bad = find_invalid_utf8(l);
    if (bad != std::string_view::npos)
      throw InputError(path.string() + ":" + std::to_string(line) + ": invalid UTF-8 at byte " + std::to_string(bad + 1));
    if (l.substr(0, 8) == "#version") continue;
    size_t space = l.find(' ');
    if (space == std::string_view::npos || l.find(' ', space + 1) != std::string_view::npos) {
      size_t fields = 1 + static_cast<size_t>(std::count(l.begin(), l.end(), ' '));
      // The first 60 bytes may end inside a UTF-8 sequence: dump() shows that as U+FFFD instead of
      // throwing (found by tokenizer_files_fuzz).
      std::string shown(l.substr(0, 60));
      throw InputError(path.string() + ":" + std::to_string(line) + ": a merge is two tokens separated by one space, got " +
                       std::to_string(fields) + " field" + (fields == 1 ? "" : "s") + ": " +
                       json(shown).dump(-1, ' ', false, json::error_handler_t::replace));
    }
    m.merges.emplace_back(std::string(l.substr(0, space)), std::string(l.substr(space + 1)));
    m.line_of.push_back(line);
  }
  return m;
}

ClipAddedToken plain_token(const std::string& content) {
  ClipAddedToken t;
  t.content = content;
  return t;  // special, matched verbatim, no stripping
}

// A special token as transformers holds it before handing it to tokenizers: a Python str (`plain`)
// or an AddedToken. The two kinds never compare equal; two AddedTokens are equal when content and
// every flag are (tokenizers' AddedToken.__eq__), two strs when their text is.
struct Candidate {
  ClipAddedToken token;
  bool plain = false;
  bool operator==(const Candidate& o) const {
    return plain == o.plain && (plain ? token.content == o.token.content : token == o.token);
  }
};
Candidate plain_candidate(const std::string& content) { return Candidate{plain_token(content), true}; }

// A special-token value of tokenizer_config.json: a string, or an object with "__type":
// "AddedToken" (transformers refuses other objects).
std::optional<Candidate> config_token(const json& v, const std::string& where) {
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return plain_candidate(v.get<std::string>());
  if (v.is_object()) {
    auto type = v.find("__type");
    if (type == v.end() || *type != "AddedToken")
      throw InputError(where + ": an object here needs \"__type\": \"AddedToken\" (transformers rejects it otherwise)");
    return Candidate{added_token_from_object(v, false, where), false};
  }
  throw InputError(where + ": expected a string or an AddedToken object, got " + v.dump());
}

std::vector<Candidate> token_list(const json& v, bool special_forced, const std::string& where) {
  if (!v.is_array()) throw InputError(where + ": expected a list of tokens, got " + std::string(v.type_name()));
  std::vector<Candidate> out;
  for (size_t i = 0; i < v.size(); ++i) {
    std::string w = where + "[" + std::to_string(i) + "]";
    if (v[i].is_string()) out.push_back(plain_candidate(v[i].get<std::string>()));
    else if (v[i].is_object() && special_forced) out.push_back(Candidate{added_token_from_object(v[i], true, w), false});
    else if (auto t = config_token(v[i], w)) out.push_back(*t);
  }
  return out;
}

json added_token_json(const ClipAddedToken& t, bool with_type) {
  json o = json::object();
  if (with_type) o["__type"] = "AddedToken";
  o["content"] = t.content;
  o["lstrip"] = t.lstrip;
  o["normalized"] = t.normalized;
  o["rstrip"] = t.rstrip;
  o["single_word"] = t.single_word;
  o["special"] = t.special;
  return o;
}

}  // namespace

ClipTokenizer ClipTokenizer::from_dir(const std::string& tokenizer_dir) {
  const fs::path dir(tokenizer_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw InputError(tokenizer_dir + ": not a tokenizer folder (no such directory)");
  // The vocabulary files count only as regular files; a config that exists but cannot be read
  // (a folder of that name) is an error naming it.
  Files files;
  for (const char* name : {"tokenizer.json", "vocab.json", "merges.txt"})
    if (fs::is_regular_file(dir / name, ec)) files[name] = read_file(dir / name);
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(dir / name, ec)) files[name] = read_file(dir / name);
  return from_files(files, tokenizer_dir);
}

ClipTokenizer ClipTokenizer::from_files(const Files& files, const std::string& tokenizer_dir) {
  const FolderFiles dir{files, fs::path(tokenizer_dir)};
  auto impl = std::make_shared<Impl>();
  impl->model_max_length = kDefaultMaxLength;

  // The vocabulary and merges: tokenizer.json when there is one, as transformers 5.24 prefers it.
  std::optional<clip_files::TokenizerJsonFile> tokenizer_json;
  if (const std::string* json_text = dir.find("tokenizer.json")) {
    const fs::path json_path = dir.path("tokenizer.json");
    tokenizer_json = clip_files::read_tokenizer_json(json_path, *json_text);
    impl->set_vocab(std::move(tokenizer_json->vocab));
    const std::string& where = tokenizer_json->path;
    impl->set_merges(std::move(tokenizer_json->merges),
                     [&](size_t i) { return where + ": model.merges[" + std::to_string(i) + "]"; });
    if (dir.find("vocab.json") || dir.find("merges.txt"))
      log::debug(json_path.string() + ": read in place of vocab.json and merges.txt, as transformers does");
  } else {
    for (const char* name : {"vocab.json", "merges.txt"})
      if (!dir.find(name))
        throw InputError(dir.path(name).string() +
                         ": missing (a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt)");
    impl->set_vocab(read_vocab(dir.path("vocab.json"), *dir.find("vocab.json")));
    MergesFile merges = read_merges(dir.path("merges.txt"), *dir.find("merges.txt"));
    const std::string merges_path = dir.path("merges.txt").string();
    impl->set_merges(std::move(merges.merges),
                     [&](size_t i) { return merges_path + ":" + std::to_string(merges.line_of[i]); });
  }

  // Special tokens, in the order in which transformers hands them to tokenizers (see the top).
  std::vector<std::optional<Candidate>> named(std::size(kNamedKeys));
  named[0] = plain_candidate("<|startoftext|>");
  named[1] = plain_candidate("<|endoftext|>");
  named[2] = plain_candidate("<|endoftext|>");
  named[4] = plain_candidate("<|endoftext|>");
  std::vector<ClipAddedToken> decoder;
  std::vector<Candidate> extras;

  const fs::path config_path = dir.path("tokenizer_config.json");
  const fs::path map_path = dir.path("special_tokens_map.json");
  bool has_decoder = false;
  if (const std::string* config_text = dir.find("tokenizer_config.json")) {
    json cfg = clip_files::parse_json_text(config_path, *config_text);
    const std::string where = config_path.string();
    if (!cfg.is_object()) throw InputError(where + ": expected a JSON object, got " + std::string(cfg.type_name()));
    for (size_t k = 0; k < std::size(kNamedKeys); ++k)
      if (auto it = cfg.find(kNamedKeys[k]); it != cfg.end())
        named[k] = config_token(*it, where + ": \"" + kNamedKeys[k] + "\"");
    for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
      if (auto it = cfg.find(key); it != cfg.end() && !it->is_null())
        for (auto& t : token_list(*it, false, where + ": \"" + key + "\"")) extras.push_back(t);
    if (auto it = cfg.find("added_tokens_decoder"); it != cfg.end() && !it->is_null()) {
      if (!it->is_object()) throw InputError(where + ": \"added_tokens_decoder\" must be an object of id → token");
      has_decoder = true;
      std::vector<std::pair<long, ClipAddedToken>> by_id;
      for (auto e = it->begin(); e != it->end(); ++e) {
        std::string w = where + ": \"added_tokens_decoder\"." + e.key();
        char* end = nullptr;
        long id = std::strtol(e.key().c_str(), &end, 10);
        if (e.key().empty() || *end != '\0' || id < 0) throw InputError(w + ": the key must be a token id");
        if (!e.value().is_object()) throw InputError(w + ": expected an AddedToken object");
        by_id.emplace_back(id, added_token_from_object(e.value(), false, w));
      }
      std::sort(by_id.begin(), by_id.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      for (auto& [id, t] : by_id) decoder.push_back(t);
    }
    if (auto it = cfg.find("model_max_length"); it != cfg.end() && !it->is_null()) {
      const std::string w = where + ": \"model_max_length\"";
      if (!it->is_number()) throw InputError(w + " must be a number, got " + it->dump());
      double v = it->get<double>();
      if (v < kUnboundedMaxLength) {
        if (!(it->is_number_integer() || it->is_number_unsigned()) || v < 2)
          throw InputError(w + " must be an integer >= 2, got " + it->dump());
        impl->model_max_length = static_cast<int>(v);
      }
    }
  }
  const std::string* map_text = dir.find("special_tokens_map.json");
  if (!has_decoder && map_text) {
    json map = clip_files::parse_json_text(map_path, *map_text);
    const std::string where = map_path.string();
    if (!map.is_object()) throw InputError(where + ": expected a JSON object, got " + std::string(map.type_name()));
    for (size_t k = 0; k < std::size(kNamedKeys); ++k) {
      auto it = map.find(kNamedKeys[k]);
      if (it == map.end()) continue;
      const std::string w = where + ": \"" + kNamedKeys[k] + "\"";
      if (it->is_null()) named[k].reset();
      else if (it->is_string()) named[k] = plain_candidate(it->get<std::string>());
      else if (it->is_object()) named[k] = Candidate{added_token_from_object(*it, true, w), false};
      else throw InputError(w + ": expected a string or an object, got " + it->dump());
    }
    for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
      if (auto it = map.find(key); it != map.end() && !it->is_null())
        for (auto& t : token_list(*it, true, where + ": \"" + key + "\""))
          if (std::none_of(extras.begin(), extras.end(), [&](const auto& e) { return e.token.content == t.token.content; }))
            extras.push_back(t);
  }

  // Without an added_tokens_decoder, transformers takes tokenizer.json's added tokens in its place.
  const bool json_added_used = tokenizer_json && !has_decoder;
  if (json_added_used) {
    std::vector<clip_files::TokenizerJsonFile::Added> by_id = tokenizer_json->added;
    std::sort(by_id.begin(), by_id.end(), [](const auto& a, const auto& b) { return a.token.id < b.token.id; });
    for (const auto& a : by_id) decoder.push_back(a.token);
  }

  // transformers swaps a named token for the decoder entry with the same content, and adds an extra
  // special token only when no decoder entry has its content. The others it collects in order,
  // skipping a value equal to one collected before (see Candidate), and tokenizers gives each
  // content the flags of the last one collected: so with eos "<|endoftext|>" (a str), unk an
  // AddedToken and pad "<|endoftext|>" again, unk's flags hold, not those of the plain string.
  auto defined_by_decoder = [&](const ClipAddedToken& t) -> const ClipAddedToken* {
    const ClipAddedToken* found = nullptr;
    for (const ClipAddedToken& d : decoder)
      if (d.content == t.content) found = &d;
    return found;
  };
  std::vector<Named> order;
  std::vector<Candidate> collected;
  // The flags `content` has so far: its last entry in `order`.
  auto current = [&](const std::string& content) {
    auto it = std::find_if(order.rbegin(), order.rend(), [&](const Named& n) { return n.token.content == content; });
    SDMPI_CHECK(it != order.rend(), "a skipped special token was never collected");
    return it->token;
  };
  for (const ClipAddedToken& t : decoder) order.push_back(Named{"added_tokens_decoder", t});
  for (size_t k = 0; k < std::size(kNamedKeys); ++k) {
    if (!named[k]) continue;
    ClipAddedToken t;
    if (const ClipAddedToken* d = defined_by_decoder(named[k]->token)) {
      t = *d;
    } else if (std::find(collected.begin(), collected.end(), *named[k]) != collected.end()) {
      t = current(named[k]->token.content);  // skipped: the name still needs its id
    } else {
      collected.push_back(*named[k]);
      t = named[k]->token;
    }
    t.special = true;  // a named token is special whatever its object says
    order.push_back(Named{kNamedKeys[k], t});
  }
  for (const Candidate& c : extras) {
    if (defined_by_decoder(c.token) || std::find(collected.begin(), collected.end(), c) != collected.end()) continue;
    collected.push_back(c);
    order.push_back(Named{"extra_special_tokens", c.token});
  }
  impl->set_special_tokens(order, tokenizer_dir);
  // Two added tokens with one id (vocab.json giving <|startoftext|> and <|endoftext|> both 0) are
  // refused: transformers 5.24 keeps only one of them in its added-token table, tokenizes the other
  // as text, and what it saves reloads as a third tokenizer; no layout we could write would reload
  // as this one.
  for (size_t i = 0; i < impl->added.size(); ++i)
    for (size_t k = 0; k < i; ++k)
      if (impl->added[k].id == impl->added[i].id) {
        const std::string source = tokenizer_json ? tokenizer_json->path : dir.path("vocab.json").string();
        const std::string id = std::to_string(impl->added[i].id);
        throw InputError(source + ": the added tokens " + json(impl->added[k].content).dump() + " and " +
                         json(impl->added[i].content).dump() + " both get id " + id +
                         "; each special token needs an id of its own (transformers keeps only one of them)");
      }
  if (tokenizer_json) clip_files::check_against(*tokenizer_json, *impl, json_added_used);
  return ClipTokenizer(std::move(impl));
}

void ClipTokenizer::write_dir(const std::string& dir_name) const { write_dir(dir_name, FolderFormat::VocabMerges); }

void ClipTokenizer::write_dir(const std::string& dir_name, FolderFormat format) const {
  const Files files = to_files(format);
  const fs::path dir(dir_name);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(dir_name + ": cannot create the folder: " + ec.message());
  // A file of the other layout that a reader would prefer (tokenizer.json) or merge in
  // (special_tokens_map.json, whose names override tokenizer_config.json's) must not outlive us.
  const char* stale = format == FolderFormat::TokenizerJson ? "special_tokens_map.json" : "tokenizer.json";
  std::error_code rm;
  if (fs::remove(dir / stale, rm)) log::debug((dir / stale).string() + ": removed (stale, of the other folder layout)");
  if (rm) throw Error((dir / stale).string() + ": cannot remove the stale file: " + rm.message());
  // The configs last: a folder cut short by a failure has no config naming tokens it lacks.
  for (const char* name : {"tokenizer.json", "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"})
    if (auto it = files.find(name); it != files.end()) write_file(dir / name, it->second);
}

ClipTokenizer::Files ClipTokenizer::to_files(FolderFormat format) const {
  const Impl& impl = this->impl();
  Files files;
  if (format == FolderFormat::TokenizerJson) {
    // As transformers 5.24 save_pretrained writes it: named tokens as plain strings (their flags are
    // in tokenizer.json's added_tokens), other special tokens under extra_special_tokens.
    json config = json::object();
    config["add_prefix_space"] = false;
    config["backend"] = "tokenizers";
    config["do_lower_case"] = true;
    config["errors"] = "replace";
    config["model_max_length"] = impl.model_max_length;
    config["tokenizer_class"] = "CLIPTokenizer";
    for (const auto& [key, content] : {std::pair<const char*, const std::string*>{"bos_token", &impl.bos},
                                       {"eos_token", &impl.eos}, {"unk_token", &impl.unk}, {"pad_token", &impl.pad}})
      if (!content->empty()) config[key] = *content;
    json extra = json::array();
    for (const ClipAddedToken& t : impl.added)
      if (t.special && t.content != impl.bos && t.content != impl.eos && t.content != impl.unk && t.content != impl.pad)
        extra.push_back(t.content);
    if (!extra.empty()) config["extra_special_tokens"] = extra;
    files["tokenizer.json"] = clip_files::tokenizer_json_text(impl);
    files["tokenizer_config.json"] = config.dump(2) + "\n";
    return files;
  }

  // vocab.json, one entry per line in id order.
  std::vector<std::pair<int32_t, const std::string*>> by_id;
  by_id.reserve(impl.vocab.size());
  for (const auto& [token, id] : impl.vocab) by_id.emplace_back(id, &token);
  std::sort(by_id.begin(), by_id.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first < b.first : *a.second < *b.second; });
  std::string vocab = "{\n";
  for (size_t i = 0; i < by_id.size(); ++i) {
    vocab += "  " + json(*by_id[i].second).dump() + ": " + std::to_string(by_id[i].first);
    vocab += i + 1 < by_id.size() ? ",\n" : "\n";
  }
  vocab += "}\n";

  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : impl.merges) merges += a + " " + b + "\n";

  // Named special tokens with the flags their content resolved to, so that any reader that lets a
  // later name win (or an earlier one) ends with the same flags. No added_tokens_decoder: the
  // legacy layout of the SD 1.5 hub folder, which every transformers version reads.
  auto flags_of = [&](const std::string& content) {
    for (const ClipAddedToken& t : impl.added)
      if (t.content == content) return t;
    return plain_token(content);
  };
  json config = json::object(), map = json::object();
  config["add_prefix_space"] = false;
  config["do_lower_case"] = true;
  config["errors"] = "replace";
  config["model_max_length"] = impl.model_max_length;
  config["tokenizer_class"] = "CLIPTokenizer";
  for (const auto& [key, content] : {std::pair<const char*, const std::string*>{"bos_token", &impl.bos},
                                     {"eos_token", &impl.eos}, {"unk_token", &impl.unk}, {"pad_token", &impl.pad}}) {
    if (content->empty()) continue;
    ClipAddedToken t = flags_of(*content);
    config[key] = added_token_json(t, true);
    map[key] = added_token_json(t, false);
  }
  json extra = json::array(), extra_map = json::array();
  for (const ClipAddedToken& t : impl.added) {
    if (t.content == impl.bos || t.content == impl.eos || t.content == impl.unk || t.content == impl.pad) continue;
    extra.push_back(added_token_json(t, true));
    extra_map.push_back(added_token_json(t, false));
  }
  if (!extra.empty()) {
    config["additional_special_tokens"] = extra;
    map["additional_special_tokens"] = extra_map;
  }

  files["vocab.json"] = std::move(vocab);
  files["merges.txt"] = std::move(merges);
  files["special_tokens_map.json"] = map.dump(2) + "\n";
  files["tokenizer_config.json"] = config.dump(2) + "\n";
  return files;
}

}  // namespace sdmpi
