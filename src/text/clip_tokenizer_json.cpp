// tokenizer.json for the CLIP tokenizer: the `tokenizers` library's one-file serialization, which
// transformers 5 save_pretrained writes instead of vocab.json + merges.txt.
//
// What transformers 5.24 takes from it for a CLIPTokenizer (tokenization_utils_tokenizers.py,
// convert_to_native_format, and tokenization_utils_base.py, _from_pretrained): the model's vocab
// and merges, in place of vocab.json/merges.txt even when those are there too; and, only when
// tokenizer_config.json has no added_tokens_decoder, the "added_tokens" with their flags. Their
// declared ids are not used: each token gets its vocabulary id, or the next free one. Then
// CLIPTokenizer.__init__ builds its own normalizer, pre-tokenizer, post-processor and decoder,
// whatever the file says. We read the same parts, and require the rest to describe that pipeline:
//
//   normalizer      Sequence [NFC, Replace(Regex "\s+" → " "), Lowercase]
//   pre_tokenizer   Sequence [Split(Regex <CLIP's pattern>, Removed, invert), ByteLevel(no prefix space)]
//   model           BPE, end_of_word_suffix "</w>", no continuing_subword_prefix, no dropout,
//                   fuse_unk / byte_fallback / ignore_merges off, unk_token = the unk token
//   post_processor  RobertaProcessing or BertProcessing with cls = bos, sep = eos, or a
//                   TemplateProcessing whose single sequence is bos $A eos
//   decoder         ByteLevel
//   truncation, padding   null (transformers applies them to every call: left padding, say)
//
// A file that describes anything else is refused with an InputError naming the JSON path: for such
// a file transformers 5.24 would tokenize as CLIP while the tokenizers library (and transformers 4)
// would follow the file, and we do neither silently. So is an added token whose declared id is not
// the id it gets. Options that only move offsets (trim_offsets, the decoder's flags) are not checked.
// The writer reproduces tokenizers 0.23.3's formatting, so that the builtin tokenizer's file is
// byte for byte the one transformers writes (tests/unit/clip_tokenizer_test.cpp checks its CRC).
#include "text/clip_tokenizer_json.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "sdmpi/error.h"

namespace sdmpi::clip_files {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

// The patterns as tokenizers serializes CLIP's (JSON-unescaped).
constexpr const char* kClipSplitPattern =
    R"(<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+)";
constexpr const char* kWhitespaceRunPattern = R"(\s+)";
constexpr const char* kEndOfWord = "</w>";

// A JSON value for a one-line message: ASCII only (so cutting it is safe), at most 100 characters.
std::string shown(const json* v) {
  if (!v) return "missing";
  std::string s = v->dump(-1, ' ', true, json::error_handler_t::replace);
  if (s.size() > 100) s = s.substr(0, 97) + "...";
  return s;
}

const json* member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

// "type" of a tokenizers component, or "" when there is none.
std::string type_of(const json* v) {
  const json* t = v ? member(*v, "type") : nullptr;
  return t && t->is_string() ? t->get<std::string>() : std::string();
}

bool absent_or_null(const json* v) { return !v || v->is_null(); }

struct Checker {
  std::string file;

  // Bad data: a wrong type, a missing part, a reference to nothing.
  [[noreturn]] void bad(const std::string& path, const std::string& what) const {
    throw InputError(file + ": " + path + ": " + what);
  }
  // Well-formed, but not the CLIP tokenizer.
  [[noreturn]] void not_clip(const std::string& path, const json* got, const std::string& clip) const {
    throw InputError(file + ": " + path + " is " + shown(got) + " where the CLIP tokenizer has " + clip +
                     " (only CLIP's pipeline is supported; refused rather than tokenized differently)");
  }
  void expect_type(const std::string& path, const json* v, const char* type) const {
    if (type_of(v) != type) not_clip(path + (v && v->is_object() ? ".type" : ""), v && v->is_object() ? member(*v, "type") : v,
                                     std::string("\"") + type + "\"");
  }
  const json& expect_list(const std::string& path, const json* v, size_t size, const std::string& clip) const {
    if (!v || !v->is_array() || v->size() != size) not_clip(path, v, clip);
    return *v;
  }
  void expect_equal(const std::string& path, const json* v, const json& clip) const {
    if (!v || *v != clip) not_clip(path, v, clip.dump());
  }
  // A boolean option that CLIP leaves off (absent or null mean off).
  void expect_off(const std::string& path, const json* v) const {
    if (!absent_or_null(v) && *v != false) not_clip(path, v, "false");
  }
};

void check_normalizer(const Checker& c, const json& doc) {
  const json* n = member(doc, "normalizer");
  c.expect_type("normalizer", n, "Sequence");
  const json& steps = c.expect_list("normalizer.normalizers", member(*n, "normalizers"), 3, "[NFC, Replace, Lowercase]");
  c.expect_type("normalizer.normalizers[0]", &steps[0], "NFC");
  c.expect_type("normalizer.normalizers[1]", &steps[1], "Replace");
  c.expect_equal("normalizer.normalizers[1].pattern", member(steps[1], "pattern"), json{{"Regex", kWhitespaceRunPattern}});
  c.expect_equal("normalizer.normalizers[1].content", member(steps[1], "content"), " ");
  c.expect_type("normalizer.normalizers[2]", &steps[2], "Lowercase");
}

void check_pre_tokenizer(const Checker& c, const json& doc) {
  const json* p = member(doc, "pre_tokenizer");
  c.expect_type("pre_tokenizer", p, "Sequence");
  const json& steps = c.expect_list("pre_tokenizer.pretokenizers", member(*p, "pretokenizers"), 2, "[Split, ByteLevel]");
  const std::string split = "pre_tokenizer.pretokenizers[0]", byte_level = "pre_tokenizer.pretokenizers[1]";
  c.expect_type(split, &steps[0], "Split");
  c.expect_equal(split + ".pattern", member(steps[0], "pattern"), json{{"Regex", kClipSplitPattern}});
  c.expect_equal(split + ".behavior", member(steps[0], "behavior"), "Removed");
  c.expect_equal(split + ".invert", member(steps[0], "invert"), true);
  c.expect_type(byte_level, &steps[1], "ByteLevel");
  c.expect_equal(byte_level + ".add_prefix_space", member(steps[1], "add_prefix_space"), false);
  if (const json* r = member(steps[1], "use_regex"); r && *r != true) c.not_clip(byte_level + ".use_regex", r, "true");
}

void check_decoder(const Checker& c, const json& doc) { c.expect_type("decoder", member(doc, "decoder"), "ByteLevel"); }

std::unordered_map<std::string, int32_t> read_vocab(const Checker& c, const json& model) {
  const json* v = member(model, "vocab");
  if (!v) c.bad("model.vocab", "missing");
  if (!v->is_object()) c.bad("model.vocab", std::string("expected an object of token → id, got ") + v->type_name());
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(v->size());
  for (auto it = v->begin(); it != v->end(); ++it) {
    const json& id = it.value();
    bool ok = (id.is_number_unsigned() || id.is_number_integer()) && id.get<int64_t>() >= 0 && id.get<int64_t>() <= INT32_MAX;
    if (!ok)
      c.bad("model.vocab[" + json(it.key()).dump() + "]",
            "token has id " + shown(&id) + ", expected an integer in 0.." + std::to_string(INT32_MAX));
    vocab[it.key()] = static_cast<int32_t>(id.get<int64_t>());
  }
  if (vocab.empty()) c.bad("model.vocab", "the vocabulary is empty");
  return vocab;
}

// Merges in either form tokenizers has written: "left right" (before 0.20) or ["left", "right"].
std::vector<std::pair<std::string, std::string>> read_merges(const Checker& c, const json& model,
                                                             const std::unordered_map<std::string, int32_t>& vocab) {
  const json* m = member(model, "merges");
  if (!m) c.bad("model.merges", "missing");
  if (!m->is_array()) c.bad("model.merges", std::string("expected a list of merges, got ") + m->type_name());
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(m->size());
  for (size_t i = 0; i < m->size(); ++i) {
    const json& e = (*m)[i];
    const std::string path = "model.merges[" + std::to_string(i) + "]";
    std::string left, right;
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        size_t fields = 1 + static_cast<size_t>(std::count(s.begin(), s.end(), ' '));
        c.bad(path, "a merge is two tokens separated by one space, got " + std::to_string(fields) + " field" +
                        (fields == 1 ? "" : "s") + ": " + shown(&e));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (e.is_array()) {
      if (e.size() != 2 || !e[0].is_string() || !e[1].is_string())
        c.bad(path, "a merge is a pair of two token strings, got " + shown(&e));
      left = e[0].get<std::string>();
      right = e[1].get<std::string>();
    } else {
      c.bad(path, "expected \"left right\" or [\"left\", \"right\"], got " + shown(&e));
    }
    // Quoted as JSON: a token may hold a line break.
    const std::string merge = "merge " + json(left + " " + right).dump() + ": ";
    const std::string* missing = !vocab.count(left) ? &left : !vocab.count(right) ? &right : nullptr;
    if (missing) c.bad(path, merge + json(*missing).dump() + " is not in model.vocab");
    if (!vocab.count(left + right)) c.bad(path, merge + "its result " + json(left + right).dump() + " is not in model.vocab");
    merges.emplace_back(std::move(left), std::move(right));
  }
  return merges;
}

void check_model_options(const Checker& c, const json& model, TokenizerJsonFile& out) {
  if (const json* t = member(model, "type"); t && *t != "BPE") c.not_clip("model.type", t, "\"BPE\"");
  if (const json* d = member(model, "dropout"); !absent_or_null(d) && !(d->is_number() && d->get<double>() == 0.0))
    c.not_clip("model.dropout", d, "null (no dropout)");
  if (const json* p = member(model, "continuing_subword_prefix"); !absent_or_null(p) && *p != "")
    c.not_clip("model.continuing_subword_prefix", p, "\"\"");
  c.expect_equal("model.end_of_word_suffix", member(model, "end_of_word_suffix"), kEndOfWord);
  for (const char* key : {"fuse_unk", "byte_fallback", "ignore_merges"})
    c.expect_off(std::string("model.") + key, member(model, key));
  if (const json* u = member(model, "unk_token"); !absent_or_null(u)) {
    if (!u->is_string()) c.bad("model.unk_token", "expected a string or null, got " + shown(u));
    out.model_unk_token = u->get<std::string>();
  }
}

std::vector<TokenizerJsonFile::Added> read_added_tokens(const Checker& c, const json& doc) {
  const json* list = member(doc, "added_tokens");
  if (!list) c.bad("added_tokens", "missing (transformers needs the list, even when empty)");
  if (!list->is_array()) c.bad("added_tokens", std::string("expected a list of tokens, got ") + list->type_name());
  std::vector<TokenizerJsonFile::Added> added;
  std::unordered_map<std::string, size_t> by_content;
  std::unordered_map<int64_t, size_t> by_id;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& e = (*list)[i];
    const std::string path = "added_tokens[" + std::to_string(i) + "]";
    if (!e.is_object()) c.bad(path, "expected an AddedToken object, got " + shown(&e));
    const json* id = member(e, "id");
    if (!id || !(id->is_number_integer() || id->is_number_unsigned()) || id->get<int64_t>() < 0 ||
        id->get<int64_t>() > INT32_MAX)
      c.bad(path + ".id", "expected an integer in 0.." + std::to_string(INT32_MAX) + ", got " + shown(id));
    TokenizerJsonFile::Added a{added_token_from_object(e, false, c.file + ": " + path), i};
    a.token.id = static_cast<int32_t>(id->get<int64_t>());
    if (auto [it, fresh] = by_content.emplace(a.token.content, i); !fresh)
      c.bad(path, json(a.token.content).dump() + " is listed twice (also added_tokens[" + std::to_string(it->second) + "])");
    if (auto [it, fresh] = by_id.emplace(a.token.id, i); !fresh)
      c.bad(path + ".id", "id " + std::to_string(a.token.id) + " is listed twice (also added_tokens[" +
                              std::to_string(it->second) + "])");
    added.push_back(std::move(a));
  }
  return added;
}

// The post-processor's framing must be [bos] … [eos] with the tokens the configs name.
void check_post_processor(const Checker& c, const json& pp, const ClipTokenizer::Impl& impl) {
  const std::string type = type_of(&pp);
  const json bos = json::array({impl.bos, impl.bos_id}), eos = json::array({impl.eos, impl.eos_id});
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    c.expect_equal("post_processor.cls", member(pp, "cls"), bos);
    c.expect_equal("post_processor.sep", member(pp, "sep"), eos);
    return;
  }
  if (type == "TemplateProcessing") {
    const json& single = c.expect_list("post_processor.single", member(pp, "single"), 3, "[bos, $A, eos]");
    auto piece = [&](size_t i, const char* kind, const std::string& id) {
      const std::string path = "post_processor.single[" + std::to_string(i) + "]." + kind + ".id";
      const json* p = member(single[i], kind);
      c.expect_equal(path, p ? member(*p, "id") : nullptr, id);
    };
    piece(0, "SpecialToken", impl.bos);
    piece(1, "Sequence", "A");
    piece(2, "SpecialToken", impl.eos);
    const json* specials = member(pp, "special_tokens");
    for (const auto& [content, id] : {std::pair{impl.bos, impl.bos_id}, std::pair{impl.eos, impl.eos_id}}) {
      const json* entry = specials ? member(*specials, content.c_str()) : nullptr;
      c.expect_equal("post_processor.special_tokens[" + json(content).dump() + "].ids", entry ? member(*entry, "ids") : nullptr,
                     json::array({id}));
    }
    return;
  }
  c.not_clip(type.empty() ? "post_processor" : "post_processor.type", type.empty() ? &pp : member(pp, "type"),
             "\"RobertaProcessing\" with cls = " + bos.dump() + ", sep = " + eos.dump());
}

// tokenizers' pretty printer puts each element of a non-empty list or object on its own line.
std::string indent(int level) { return std::string(static_cast<size_t>(level) * 2, ' '); }

}  // namespace

TokenizerJsonFile read_tokenizer_json(const fs::path& path) { return read_tokenizer_json(path, read_file(path)); }

TokenizerJsonFile read_tokenizer_json(const fs::path& path, const std::string& text) {
  TokenizerJsonFile out;
  out.path = path.string();
  const Checker c{out.path};
  const json doc = parse_json_text(path, text);
  if (!doc.is_object()) throw InputError(out.path + ": expected a JSON object, got " + doc.type_name());
  if (const json* v = member(doc, "version"); v && *v != "1.0")
    c.bad("version", "is " + shown(v) + "; the tokenizers library reads only \"1.0\"");
  for (const char* key : {"truncation", "padding"})
    if (const json* v = member(doc, key); !absent_or_null(v))
      c.not_clip(key, v, "null (transformers would apply it to every call)");

  const json* model = member(doc, "model");
  if (!model) c.bad("model", "missing");
  if (!model->is_object()) c.bad("model", std::string("expected an object, got ") + model->type_name());
  check_model_options(c, *model, out);
  out.vocab = read_vocab(c, *model);
  out.merges = read_merges(c, *model, out.vocab);
  out.added = read_added_tokens(c, doc);
  check_normalizer(c, doc);
  check_pre_tokenizer(c, doc);
  check_decoder(c, doc);
  const json* pp = member(doc, "post_processor");
  out.post_processor = pp ? *pp : json();
  return out;
}

void check_against(const TokenizerJsonFile& file, const ClipTokenizer::Impl& impl, bool added_tokens_used) {
  const Checker c{file.path};
  check_post_processor(c, file.post_processor, impl);
  if (file.model_unk_token && *file.model_unk_token != impl.unk) {
    json unk = *file.model_unk_token;
    c.not_clip("model.unk_token", &unk, json(impl.unk).dump() + " (the unk token the configs name)");
  }
  if (!added_tokens_used) return;
  for (const TokenizerJsonFile::Added& a : file.added) {
    std::optional<int32_t> id = impl.token_to_id(a.token.content);
    if (id && *id != a.token.id)
      c.bad("added_tokens[" + std::to_string(a.index) + "].id",
            json(a.token.content).dump() + " is declared as id " + std::to_string(a.token.id) + " but gets id " +
                std::to_string(*id) + " (its vocabulary id, or the next free one): the file contradicts itself");
  }
}

std::string tokenizer_json_text(const ClipTokenizer::Impl& impl) {
  std::vector<const ClipAddedToken*> added;
  for (const ClipAddedToken& t : impl.added) added.push_back(&t);
  std::sort(added.begin(), added.end(), [](const auto* a, const auto* b) { return a->id < b->id; });

  // Field order as tokenizers' serializers write it.
  ojson doc;
  doc["version"] = "1.0";
  doc["truncation"] = nullptr;
  doc["padding"] = nullptr;
  doc["added_tokens"] = ojson::array();
  for (const ClipAddedToken* t : added) {
    ojson o;
    o["id"] = t->id;
    o["content"] = t->content;
    o["single_word"] = t->single_word;
    o["lstrip"] = t->lstrip;
    o["rstrip"] = t->rstrip;
    o["normalized"] = t->normalized;
    o["special"] = t->special;
    doc["added_tokens"].push_back(o);
  }
  ojson replace;
  replace["type"] = "Replace";
  replace["pattern"] = {{"Regex", kWhitespaceRunPattern}};
  replace["content"] = " ";
  doc["normalizer"]["type"] = "Sequence";
  doc["normalizer"]["normalizers"] = ojson::array({ojson{{"type", "NFC"}}, replace, ojson{{"type", "Lowercase"}}});
  ojson split, byte_level;
  split["type"] = "Split";
  split["pattern"] = {{"Regex", kClipSplitPattern}};
  split["behavior"] = "Removed";
  split["invert"] = true;
  byte_level["type"] = "ByteLevel";
  byte_level["add_prefix_space"] = false;
  byte_level["trim_offsets"] = true;
  byte_level["use_regex"] = true;
  doc["pre_tokenizer"]["type"] = "Sequence";
  doc["pre_tokenizer"]["pretokenizers"] = ojson::array({split, byte_level});
  ojson& pp = doc["post_processor"];
  pp["type"] = "RobertaProcessing";
  pp["sep"] = ojson::array({impl.eos, impl.eos_id});
  pp["cls"] = ojson::array({impl.bos, impl.bos_id});
  pp["trim_offsets"] = false;
  pp["add_prefix_space"] = false;
  ojson& decoder = doc["decoder"];
  decoder["type"] = "ByteLevel";
  decoder["add_prefix_space"] = true;
  decoder["trim_offsets"] = true;
  decoder["use_regex"] = true;
  ojson& model = doc["model"];
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = impl.unk.empty() ? ojson() : ojson(impl.unk);
  model["continuing_subword_prefix"] = "";
  model["end_of_word_suffix"] = kEndOfWord;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  model["ignore_merges"] = false;
  // The two big parts are spliced in as text: an ordered_json object of 49,408 keys would take
  // quadratic time to build. The placeholders cannot occur elsewhere: quotes inside strings are escaped.
  const std::string vocab_mark = "@vocab@", merges_mark = "@merges@";
  model["vocab"] = vocab_mark;
  model["merges"] = merges_mark;
  std::string text = doc.dump(2);

  std::vector<std::pair<int32_t, const std::string*>> by_id;
  by_id.reserve(impl.vocab.size());
  for (const auto& [token, id] : impl.vocab) by_id.emplace_back(id, &token);
  std::sort(by_id.begin(), by_id.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first < b.first : *a.second < *b.second; });
  std::string vocab = "{";
  for (size_t i = 0; i < by_id.size(); ++i)
    vocab += (i ? ",\n" : "\n") + indent(3) + json(*by_id[i].second).dump() + ": " + std::to_string(by_id[i].first);
  vocab += by_id.empty() ? "}" : "\n" + indent(2) + "}";
  std::string merges;  // impl.merges lists each pair once (set_merges), as tokenizers does
  for (const auto& [left, right] : impl.merges)
    merges += (merges.empty() ? "\n" : ",\n") + indent(3) + "[\n" + indent(4) + json(left).dump() + ",\n" + indent(4) +
              json(right).dump() + "\n" + indent(3) + "]";
  merges = merges.empty() ? "[]" : "[" + merges + "\n" + indent(2) + "]";

  for (const auto& [mark, body] : {std::pair{&vocab_mark, &vocab}, std::pair{&merges_mark, &merges}}) {
    const std::string quoted = json(*mark).dump();
    size_t at = text.rfind(quoted);
    SDMPI_CHECK(at != std::string::npos, "tokenizer.json writer lost its placeholder");
    text.replace(at, quoted.size(), *body);
  }
  return text;
}

}  // namespace sdmpi::clip_files
