#!/usr/bin/env python3
"""Writes the malformed prompt-file corpus: each file plus the message it must produce (MANIFEST).
Run from this folder: python3 make_corpus.py"""
import json

cases = {
    # name: (bytes, expected substring of the error)
    "empty.txt": (b"", "holds no prompts"),
    "only_blank.txt": (b"\n  \n\t\n", "holds no prompts"),
    "bad_utf8.txt": (b"a cat\nan \xff owl\n", "bad_utf8.txt:2: invalid UTF-8 at byte 4"),
    "overlong_utf8.txt": (b"\xc0\xaf\n", "invalid UTF-8 at byte 1"),
    "surrogate_utf8.txt": (b"ok\n\xed\xa0\x80\n", ":2: invalid UTF-8"),
    "truncated_utf8.jsonl": (b'{"prompt": "caf\xc3"}\n', ":1: invalid UTF-8"),
    "not_json.jsonl": (b'{"prompt": "a"}\n{prompt: b}\n', "not_json.jsonl:2: malformed JSON"),
    "not_object.jsonl": (b'["a cat"]\n', ":1: expected a JSON object"),
    "missing_prompt.jsonl": (b'{"seed": 3}\n', ':1: missing "prompt"'),
    "prompt_not_string.jsonl": (b'{"prompt": 42}\n', '"prompt" must be a string'),
    "unknown_key.jsonl": (b'{"prompt": "a", "stpes": 20}\n', 'unknown key "stpes"'),
    "negative_seed.jsonl": (b'{"prompt": "a", "seed": -1}\n', '"seed" must be a non-negative integer'),
    "float_seed.jsonl": (b'{"prompt": "a", "seed": 1.5}\n', '"seed" must be a non-negative integer'),
    "zero_steps.jsonl": (b'{"prompt": "a", "steps": 0}\n', '"steps" = 0 is out of range'),
    "string_steps.jsonl": (b'{"prompt": "a", "steps": "20"}\n', '"steps" must be an integer'),
    "width_not_multiple.jsonl": (b'{"prompt": "a", "width": 500}\n', "width 500 is not a positive multiple of 8"),
    "height_too_small.jsonl": (b'{"prompt": "a", "height": 4}\n', '"height" = 4 is out of range'),
    "guidance_nan.jsonl": (b'{"prompt": "a", "guidance": "nan"}\n', '"guidance" must be a number'),
    "huge_int.jsonl": (b'{"prompt": "a", "steps": 99999999999999999999}\n', '"steps"'),
    "third_line_bad.jsonl": (b'{"prompt": "a"}\n\n{"prompt": "b", "width": 7}\n', "third_line_bad.jsonl:3:"),
    "number_overflow.jsonl": (b'{"prompt": "a", "guidance": 5e999}\n', ":1: malformed JSON: a number is out of range"),
    "trailing_garbage.jsonl": (b'{"prompt": "a"} x\n', ":1: malformed JSON"),
}
manifest = {}
for name, (data, expect) in cases.items():
    with open(name, "wb") as f:
        f.write(data)
    manifest[name] = expect
with open("MANIFEST.json", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")
