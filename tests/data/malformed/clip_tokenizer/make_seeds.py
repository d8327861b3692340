#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/clip_tokenizer_fuzz.cpp (prompts as raw bytes) and
MANIFEST.json: for each seed, null when it must tokenize, else the piece of the one-line error it
must give (checked by tests/unit/clip_tokenizer_test.cpp). Run from this folder: python3 make_seeds.py"""
import json

seeds = {
    "plain.txt": (b"a photo of a cat", None),
    "a1111_special.txt": (b"(masterpiece:1.2), [foo|bar], <lora:x:0.8>, <|startoftext|>x<|endoftext|> <|EndOfText|>", None),
    "unicode.txt": ("caf\u00e9 cafe\u0301 \u0130stanbul \u03a3\u0391\u03a3 \u732b "
                    "\U0001f468\u200d\U0001f469\u200d\U0001f467 \uff21".encode(), None),
    "controls_spaces.txt": (b"a\x00b\x01\t\n\r\xc2\xa0\xe3\x80\x80\xe2\x80\x8b", None),
    "long.txt": (b"word, " * 60, None),
    "invalid_utf8.txt": (b"ok \xff\xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82", "byte 0xFF at offset 3"),
    "surrogate.txt": (b"x\xed\xa0\x80", "byte 0xED at offset 1"),
    "truncated.txt": (b"caf\xc3", "byte 0xC3 at offset 3"),
}
manifest = {}
for name, (data, expect) in seeds.items():
    with open(name, "wb") as f:
        f.write(data)
    manifest[name] = expect
with open("MANIFEST.json", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
