#!/usr/bin/env python3
"""Writes the malformed tokenizer-folder corpus: one folder per case (a toy vocabulary with one
defect) plus the message each must produce (MANIFEST.json, read by tests/unit/clip_tokenizer_test.cpp).
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
    "map_bad_json": ({"special_tokens_map.json": b"{,}"}, "special_tokens_map.json: malformed JSON"),
    "map_token_list": ({"special_tokens_map.json": b'{"pad_token": ["a"]}'}, 'special_tokens_map.json: "pad_token": expected a string or an object'),
}

manifest = {}
for name, (files, expect) in cases.items():
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
