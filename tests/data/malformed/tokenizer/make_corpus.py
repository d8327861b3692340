#!/usr/bin/env python3
"""Writes the malformed tokenizer-folder corpus: one folder per case (a toy vocabulary with one
defect) plus the message each must produce (MANIFEST.json, read by tests/unit/clip_tokenizer_test.cpp).
Cases named json_* are folders of the tokenizer.json layout (transformers 5): broken files, and
well-formed ones that describe another pipeline than CLIP's, which must be refused too.
Run from this folder: python3 make_corpus.py"""
import json
import os
import shutil

VOCAB = json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "a</w>": 4, "b</w>": 5,
                    "ab</w>": 6, "ab": 7}).encode()
MERGES = b"#version: 0.2\na b</w>\na b\n"


def token(content, **flags):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False,
            "single_word": False, **flags}


def config(**entries):
    return json.dumps({"model_max_length": 77, **entries}).encode()


cases = {
    # name: ({file: bytes, or None to leave the file out}, expected substring of the error)
    "missing_vocab": ({"vocab.json": None}, "vocab.json: missing"),
    "missing_merges": ({"merges.txt": None}, "merges.txt: missing"),
    "vocab_truncated_json": ({"vocab.json": b'{"a": 0, "b"'}, "vocab.json: malformed JSON"),
    "vocab_bad_utf8": ({"vocab.json": b'{"a\xff": 0}'}, "vocab.json: malformed JSON"),
    "vocab_not_object": ({"vocab.json": b'[["a", 0]]'}, "vocab.json: expected a JSON object"),
    "vocab_string_id": ({"vocab.json": b'{"a": 0,\n "b": "1"}'}, 'vocab.json:2: token "b" has id "1"'),
    "vocab_negative_id": ({"vocab.json": b'{"a": -1}'}, 'token "a" has id -1'),
    "vocab_float_id": ({"vocab.json": b'{"a": 1.5}'}, 'token "a" has id 1.5'),
    "vocab_empty": ({"vocab.json": b"{}"}, "the vocabulary is empty"),
    "merges_three_fields": ({"merges.txt": b"#version: 0.2\na b c\n"}, "merges.txt:2: a merge is two tokens separated by one space, got 3 fields"),
    "merges_one_field": ({"merges.txt": b"#version: 0.2\na b\nab\n"}, "merges.txt:3: a merge is two tokens"),
    "merges_blank_line": ({"merges.txt": b"#version: 0.2\na b</w>\n\na b\n"}, "merges.txt:3: a merge is two tokens"),
    "merges_double_space": ({"merges.txt": b"a  b\n"}, "merges.txt:1: a merge is two tokens separated by one space, got 3 fields"),
    "merges_bad_utf8": ({"merges.txt": b"#version: 0.2\na \xff\n"}, "merges.txt:2: invalid UTF-8"),
    "merge_result_missing": ({"merges.txt": b"#version: 0.2\na b\nb a\n"}, 'merges.txt:3: merge "b a": its result "ba" is not in vocab.json'),
    "merge_part_missing": ({"merges.txt": b"#version: 0.2\na c\n"}, 'merges.txt:2: merge "a c": "c" is not in vocab.json'),
    "config_bad_json": ({"tokenizer_config.json": b'{"model_max_length": 77,}'}, "tokenizer_config.json: malformed JSON"),
    "config_not_object": ({"tokenizer_config.json": b"[]"}, "tokenizer_config.json: expected a JSON object"),
    "config_untyped_token": ({"tokenizer_config.json": config(bos_token={"content": "<|startoftext|>"})},
                             '"bos_token": an object here needs "__type": "AddedToken"'),
    "config_token_number": ({"tokenizer_config.json": config(pad_token=5)}, '"pad_token": expected a string or an AddedToken object'),
    "config_token_no_content": ({"tokenizer_config.json": config(eos_token={"__type": "AddedToken", "lstrip": False})},
                                'needs a string "content"'),
    "config_flag_not_bool": ({"tokenizer_config.json": config(bos_token=token("<|startoftext|>", normalized="yes"))},
                             '"normalized" must be true or false'),
    "config_max_length_string": ({"tokenizer_config.json": b'{"model_max_length": "77"}'}, '"model_max_length" must be a number'),
    "config_max_length_small": ({"tokenizer_config.json": b'{"model_max_length": 1}'}, '"model_max_length" must be an integer >= 2'),
    "config_max_length_fraction": ({"tokenizer_config.json": b'{"model_max_length": 76.5}'}, '"model_max_length" must be an integer >= 2'),
    "config_no_bos": ({"tokenizer_config.json": config(bos_token=None)}, "the tokenizer has no bos_token"),
    "config_extra_not_list": ({"tokenizer_config.json": config(additional_special_tokens="<x>")}, '"additional_special_tokens": expected a list'),
    "decoder_bad_key": ({"tokenizer_config.json": config(added_tokens_decoder={"x": token("<x>", special=True)})},
                        '"added_tokens_decoder".x: the key must be a token id'),
    "decoder_not_object": ({"tokenizer_config.json": config(added_tokens_decoder=[1])}, '"added_tokens_decoder" must be an object'),
    # transformers 5.24 keeps one of the two in its added-token table and tokenizes the other as text.
    "vocab_specials_one_id": ({"vocab.json": VOCAB.replace(b'"<|endoftext|>": 1', b'"<|endoftext|>": 0')},
                              'vocab.json: the added tokens "<|startoftext|>" and "<|endoftext|>" both get id 0'),
    "map_bad_json": ({"special_tokens_map.json": b"{,}"}, "special_tokens_map.json: malformed JSON"),
    "map_token_list": ({"special_tokens_map.json": b'{"pad_token": ["a"]}'}, 'special_tokens_map.json: "pad_token": expected a string or an object'),
}


# ---- tokenizer.json folders (the transformers 5 layout): the toy tokenizer as one file, one defect each.
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def added(id, content, normalized, **flags):
    return {"id": id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": True, **flags}


def tokenizer_json():
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added(0, SOT, True), added(1, EOT, False)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOT, 1], "cls": [SOT, 0], "trim_offsets": False,
                           "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": EOT, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": json.loads(VOCAB), "merges": [["a", "b</w>"], ["a", "b"]]},
    }


def tj(edit):
    """The toy tokenizer.json after `edit(doc)` (which changes doc in place)."""
    doc = tokenizer_json()
    edit(doc)
    return json.dumps(doc, indent=2).encode()


def at(path, value):
    """An edit that sets doc[path…] = value; a value of DELETE removes the key."""
    def edit(doc):
        for key in path[:-1]:
            doc = doc[key]
        if value is DELETE:
            del doc[path[-1]]
        else:
            doc[path[-1]] = value
    return edit


DELETE = object()
PRE = ["pre_tokenizer", "pretokenizers"]
NORM = ["normalizer", "normalizers"]

json_cases = {
    # name: ({file: bytes}, expected substring); these folders have no vocab.json/merges.txt unless listed
    "json_bad_json": ({"tokenizer.json": tj(lambda d: None)[:-40]}, "tokenizer.json: malformed JSON"),
    "json_bad_utf8": ({"tokenizer.json": tj(lambda d: None).replace(b'"a</w>"', b'"a\xff</w>"')}, "tokenizer.json: malformed JSON"),
    "json_not_object": ({"tokenizer.json": b"[]"}, "tokenizer.json: expected a JSON object"),
    "json_version": ({"tokenizer.json": tj(at(["version"], "2.0"))}, 'tokenizer.json: version: is "2.0"'),
    "json_truncation": ({"tokenizer.json": tj(at(["truncation"], {"direction": "Right", "max_length": 10, "strategy": "LongestFirst", "stride": 0}))},
                        "tokenizer.json: truncation is {"),
    "json_padding": ({"tokenizer.json": tj(at(["padding"], {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None, "pad_id": 1, "pad_type_id": 0, "pad_token": EOT}))},
                     "tokenizer.json: padding is {"),
    "json_no_model": ({"tokenizer.json": tj(at(["model"], DELETE))}, "tokenizer.json: model: missing"),
    "json_model_not_object": ({"tokenizer.json": tj(at(["model"], []))}, "tokenizer.json: model: expected an object, got array"),
    "json_model_wordpiece": ({"tokenizer.json": tj(at(["model", "type"], "WordPiece"))}, 'model.type is "WordPiece" where the CLIP tokenizer has "BPE"'),
    "json_vocab_missing": ({"tokenizer.json": tj(at(["model", "vocab"], DELETE))}, "tokenizer.json: model.vocab: missing"),
    "json_vocab_list": ({"tokenizer.json": tj(at(["model", "vocab"], [SOT, EOT, "a"]))}, "model.vocab: expected an object of token → id, got array"),
    "json_vocab_string_id": ({"tokenizer.json": tj(at(["model", "vocab", "b"], "3"))}, 'model.vocab["b"]: token has id "3"'),
    "json_vocab_negative_id": ({"tokenizer.json": tj(at(["model", "vocab", "b"], -3))}, 'model.vocab["b"]: token has id -3'),
    "json_vocab_empty": ({"tokenizer.json": tj(at(["model", "vocab"], {}))}, "model.vocab: the vocabulary is empty"),
    "json_merges_missing": ({"tokenizer.json": tj(at(["model", "merges"], DELETE))}, "tokenizer.json: model.merges: missing"),
    "json_merges_not_list": ({"tokenizer.json": tj(at(["model", "merges"], {"a": "b"}))}, "model.merges: expected a list of merges, got object"),
    "json_merge_three_fields": ({"tokenizer.json": tj(at(["model", "merges"], ["a b</w>", "a b c"]))},
                                "model.merges[1]: a merge is two tokens separated by one space, got 3 fields"),
    "json_merge_one_field": ({"tokenizer.json": tj(at(["model", "merges"], ["ab"]))}, "model.merges[0]: a merge is two tokens separated by one space, got 1 field"),
    "json_merge_pair_three": ({"tokenizer.json": tj(at(["model", "merges"], [["a", "b", "c"]]))}, "model.merges[0]: a merge is a pair of two token strings"),
    "json_merge_pair_number": ({"tokenizer.json": tj(at(["model", "merges"], [["a", "b</w>"], ["a", 3]]))}, "model.merges[1]: a merge is a pair of two token strings"),
    "json_merge_number": ({"tokenizer.json": tj(at(["model", "merges"], [7]))}, 'model.merges[0]: expected "left right" or ["left", "right"], got 7'),
    "json_merge_part_missing": ({"tokenizer.json": tj(at(["model", "merges"], [["a", "c"]]))}, 'model.merges[0]: merge "a c": "c" is not in model.vocab'),
    "json_merge_line_break": ({"tokenizer.json": tj(at(["model", "merges"], [["a\nb", "c"]]))}, 'model.merges[0]: merge "a\\nb c": "a\\nb" is not in model.vocab'),
    "json_merge_result_missing": ({"tokenizer.json": tj(at(["model", "merges"], [["a", "b"], ["b", "a"]]))},
                                  'model.merges[1]: merge "b a": its result "ba" is not in model.vocab'),
    "json_suffix_missing": ({"tokenizer.json": tj(at(["model", "end_of_word_suffix"], None))}, 'model.end_of_word_suffix is null where the CLIP tokenizer has "</w>"'),
    "json_prefix": ({"tokenizer.json": tj(at(["model", "continuing_subword_prefix"], "##"))}, 'model.continuing_subword_prefix is "##"'),
    "json_dropout": ({"tokenizer.json": tj(at(["model", "dropout"], 0.1))}, "model.dropout is 0.1 where the CLIP tokenizer has null"),
    "json_fuse_unk": ({"tokenizer.json": tj(at(["model", "fuse_unk"], True))}, "model.fuse_unk is true where the CLIP tokenizer has false"),
    "json_byte_fallback": ({"tokenizer.json": tj(at(["model", "byte_fallback"], True))}, "model.byte_fallback is true"),
    "json_ignore_merges": ({"tokenizer.json": tj(at(["model", "ignore_merges"], True))}, "model.ignore_merges is true"),
    "json_unk_not_string": ({"tokenizer.json": tj(at(["model", "unk_token"], 1))}, "model.unk_token: expected a string or null, got 1"),
    "json_unk_other": ({"tokenizer.json": tj(at(["model", "unk_token"], "a"))}, 'model.unk_token is "a" where the CLIP tokenizer has "<|endoftext|>"'),
    "json_added_missing": ({"tokenizer.json": tj(at(["added_tokens"], DELETE))}, "tokenizer.json: added_tokens: missing"),
    "json_added_not_list": ({"tokenizer.json": tj(at(["added_tokens"], {}))}, "added_tokens: expected a list of tokens, got object"),
    "json_added_not_object": ({"tokenizer.json": tj(at(["added_tokens"], [SOT]))}, "added_tokens[0]: expected an AddedToken object"),
    "json_added_no_id": ({"tokenizer.json": tj(at(["added_tokens", 1, "id"], DELETE))}, "added_tokens[1].id: expected an integer in 0..2147483647, got missing"),
    "json_added_no_content": ({"tokenizer.json": tj(at(["added_tokens", 0, "content"], DELETE))}, 'added_tokens[0]: an added token needs a string "content"'),
    "json_added_flag_not_bool": ({"tokenizer.json": tj(at(["added_tokens", 0, "lstrip"], "no"))}, 'added_tokens[0]: "lstrip" must be true or false'),
    "json_added_twice": ({"tokenizer.json": tj(at(["added_tokens"], [added(0, SOT, True), added(1, EOT, False), added(8, SOT, True)]))},
                         'added_tokens[2]: "<|startoftext|>" is listed twice (also added_tokens[0])'),
    "json_added_same_id": ({"tokenizer.json": tj(at(["added_tokens"], [added(0, SOT, True), added(1, EOT, False), added(1, "<x>", False)]))},
                           "added_tokens[2].id: id 1 is listed twice (also added_tokens[1])"),
    "json_added_wrong_id": ({"tokenizer.json": tj(at(["added_tokens", 1, "id"], 7))},
                            'added_tokens[1].id: "<|endoftext|>" is declared as id 7 but gets id 1'),
    "json_added_new_wrong_id": ({"tokenizer.json": tj(at(["added_tokens"], [added(0, SOT, True), added(1, EOT, False), added(100, "<x>", False)]))},
                                'added_tokens[2].id: "<x>" is declared as id 100 but gets id 8'),
    "json_normalizer_null": ({"tokenizer.json": tj(at(["normalizer"], None))}, "tokenizer.json: normalizer is null where the CLIP tokenizer has \"Sequence\""),
    "json_normalizer_strip": ({"tokenizer.json": tj(at(NORM, [{"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True, "strip_right": True}]))},
                              "normalizer.normalizers is [{"),
    "json_normalizer_nfkc": ({"tokenizer.json": tj(at(NORM + [0, "type"], "NFKC"))}, 'normalizer.normalizers[0].type is "NFKC" where the CLIP tokenizer has "NFC"'),
    "json_normalizer_string_pattern": ({"tokenizer.json": tj(at(NORM + [1, "pattern"], {"String": " "}))},
                                       'normalizer.normalizers[1].pattern is {"String":" "} where the CLIP tokenizer has {"Regex":"\\\\s+"}'),
    "json_normalizer_content": ({"tokenizer.json": tj(at(NORM + [1, "content"], ""))}, 'normalizer.normalizers[1].content is ""'),
    "json_pre_tokenizer_whitespace": ({"tokenizer.json": tj(at(["pre_tokenizer"], {"type": "Whitespace"}))},
                                      'pre_tokenizer.type is "Whitespace" where the CLIP tokenizer has "Sequence"'),
    "json_split_pattern": ({"tokenizer.json": tj(at(PRE + [0, "pattern", "Regex"], CLIP_SPLIT.replace("'s|", "")))},
                           "pre_tokenizer.pretokenizers[0].pattern is {"),
    "json_split_behavior": ({"tokenizer.json": tj(at(PRE + [0, "behavior"], "Isolated"))}, 'pre_tokenizer.pretokenizers[0].behavior is "Isolated" where the CLIP tokenizer has "Removed"'),
    "json_split_invert": ({"tokenizer.json": tj(at(PRE + [0, "invert"], False))}, "pre_tokenizer.pretokenizers[0].invert is false"),
    "json_byte_level_prefix": ({"tokenizer.json": tj(at(PRE + [1, "add_prefix_space"], True))}, "pre_tokenizer.pretokenizers[1].add_prefix_space is true"),
    "json_byte_level_no_regex": ({"tokenizer.json": tj(at(PRE + [1, "use_regex"], False))}, "pre_tokenizer.pretokenizers[1].use_regex is false"),
    "json_pre_tokenizer_one_step": ({"tokenizer.json": tj(at(PRE, [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}]))},
                                    "pre_tokenizer.pretokenizers is [{"),
    "json_post_processor_null": ({"tokenizer.json": tj(at(["post_processor"], None))}, "tokenizer.json: post_processor is null"),
    "json_post_processor_swapped": ({"tokenizer.json": tj(at(["post_processor", "cls"], [EOT, 1]))},
                                    'post_processor.cls is ["<|endoftext|>",1] where the CLIP tokenizer has ["<|startoftext|>",0]'),
    "json_post_processor_other_id": ({"tokenizer.json": tj(at(["post_processor", "sep"], [EOT, 5]))}, 'post_processor.sep is ["<|endoftext|>",5]'),
    "json_post_processor_bytelevel": ({"tokenizer.json": tj(at(["post_processor"], {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}))},
                                      'post_processor.type is "ByteLevel" where the CLIP tokenizer has "RobertaProcessing"'),
    "json_template_no_eos": ({"tokenizer.json": tj(at(["post_processor"], {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": SOT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [], "special_tokens": {SOT: {"id": SOT, "ids": [0], "tokens": [SOT]}}}))},
                             "post_processor.single is [{"),
    "json_decoder_wordpiece": ({"tokenizer.json": tj(at(["decoder"], {"type": "WordPiece", "prefix": "##", "cleanup": True}))},
                               'decoder.type is "WordPiece" where the CLIP tokenizer has "ByteLevel"'),
    # tokenizer.json is read, not vocab.json/merges.txt beside it (which are fine here).
    "json_beside_vocab": ({"tokenizer.json": tj(at(["model", "merges"], [["a", "c"]])), "vocab.json": VOCAB, "merges.txt": MERGES},
                          'model.merges[0]: merge "a c": "c" is not in model.vocab'),
    # The configs are still read and checked.
    "json_config_bad": ({"tokenizer.json": tj(lambda d: None), "tokenizer_config.json": config(pad_token=5)},
                        '"pad_token": expected a string or an AddedToken object'),
    # A config whose bos is not the post-processor's cls.
    "json_config_other_bos": ({"tokenizer.json": tj(lambda d: None), "tokenizer_config.json": config(bos_token="a")},
                              'post_processor.cls is ["<|startoftext|>",0] where the CLIP tokenizer has ["a",2]'),
}

manifest = {}
for name, (files, expect) in list(cases.items()) + [(n, ({"vocab.json": None, "merges.txt": None, **f}, e)) for n, (f, e) in json_cases.items()]:
    shutil.rmtree(name, ignore_errors=True)
    os.makedirs(name)
    contents = {"vocab.json": VOCAB, "merges.txt": MERGES, **files}
    for fname, data in contents.items():
        if data is not None:
            with open(os.path.join(name, fname), "wb") as f:
                f.write(data)
    manifest[name] = expect
with open("MANIFEST.json", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
