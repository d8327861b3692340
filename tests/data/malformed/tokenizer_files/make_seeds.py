#!/usr/bin/env python3
"""Writes the seeds of tests/fuzz/tokenizer_files_fuzz.cpp: each seed packs one tokenizer folder into
one file (tests/fuzz/fuzz_files.h: a line "@@ NAME" starts file NAME). The folders are those of
../tokenizer/make_corpus.py (its toy vocabulary with one defect each, both layouts; its definitions
are reused, not copied), plus the valid toy folders they are made from. No manifest: the fuzz target
asserts no crash; the messages are checked by tests/unit/clip_tokenizer_test.cpp on ../tokenizer/.
Run from this folder: python3 make_seeds.py"""
import glob
import json
import os

# make_corpus.py defines its cases, then writes folders from "manifest = {}" on: run only the first part.
with open("../tokenizer/make_corpus.py") as f:
    source = f.read()
corpus = {}
exec(compile(source[:source.index("manifest = {}")], "make_corpus.py", "exec"), corpus)


def pack(files):
    out = b""
    for name, data in files.items():
        if data is not None:
            out += b"@@ " + name.encode() + b"\n" + data + b"\n"
    return out


base = {"vocab.json": corpus["VOCAB"], "merges.txt": corpus["MERGES"]}
seeds = {
    "valid_vocab_merges": base,
    "valid_with_configs": {**base, "tokenizer_config.json": corpus["config"](),
                           "special_tokens_map.json": json.dumps({"bos_token": "<|startoftext|>"}).encode()},
    "valid_tokenizer_json": {"tokenizer.json": corpus["tj"](lambda d: None)},
}
# Found by the fuzzer (2026-12-05): two added tokens with one id load, but the tokenizer.json that
# write_dir writes for them is refused (the target skips that round trip; see its comment).
seeds["known_two_specials_one_id"] = {**base, "vocab.json": corpus["VOCAB"].replace(b'"<|endoftext|>": 1', b'"<|endoftext|>": 0')}
# Found by the campaign (2026-12-05): a malformed merge line whose first 60 bytes end inside a UTF-8
# sequence made the error message itself throw (the quoted excerpt's json dump).
seeds["merge_line_cut_inside_utf8"] = {**base, "merges.txt": corpus["MERGES"] + ("a b c" + "\u00e9" * 40 + "\n").encode()}
for name, (files, _) in corpus["cases"].items():
    seeds[name] = {**base, **files}
for name, (files, _) in corpus["json_cases"].items():
    seeds[name] = dict(files)

for old in glob.glob("*.seed"):
    os.remove(old)
for name, files in sorted(seeds.items()):
    with open(name + ".seed", "wb") as f:
        f.write(pack(files))
