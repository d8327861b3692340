#!/usr/bin/env python3
"""Golden data for CLIP tokenizer folders in the tokenizer.json layout (src/text/clip_tokenizer_json.cpp).

transformers 5 `save_pretrained` writes a CLIPTokenizer as tokenizer.json + tokenizer_config.json only
(no vocab.json, merges.txt or special_tokens_map.json). This script asks transformers 5.24 itself:

  1. It loads the SD 1.5 tokenizer folder of make_tokenizer_golden.py (vocab.json/merges.txt built
     from bpe_simple_vocab_16e6.txt.gz + the SD 1.5 hub configs), saves it with save_pretrained,
     records which files that wrote and the CRC-32 and size of its tokenizer.json (the C++ test
     checks that ClipTokenizer::builtin().write_dir(dir, TokenizerJson) writes the same bytes), and
     checks that the saved folder, loaded again, gives the ids of tests/data/golden/tokenizer/
     prompts.json.gz on every one of its prompts (so the C++ test may compare against those).
  2. Variants: folders made from that tokenizer.json by a small patch (top-level keys replaced,
     model keys replaced or dropped, merges written as "a b" strings), or from a small tokenizer.json
     of their own, with or without vocab.json/merges.txt beside it, and with their own
     tokenizer_config.json / special_tokens_map.json; for each, transformers' special-token ids,
     added tokens with flags and ids on probes and 60 prompts. One variant ("decoder_extra") is a
     vocab.json/merges.txt folder: an added_tokens_decoder entry named again in
     additional_special_tokens keeps its flags.

Writes tests/data/golden/tokenizer/json/: meta.json, variants.json.gz and <variant>/ (its config
files, or its whole tokenizer.json when small). The patch language (variants.json.gz, "patch"):
  {"set": {key: value}, "model": {key: value}, "model_delete": [key], "merges_as_strings": true}
applied to the parsed SD 1.5 tokenizer.json; the C++ test applies it the same way.

Usage: python tools/golden/make_tokenizer_json_golden.py [--check-dir DIR]
  --check-dir DIR  load DIR (e.g. written by ClipTokenizer::write_dir(dir, TokenizerJson)) with
                   from_pretrained and check it gives the reference ids on every golden prompt.
"""
import argparse
import copy
import gzip
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import zlib

import tokenizers
import transformers
from tokenizers import processors
from transformers import CLIPTokenizer
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("make_tokenizer_golden", os.path.join(HERE, "make_tokenizer_golden.py"))
base_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base_golden)  # its main() does not run on import

ROOT = base_golden.ROOT
GOLDEN = base_golden.OUT
OUT = os.path.join(GOLDEN, "json")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def token(content, id, normalized, special=True, **flags):
    return {"id": id, "content": content, "single_word": flags.get("single_word", False),
            "lstrip": flags.get("lstrip", False), "rstrip": flags.get("rstrip", False),
            "normalized": normalized, "special": special}


def byte_level(**extra):
    return {"type": "ByteLevel", "add_prefix_space": extra.pop("add_prefix_space", False), "trim_offsets": True, **extra}


# name: layout ("tokenizer.json" or "vocab.json"), patch of the SD 1.5 tokenizer.json, files of the
# folder besides it ("tokenizer.json" here replaces the patched one), whether the SD 1.5
# vocab.json/merges.txt lie beside it. Files given as None are filled in by main() from what
# transformers saves.
VARIANTS = {
    # What save_pretrained wrote, as it wrote it.
    "saved_sd15": {"files": {"tokenizer_config.json": None}},
    # The older form of the same file (tokenizers < 0.20 on the hub): merges as strings, ByteLevel
    # without use_regex, the model without byte_fallback/ignore_merges; both special tokens
    # normalized, and the hub's SD 1.5 configs beside it (special_tokens_map.json is read: no
    # added_tokens_decoder; tokenizer.json's flags still win for the named tokens).
    "hub_legacy": {
        "patch": {
            "merges_as_strings": True,
            "model_delete": ["byte_fallback", "ignore_merges"],
            "set": {
                "added_tokens": [token(SOT, 49406, True), token(EOT, 49407, True)],
                "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
            },
        },
        "files": {"tokenizer_config.json": base_golden.SD15_CONFIG, "special_tokens_map.json": base_golden.SD15_MAP},
        "pre_tokenizer_without_use_regex": True,
    },
    "no_config": {},
    # SD 2.x: pad "!" (id 0), as save_pretrained writes the SD 2 folder.
    "saved_sd2": {"files": {"tokenizer_config.json": None}, "from_folder": "sd2"},
    # Flags of every kind, tokens inside and outside the vocabulary, a non-special added token, and
    # extra special tokens in the config (their flags come from tokenizer.json).
    "flags": {
        "patch": {"set": {"added_tokens": [
            token("cat", 1481, False),
            token(SOT, 49406, True, single_word=True),
            token(EOT, 49407, False, lstrip=True, rstrip=True),
            token("<foo>", 49408, False),
            token("<bar>", 49409, True, special=False, lstrip=True),
        ]}},
        "files": {"tokenizer_config.json": {"model_max_length": 77, "extra_special_tokens": ["<foo>", "cat"]}},
    },
    # With an added_tokens_decoder in tokenizer_config.json, transformers ignores tokenizer.json's
    # added tokens altogether: "<foo>" is plain text, and the flags are the config's.
    "config_decoder": {
        "patch": {"set": {"added_tokens": [token(SOT, 49406, True), token(EOT, 49407, True), token("<foo>", 49408, False)]}},
        "files": {"tokenizer_config.json": {
            "model_max_length": 77,
            "added_tokens_decoder": {
                "49406": {"content": SOT, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
                "49407": {"content": EOT, "lstrip": True, "normalized": False, "rstrip": True, "single_word": False, "special": True},
            },
            "bos_token": SOT, "eos_token": EOT, "pad_token": EOT, "unk_token": EOT,
        }},
    },
    # special_tokens_map.json with flags and pad "!": the map names the tokens, tokenizer.json's
    # added tokens give the flags of those it lists.
    "special_map": {
        "files": {
            "tokenizer_config.json": {"model_max_length": 77},
            "special_tokens_map.json": {
                "bos_token": {"content": SOT, "lstrip": True, "rstrip": True, "normalized": False, "single_word": False},
                "eos_token": {"content": EOT, "lstrip": True, "rstrip": True, "normalized": True, "single_word": False},
                "pad_token": "!",
            },
        },
    },
    # Other spellings of the same framing.
    "template_processing": {"patch": {"set": {"post_processor": None}}, "post_processor": "template"},
    "bert_processing": {"patch": {"set": {"post_processor": None}}, "post_processor": "bert"},
    # tokenizer.json and vocab.json/merges.txt disagree: transformers reads tokenizer.json.
    "both_layouts": {"files": {"tokenizer.json": None, "tokenizer_config.json": {"model_max_length": 77}},
                     "from_folder": "tiny", "sd_vocab_files": True},
    # vocab.json layout: an added_tokens_decoder entry named again as an additional special token.
    "decoder_extra": {
        "layout": "vocab.json",
        "files": {"tokenizer_config.json": {
            "model_max_length": 77,
            "added_tokens_decoder": {
                "49408": {"content": "<bar>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": False},
            },
            "additional_special_tokens": ["<bar>", "<baz>"],
        }},
    },
}

PROBES = base_golden.VARIANT_PROBES + ["<bar> <BAR> <baz> x<bar>y", "cat cats <foo>cat", "a <|startoftext|>b c<|startoftext|> d"]


def apply_patch(doc, patch):
    """The patch language of the module docstring (mirrored by tests/unit/clip_tokenizer_test.cpp)."""
    doc = copy.deepcopy(doc)
    for key, value in patch.get("set", {}).items():
        doc[key] = value
    for key, value in patch.get("model", {}).items():
        doc["model"][key] = value
    for key in patch.get("model_delete", []):
        del doc["model"][key]
    if patch.get("merges_as_strings"):
        doc["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    return doc


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def ids_of(tok, prompt):
    return tok(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-dir", help="a tokenizer folder that must give the reference ids")
    args = ap.parse_args()

    with gzip.open(os.path.join(GOLDEN, "prompts.json.gz")) as f:
        golden_cases = json.loads(f.read())["cases"]
    prompts = base_golden.make_prompts()
    assert prompts == [c["prompt"] for c in golden_cases], "prompts.json.gz is not make_tokenizer_golden.py's: rerun it"

    vocab, merges = base_golden.build_vocab_and_merges()
    work = tempfile.mkdtemp(prefix="sdmpi-tokenizer-json-golden-")
    try:
        # 1. What save_pretrained writes, and that it reads back to the golden ids.
        sources, saved = {}, {}
        for name in ("sd15", "sd2", "tiny"):
            sources[name] = os.path.join(work, "src_" + name)
            base_golden.write_folder(sources[name], vocab, merges, base_golden.VARIANTS[name])
            saved[name] = os.path.join(work, "saved_" + name)
            CLIPTokenizer.from_pretrained(sources[name]).save_pretrained(saved[name])
        files = sorted(os.listdir(saved["sd15"]))
        with open(os.path.join(saved["sd15"], "tokenizer.json"), "rb") as f:
            raw = f.read()
        base_doc = json.loads(raw)
        reloaded = CLIPTokenizer.from_pretrained(saved["sd15"])
        bad = [c["prompt"] for c in golden_cases if ids_of(reloaded, c["prompt"]) != c["ids"]]
        if bad:
            sys.exit(f"transformers' own saved folder gives other ids than vocab.json/merges.txt on {len(bad)} prompts: {bad[:3]!r}")
        with open(os.path.join(saved["sd15"], "tokenizer_config.json"), encoding="utf-8") as f:
            saved_config = json.load(f)
        meta = {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "saved_files": files,
            "tokenizer_json_bytes": len(raw),
            "tokenizer_json_crc32": zlib.crc32(raw) & 0xFFFFFFFF,
            "saved_tokenizer_config": saved_config,
            "golden_prompts_same_ids": len(golden_cases),
        }

        # 2. Variants.
        shutil.rmtree(OUT, ignore_errors=True)
        os.makedirs(OUT)
        results = {}
        for name, spec in VARIANTS.items():
            folder = os.path.join(work, "variant_" + name)
            os.makedirs(folder)
            layout = spec.get("layout", "tokenizer.json")
            patch = copy.deepcopy(spec.get("patch", {}))
            if spec.get("pre_tokenizer_without_use_regex"):
                pre = copy.deepcopy(base_doc["pre_tokenizer"])
                del pre["pretokenizers"][1]["use_regex"]
                patch.setdefault("set", {})["pre_tokenizer"] = pre
            if spec.get("post_processor") == "template":
                patch["set"]["post_processor"] = json.loads(processors.TemplateProcessing(
                    single=f"{SOT} $A {EOT}", pair=f"{SOT} $A {EOT} $B:1 {EOT}:1",
                    special_tokens=[(SOT, 49406), (EOT, 49407)]).__getstate__())
            elif spec.get("post_processor") == "bert":
                patch["set"]["post_processor"] = json.loads(processors.BertProcessing((EOT, 49407), (SOT, 49406)).__getstate__())
            stored = {}
            for fname, content in spec.get("files", {}).items():
                if content is None:  # as transformers saved it
                    with open(os.path.join(saved[spec.get("from_folder", "sd15")], fname), encoding="utf-8") as f:
                        content = f.read() if fname == "tokenizer.json" else json.load(f)
                stored[fname] = content
            if layout == "vocab.json" or spec.get("sd_vocab_files"):
                base_golden.write_folder(folder, vocab, merges, {})
            if layout == "tokenizer.json" and "tokenizer.json" not in stored:
                with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
                    json.dump(apply_patch(base_doc, patch), f, indent=2, ensure_ascii=False)
            if name == "saved_sd2":  # the SD 2 save differs from SD 1.5's in its added tokens only
                with open(os.path.join(saved["sd2"], "tokenizer.json"), encoding="utf-8") as f:
                    sd2_doc = json.load(f)
                assert {k: v for k, v in sd2_doc.items() if k != "added_tokens"} == \
                       {k: v for k, v in base_doc.items() if k != "added_tokens"}
                patch = {"set": {"added_tokens": sd2_doc["added_tokens"]}}
                with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
                    json.dump(apply_patch(base_doc, patch), f, indent=2, ensure_ascii=False)
            os.makedirs(os.path.join(OUT, name), exist_ok=True)
            for fname, content in stored.items():
                for target in (folder, os.path.join(OUT, name)):
                    if isinstance(content, str):
                        with open(os.path.join(target, fname), "w", encoding="utf-8") as f:
                            f.write(content)
                    else:
                        write_json(os.path.join(target, fname), content)
            if not stored:
                os.rmdir(os.path.join(OUT, name))

            tok = CLIPTokenizer.from_pretrained(folder)
            results[name] = {
                "layout": layout,
                "patch": patch,
                "sd_vocab_files": bool(spec.get("sd_vocab_files")),
                "pad_id": tok.pad_token_id,
                "bos_id": tok.bos_token_id,
                "eos_id": tok.eos_token_id,
                "added_tokens": json.loads(tok.backend_tokenizer.to_str())["added_tokens"],
                "cases": [{"prompt": p, "ids": ids_of(tok, p)} for p in PROBES + prompts[:60]],
            }
        with gzip.GzipFile(os.path.join(OUT, "variants.json.gz"), "wb", mtime=0) as f:
            f.write(json.dumps(results, ensure_ascii=False).encode("utf-8"))
        write_json(os.path.join(OUT, "meta.json"), meta)
        print(f"save_pretrained wrote {files}; tokenizer.json {len(raw)} bytes, crc32 {meta['tokenizer_json_crc32']:08x}; "
              f"reloaded: {len(golden_cases)}/{len(golden_cases)} golden prompts same ids; {len(results)} variants")

        if args.check_dir:
            other = CLIPTokenizer.from_pretrained(args.check_dir)
            bad = [c["prompt"] for c in golden_cases if ids_of(other, c["prompt"]) != c["ids"]]
            print(f"--check-dir {args.check_dir}: {len(golden_cases) - len(bad)}/{len(golden_cases)} prompts give the reference ids")
            print("  files:", sorted(os.listdir(args.check_dir)))
            print("  added tokens:", json.loads(other.backend_tokenizer.to_str())["added_tokens"])
            if bad:
                print("  first mismatches:", [repr(p) for p in bad[:5]])
                sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
