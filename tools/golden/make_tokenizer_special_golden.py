#!/usr/bin/env python3
"""Golden data for how the CLIP tokenizer matches its special tokens in a prompt (issue 15).

Whether "<|ENDOFTEXT|>" in a prompt is the token 49407 or the text "<", "|", "endoftext", ... depends
on the flags that <|endoftext|> ends up with in tokenizers' AddedVocabulary (normalized: matched in
the lower-cased text, so in any case; lstrip/rstrip: swallows the spaces beside it; single_word: not
inside a word), and those flags depend on how transformers 5.24 merges the folder's
tokenizer_config.json, special_tokens_map.json, added_tokens_decoder and tokenizer.json: the named
tokens (bos, eos, unk, sep, pad, cls, mask, then the extras) are collected in that order, a value
equal to one collected before (the same string, or an AddedToken with the same content and flags)
is skipped, and of the rest the last one with a given content sets its flags.

This script asks the reference (transformers 5.24 + tokenizers 0.23.3, tools/golden/requirements.txt;
torch is not needed) for the ids of a corpus of prompts with special tokens in upper and mixed case,
beside spaces, punctuation and other scripts, inside words, repeated, cut short, in a set of
tokenizer folders: the variants of make_tokenizer_golden.py, the folder ClipTokenizer::builtin()
writes, and a seeded grid of special-token definitions in both folder layouts. Writes

  tests/data/golden/tokenizer/special_tokens.json.gz
    {"prompts": [...], "folders": [{"name", "layout": "vocab_merges"|"tokenizer_json",
      "files": {file name: JSON content}, "added_tokens": [tokenizer.json added_tokens, or null],
      "flags": {content: [normalized, lstrip, rstrip, single_word]}, "ids": [[77 ids] per prompt]}]}

A folder is the SD 1.5 vocabulary (vocab.json + merges.txt from src/text/bpe_simple_vocab_16e6.txt.gz,
or the tokenizer.json that transformers saves for it) plus `files`; for the tokenizer.json layout
`added_tokens` replaces that file's "added_tokens". The C++ test (clip_tokenizer_test.cpp) builds the
same folders from ClipTokenizer::builtin().write_dir and compares every id.

Usage: python tools/golden/make_tokenizer_special_golden.py
"""
import copy
import gzip
import importlib.util
import json
import os
import random
import shutil
import tempfile

from transformers import CLIPTokenizer
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("make_tokenizer_golden", os.path.join(HERE, "make_tokenizer_golden.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)  # its main() does not run on import

OUT = os.path.join(base.OUT, "special_tokens.json.gz")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
SEED = 20260115

PROMPTS = [
    # case
    "<|ENDOFTEXT|>", "<|EndOfText|>", "<|endOfText|>", "<|STARTOFTEXT|>", "<|StartOfText|>", "<|startOFtext|>",
    "<|endoftext|>", "<|startoftext|>",
    # spaces around
    " <|endoftext|> ", "\t<|endoftext|>\n", "a <|endoftext|> b", "a<|endoftext|>b", "A <|ENDOFTEXT|> B",
    "  <|startoftext|>  ", "a  <|startoftext|>  b", "a<|STARTOFTEXT|>b", "<|endoftext|>\n\n", "\n<|startoftext|>\n",
    "a\u00a0<|endoftext|>\u00a0b", "a\u2003<|startoftext|>\u2003b", "\u00a0<|endoftext|>\u3000",
    # punctuation around
    ",<|endoftext|>.", "(<|endoftext|>)", "<<|endoftext|>>", "|<|endoftext|>|", "!<|STARTOFTEXT|>?",
    "don't<|endoftext|>'s", "<|endoftext|>'s", "1<|endoftext|>2", "_<|endoftext|>_", "-<|STARTOFTEXT|>-",
    # inside words
    "cat<|endoftext|>dog", "CAT<|ENDOFTEXT|>DOG", "cat<|startoftext|>dog", "Cat<|StartOfText|>Dog",
    # repeated
    "<|endoftext|><|endoftext|>", "<|endoftext|> <|endoftext|>", "<|startoftext|><|endoftext|><|startoftext|>",
    "<|ENDOFTEXT|><|endoftext|><|EndOfText|>", "<|STARTOFTEXT|><|STARTOFTEXT|>", "<|endoftext|>" * 5,
    "<|startoftext|> <|STARTOFTEXT|>",
    # partial and nested
    "<|endoftext", "endoftext|>", "<|endoftext|", "|endoftext|>", "<|end of text|>", "< |endoftext| >",
    "<||endoftext||>", "<|<|endoftext|>|>", "<|startoftext", "startoftext|>", "<|start<|endoftext|>oftext|>",
    "<|endoftext|>text|>", "<|endof<|startoftext|>", "<|endoftext|>|>", "<<|startoftext|>|>", "<|start oftext|>",
    "<|START OF TEXT|>",
    # other scripts, combining marks, look-alikes and invisible characters around or inside
    "\u00e9<|endoftext|>\u00e9", "\u732b<|endoftext|>\u732b", "<|endoftext|>\u0301", "e\u0301<|startoftext|>",
    "<|startoftext|>\u0301", "\U0001f431<|ENDOFTEXT|>\U0001f431", "\uff1c\uff5cendoftext\uff5c\uff1e",
    "<|\uff25\uff2e\uff24\uff2f\uff26\uff34\uff25\uff38\uff34|>",
    "<|\uff33\uff34\uff21\uff32\uff34\uff2f\uff26\uff34\uff25\uff38\uff34|>",
    "<|\u0130NDOFTEXT|>", "<|startof\u0130ext|>", "<|STARTOF\u212aEXT|>", "<|startoftext|>\u200b",
    "\u200b<|endoftext|>\u200b",
    # long: the special token at and past the truncation point
    "x " * 40 + "<|endoftext|>", "x " * 74 + "<|STARTOFTEXT|> y", "x " * 75 + "<|endoftext|>",
    # in ordinary prompts
    "<|ENDOFTEXT|> a photo of a cat <|endoftext|>", "a photo <|StartOfText|> of a <|EndOfText|> cat",
]

FLAG_SETS = [  # (normalized, lstrip, rstrip, single_word)
    (True, False, False, False), (False, False, False, False), (True, True, True, False),
    (False, True, False, False), (True, False, False, True), (False, False, True, True),
]
NAMED = [("bos_token", SOT), ("eos_token", EOT), ("unk_token", EOT), ("pad_token", EOT)]


def token_dict(content, flags):
    n, l, r, s = flags
    return {"content": content, "lstrip": l, "normalized": n, "rstrip": r, "single_word": s}


def grid_folders(rng):
    """Special-token definitions as folders met in the wild might hold them, in both layouts."""
    folders = []
    for i in range(36):
        cfg, smap = {"model_max_length": 77}, {}
        for key, content in NAMED:
            for target in (cfg, smap):
                if rng.random() < 0.7:
                    choice = rng.randrange(len(FLAG_SETS) + 1)
                    if choice == len(FLAG_SETS):
                        target[key] = content
                    elif target is cfg:
                        target[key] = {"__type": "AddedToken", **token_dict(content, FLAG_SETS[choice])}
                    else:
                        target[key] = token_dict(content, FLAG_SETS[choice])
        if rng.random() < 0.25:
            cfg["added_tokens_decoder"] = {
                str(i): {**token_dict(c, rng.choice(FLAG_SETS)), "special": True} for i, c in ((49406, SOT), (49407, EOT))
            }
        files = {"tokenizer_config.json": cfg}
        if smap:
            files["special_tokens_map.json"] = smap
        folders.append({"name": f"grid{i:02d}", "layout": "vocab_merges", "files": files, "added_tokens": None})
    for i in range(12):
        added = [{"id": id, **token_dict(c, rng.choice(FLAG_SETS)), "special": True} for id, c in ((49406, SOT), (49407, EOT))]
        folders.append({"name": f"json{i:02d}", "layout": "tokenizer_json", "files": {}, "added_tokens": added})
    return folders


def variant_folders():
    out = []
    for name, files in base.VARIANTS.items():
        if "vocab.json" in files or "merges.txt" in files:
            continue  # a vocabulary of its own: not a special-token question
        out.append({"name": "variant_" + name, "layout": "vocab_merges",
                    "files": {k: v for k, v in files.items()}, "added_tokens": None})
    return out


def main():
    vocab, merges = base.build_vocab_and_merges()
    rng = random.Random(SEED)
    folders = variant_folders() + grid_folders(rng)
    tmp = tempfile.mkdtemp(prefix="tokenizer_special_")
    try:
        sd15 = os.path.join(tmp, "sd15")
        base.write_folder(sd15, vocab, merges, base.VARIANTS["sd15"])
        saved = os.path.join(tmp, "saved")
        CLIPTokenizer.from_pretrained(sd15).save_pretrained(saved)
        with open(os.path.join(saved, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer_json = json.load(f)
        with open(os.path.join(saved, "tokenizer_config.json"), encoding="utf-8") as f:
            saved_config = json.load(f)
        # The folder ClipTokenizer::builtin() writes (as transformers 5.24 saves the SD 1.5 one).
        folders.insert(0, {"name": "saved_sd15", "layout": "tokenizer_json", "files": {},
                           "added_tokens": copy.deepcopy(tokenizer_json["added_tokens"])})
        kept = []
        for folder in folders:
            path = os.path.join(tmp, folder["name"])
            if folder["layout"] == "vocab_merges":
                base.write_folder(path, vocab, merges, folder["files"])
            else:
                os.makedirs(path)
                tj = copy.deepcopy(tokenizer_json)
                tj["added_tokens"] = folder["added_tokens"]
                with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
                    json.dump(tj, f, ensure_ascii=False)
                folder["files"] = {"tokenizer_config.json": saved_config, **folder["files"]}
                base.write_files(path, folder["files"])
            try:
                tok = CLIPTokenizer.from_pretrained(path)
            except Exception as e:  # the reference refuses it: not a question of matching
                print(f"{folder['name']}: skipped, transformers refuses it ({e})")
                continue
            added = json.loads(tok.backend_tokenizer.to_str())["added_tokens"]
            folder["flags"] = {t["content"]: [t["normalized"], t["lstrip"], t["rstrip"], t["single_word"]] for t in added}
            folder["ids"] = [tok(p, padding="max_length", max_length=77, truncation=True)["input_ids"] for p in PROMPTS]
            kept.append(folder)
    finally:
        shutil.rmtree(tmp)
    doc = {"prompts": PROMPTS, "folders": kept}
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:
        f.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    print(f"{OUT}: {len(PROMPTS)} prompts x {len(kept)} folders")


if __name__ == "__main__":
    main()
