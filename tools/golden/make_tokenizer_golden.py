#!/usr/bin/env python3
"""Golden data for the CLIP tokenizer (src/text/clip_tokenizer*.cpp).

The reference is transformers' CLIPTokenizer (5.24, served by `tokenizers` 0.23.3, no ftfy) loaded
with from_pretrained from a folder that this script builds on its own from OpenAI's BPE list
(src/text/bpe_simple_vocab_16e6.txt.gz): vocab.json and merges.txt made as the reference note says
(docs/reference/sd15-semantics.md §2), plus the tokenizer_config.json and special_tokens_map.json of the SD 1.5 hub
folder. Writes, under tests/data/golden/tokenizer/:

  prompts.json.gz   2,000+ prompts (hand-written cases + seeded random ones) with the 77 padded
                    ids of tokenizer(p, padding="max_length", max_length=77, truncation=True), the
                    untruncated content length, and for long prompts the text diffusers logs as
                    dropped (batch_decode(untruncated_ids[:, 76:-1])); also CRC-32s of the
                    reference vocabulary and merges, so the C++ side can check its builtin().
  unicode.json.gz   a probe of every code point: how the pre-tokenizer classes it (letter, number,
                    other, whitespace), what the normalizer makes of it alone, and the normalizer's
                    output on every canonical decomposition and on combining-mark orderings.
  variants/         files of other tokenizer folders (<name>/: the transformers-4 layout with
                    added_tokens_decoder, SD 2's pad "!", lstrip/rstrip/single_word flags, extra
                    special tokens, a toy vocabulary; "plain" has no config at all) and
                    variants.json.gz with their ids on special-token probes and 60 prompts. A
                    variant without vocab.json/merges.txt uses the BPE list's.

Folders of the tokenizer.json layout (what transformers 5 save_pretrained writes) have their own
script, make_tokenizer_json_golden.py, which reuses this one's folders and prompts.

Usage: python tools/golden/make_tokenizer_golden.py [--check-dir DIR]
  --check-dir DIR  also load DIR (e.g. written by ClipTokenizer::write_dir) with from_pretrained
                   and check that it gives the reference's ids on every prompt.
"""
import argparse
import gzip
import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata
import zlib

import transformers
import tokenizers
from transformers import CLIPTokenizer
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()  # "token indices sequence length is longer than …" is expected
try:
    import ftfy  # noqa: F401

    sys.exit("ftfy is installed; the reference environment has none (tools/golden/requirements.txt)")
except ImportError:
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BPE = os.path.join(ROOT, "src", "text", "bpe_simple_vocab_16e6.txt.gz")
OUT = os.path.join(ROOT, "tests", "data", "golden", "tokenizer")
SEED = 20251127


# ---- the tokenizer folder, built independently of the C++ code -------------------------------------
def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return [chr(c) for c in chars]  # in GPT-2's order: printable bytes, then the others


def build_vocab_and_merges():
    lines = gzip.open(BPE).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    assert len(merges) == 48894 and all(len(m) == 2 for m in merges)
    symbols = bytes_to_unicode()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == len(set(vocab)) == 49408
    return {token: i for i, token in enumerate(vocab)}, merges


def added(content, normalized, typed):
    d = {"content": content, "lstrip": False, "normalized": normalized, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **d} if typed else d


# The SD 1.5 hub folder (runwayml/stable-diffusion-v1-5/tokenizer = openai/clip-vit-large-patch14).
SD15_CONFIG = {
    "add_prefix_space": False,
    "bos_token": added("<|startoftext|>", True, True),
    "do_lower_case": True,
    "eos_token": added("<|endoftext|>", True, True),
    "errors": "replace",
    "model_max_length": 77,
    "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": "<|endoftext|>",
    "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": added("<|endoftext|>", True, True),
}
SD15_MAP = {
    "bos_token": added("<|startoftext|>", True, False),
    "eos_token": added("<|endoftext|>", True, False),
    "pad_token": "<|endoftext|>",
    "unk_token": added("<|endoftext|>", True, False),
}

# Other folder layouts met in the wild, each with the files it has besides vocab.json/merges.txt.
VARIANTS = {
    "plain": {},
    "sd15": {"tokenizer_config.json": SD15_CONFIG, "special_tokens_map.json": SD15_MAP},
    "transformers4": {  # as save_pretrained of transformers 4.3x writes the SD 1.5 tokenizer
        "tokenizer_config.json": {
            "add_prefix_space": False,
            "added_tokens_decoder": {
                "49406": {**added("<|startoftext|>", True, False), "special": True},
                "49407": {**added("<|endoftext|>", False, False), "special": True},
            },
            "bos_token": "<|startoftext|>",
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": "<|endoftext|>",
        },
        "special_tokens_map.json": {
            "bos_token": added("<|startoftext|>", True, False),
            "eos_token": added("<|endoftext|>", False, False),
            "pad_token": "<|endoftext|>",
            "unk_token": added("<|endoftext|>", False, False),
        },
    },
    "sd2": {  # SD 2.x pads with "!" (id 0), which then is a special token matched verbatim
        "tokenizer_config.json": {**SD15_CONFIG, "pad_token": "!"},
        "special_tokens_map.json": {**SD15_MAP, "pad_token": "!"},
    },
    "strip": {
        "special_tokens_map.json": {
            "bos_token": {**added("<|startoftext|>", True, False), "single_word": True},
            "eos_token": {**added("<|endoftext|>", False, False), "lstrip": True, "rstrip": True},
            "unk_token": {**added("<|endoftext|>", False, False), "lstrip": True, "rstrip": True},
            "pad_token": {**added("<|endoftext|>", False, False), "lstrip": True, "rstrip": True},
        },
        "tokenizer_config.json": {"model_max_length": 77},
    },
    "tiny": {  # a toy vocabulary: unknown characters, merge order, a pair listed twice
        "vocab.json": {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b": 3, "c": 4, "a</w>": 5,
                       "b</w>": 6, "c</w>": 7, "ab": 8, "aba": 9, "ab</w>": 10, "bc</w>": 11, "abc</w>": 12,
                       "aa": 13, "aa</w>": 14, "aaa</w>": 15, "aaa": 16, "!</w>": 17},
        "merges.txt": "#version: 0.2\nab a\na b\na b</w>\nb c</w>\nab c</w>\na a\naa a</w>\na a</w>\n"
                      "aa a\n#version again\na b\n",
        "tokenizer_config.json": {"model_max_length": 77},
    },
    "extra": {
        "tokenizer_config.json": {
            "additional_special_tokens": ["<foo>", added("<bar>", True, True), "cat"],
            "model_max_length": 77,
            "pad_token": added("<|startoftext|>", False, True),
        }
    },
}


def write_files(path, files):
    os.makedirs(path, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            if isinstance(content, str):
                f.write(content)
            else:
                json.dump(content, f, indent=2, ensure_ascii=False)
                f.write("\n")


def write_folder(path, vocab, merges, files):
    """vocab.json and merges.txt from the BPE list unless `files` brings its own, then the rest."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_files(path, files)


def crc(lines):
    return zlib.crc32("".join(lines).encode("utf-8")) & 0xFFFFFFFF


# ---- prompts ---------------------------------------------------------------------------------------
HAND_WRITTEN = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "",
    " ",
    "   \t\n  ",
    "\u00a0\u2003\u3000",
    "a",
    "!",
    "...",
    "!!!???...",
    "hello, world!",
    "Hello   World\t\n!",
    "don't stop, it's mine, we're here, they've gone, I'm fine, you'll see, he'd go",
    "DON'T STOP, IT'S MINE, WE'RE HERE, THEY'VE GONE, I'M FINE, YOU'LL SEE, HE'D GO",
    "'s't're've'm'll'd",
    "''s '''t rock'n'roll o'clock",
    "\u2019s curly apostrophe\u2019s",
    "the year 2024, 3.14159, 1,000,000 and 007",
    "12345678901234567890",
    "photo_of_a_cat-in-the-hat",
    "masterpiece, best quality, (masterpiece:1.2), ((detailed)), [[blurry]], {artstation}",
    "(masterpiece:1.2) (best quality:1.4) [foo|bar] [cat:dog:0.5] <lora:x:0.8> <hypernet:y:1>",
    "a cat BREAK a dog AND a bird",
    "embedding:EasyNegative, <lyco:abc_123:0.7>",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|startoftext|>a photo<|endoftext|>",
    "x<|endoftext|>y",
    "<|STARTOFTEXT|> <|ENDOFTEXT|> <|StartOfText|> <|EndOfText|>",
    "< |startoftext| > <|startoftext <|endoftext| |endoftext|>",
    "<|endoftext|><|endoftext|><|startoftext|>",
    " <|endoftext|> ",
    "<|endoftext|>\u0301",
    "&amp; &lt;b&gt; &quot;quoted&quot; &#39;x&#39; &nbsp; &copy;",
    "tom &amp; jerry",
    "caf\u00e9 cafe\u0301 CAF\u00c9 CAFE\u0301",
    "na\u00efve r\u00e9sum\u00e9 \u00fcber \u00e7a",
    "\u1e9b\u0323 \u0041\u030a \u212b \u2126 \u00c5",
    "Stra\u00dfe STRASSE \u1e9e",
    "\u0130stanbul \u0131\u0130 I\u0307",
    "\u03a3\u0399\u03a3\u03a5\u03a6\u039f\u03a3 \u03c3\u03bf\u03c6\u03cc\u03c2 \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3",
    "\u041c\u043e\u0441\u043a\u0432\u0430 \u043a\u0440\u0430\u0441\u0438\u0432\u0430\u044f \u0401\u0436",
    "\u4e00\u5e45\u7f8e\u4e3d\u7684\u5c71\u6c34\u753b",
    "\u732b\u306e\u5199\u771f \u30cd\u30b3 \uff8c\uff9f\uff9b\uff78\uff9e\uff97\uff91",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8 \u1112\u1161\u11ab",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u0661\u0662\u0663",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0967\u0968",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\U0001f600 \U0001f431\U0001f436 \u2764\ufe0f \U0001f44d\U0001f3fd",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5 \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "1\ufe0f\u20e3 #\ufe0f\u20e3",
    "\uff21\uff22\uff23 \uff41\uff42\uff43 \uff11\uff12\uff13 \uff01\uff1f",
    "\u00bd \u2153 \u00b2 \u2163 \u216b \u2460",
    "tab\tseparated\tvalues",
    "line1\nline2\r\nline3\rline4",
    "a\x00b\x01c\x7fd\x1be[0m",
    "zero\u200bwidth\u200cjoiner\u200dsoft\u00adhyphen",
    "\ufeffbom at start",
    "\u2028line sep\u2029para sep\u0085nel",
    "\u180emongolian\u180evowel",
    "\ufffd replacement \ufffd",
    "\U0010ffff\U000f0000 private \ue000",
    "\u07fd\u0301 a\u07fd\u0301 a\u0301\u07fd",
    "\U00011935\U00011930",
    "\U00031350\U00010d40\U00010d50\U00016ea0\ua7cb\u1c89",
    "a\u0316\u0301 a\u0301\u0316 e\u0323\u0302 o\u031b\u0303",
    "x" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a " * 80,
    "cat, " * 40,
    "masterpiece, best quality, ultra-detailed, 8k, photorealistic, a beautiful woman standing "
    "in a field of sunflowers at golden hour, wearing a flowing white dress, soft lighting, "
    "bokeh, shallow depth of field, award winning photography, trending on artstation, by greg "
    "rutkowski and alphonse mucha, highly detailed, sharp focus, cinematic composition",
    "\u732b" * 100,
    "\U0001f600" * 50,
]

WORDS = (
    "a an the of in on at with by for from to and or but photo painting portrait landscape cat dog "
    "bird horse dragon castle forest mountain river ocean city street night day sunset sunrise "
    "woman man girl boy child old young beautiful detailed realistic cinematic lighting dramatic "
    "soft hard colorful dark bright golden silver red blue green yellow purple black white "
    "masterpiece quality best ultra high resolution 4k 8k hdr octane render unreal engine "
    "artstation trending concept art illustration anime manga cartoon oil watercolor sketch "
    "digital studio ghibli greg rutkowski alphonse mucha wlop sakimichan intricate elegant "
    "highly smooth sharp focus bokeh depth field wide angle close up full body looking viewer "
    "standing sitting running flying holding wearing dress armor sword hat glasses hair eyes "
    "smile cyberpunk steampunk fantasy scifi medieval futuristic ancient ruins temple space "
    "galaxy nebula stars moon sun clouds rain snow fog fire water ice crystal glowing neon "
    "isn't doesn't can't won't it's he's she's they're we've i'm you'll we'd"
).split()

UNICODE_POOLS = {
    "latin_accents": "\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5\u00e6\u00e7\u00e8\u00e9\u00ea\u00eb\u00ec\u00ed\u00ee\u00ef"
    "\u00f1\u00f2\u00f3\u00f4\u00f5\u00f6\u00f8\u00f9\u00fa\u00fb\u00fc\u00fd\u00ff\u0101\u0107\u010d\u0119\u011f"
    "\u0142\u0144\u0151\u0153\u0159\u015b\u0161\u0163\u016f\u0171\u017a\u017e\u00c0\u00c9\u00d6\u00dc\u0152\u0178"
    "\u00df\u1e9e\u0130\u0131\u01c5\u01c6\u1f88\u0149",
    "combining": "\u0300\u0301\u0302\u0303\u0308\u030a\u030c\u0323\u0327\u0328\u0331\u0345\u0316\u031b\u0334"
    "\u05b0\u093c\u1dce\u20d7\u302a\u3099\u309a",
    "greek": "\u0391\u0392\u0393\u0394\u03a3\u03a9\u03b1\u03b2\u03b3\u03b4\u03c2\u03c3\u03c9\u0386\u0390\u03d0\u03f4",
    "cyrillic": "\u0410\u0411\u0412\u0416\u0419\u042f\u0430\u0431\u0432\u0436\u0439\u044f\u0401\u0451\u0406\u0456\u0490",
    "cjk": "\u4e00\u4e8c\u4e09\u5c71\u6c34\u706b\u732b\u72ac\u9f8d\u3042\u3044\u3046\u30a2\u30a4\u30a6\u3001\u3002"
    "\u300c\u300d\u30fc\uff8c\uff9e\U00020000\U0002a6d6\U00031350",
    "hangul": "\uac00\ub098\ub2e4\ud55c\uae00\u1100\u1161\u11a8\u3131\u314f",
    "arabic_hebrew": "\u0627\u0628\u062a\u062b\u0645\u0646\u0647\u064a\u064b\u0651\u0660\u0669\u05d0\u05d1\u05e9\u05b4\ufdfa",
    "indic_thai": "\u0915\u0916\u093f\u0940\u094d\u0966\u0b95\u0bcd\u0c95\u0e01\u0e31\u0e48\u0e50\u0f40\u0f71",
    "emoji": [
        "\U0001f600", "\U0001f431", "\U0001f525", "\u2764\ufe0f", "\U0001f44d\U0001f3fb", "\U0001f44d\U0001f3ff",
        "\U0001f469\u200d\U0001f4bb", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f3f3\ufe0f\u200d\U0001f308",
        "\U0001f1e9\U0001f1ea", "\U0001f1eb\U0001f1f7", "\u2615", "\u2b50", "\U0001f308", "\U0001faf6", "\u00a9\ufe0f",
        "1\ufe0f\u20e3", "\U0001f9d1\U0001f3fd\u200d\U0001f680",
    ],
    "fullwidth": "\uff21\uff3a\uff41\uff5a\uff10\uff19\uff01\uff08\uff09\uff1a\uff5e\u3000\uffe5",
    "numbers": "0123456789\u00b2\u00b3\u00b9\u00bc\u00bd\u2070\u2150\u2160\u2169\u2460\u2474\u0660\u06f5\u0966"
    "\u0e51\uff15\U0001d7ce\U00010d40\U0001e4f0",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u00a1\u00bf\u00ab\u00bb\u2013\u2014\u2018\u2019\u201c\u201d"
    "\u2026\u2022\u00b7\u00a7\u00b6\u2020\u2030\u20ac\u00a3\u00a5\u2122\u00ae\u2190\u2192\u221e\u2248\u2260",
    "spaces": " \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2002\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u0085",
    "invisible": "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u061c\u200e\u200f\u202a\u202e\u2066",
    "controls": "\x00\x01\x02\x07\x08\x1b\x1c\x1d\x1e\x1f\x7f\x80\x9f",
    "newer": "\u07fd\u0898\u08ca\u0c3c\u1abf\u1df6\ua82c\U00011935\U00011930\U0001e4ec\ua7cb\ua7cc\ua7da\ua7ce"
    "\u1c89\U00010d50\U00010d70\U00016ea0\U00016ebb\U00031350\U0002ebf0",
    "specials": ["<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "<|EndOfText|>", "<|", "|>", "<|endof", "text|>"],
    "entities": ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;", "&#x27;", "&copy;", "&hellip;"],
    "a1111": ["(", ")", "((", "))", "[", "]", ":1.2", ":0.8)", "|", "<lora:", ">", "BREAK", "AND", "\\(", "\\)"],
}


def pick(rng, pool):
    return pool[rng.randrange(len(pool))]


def random_word(rng):
    kind = rng.random()
    if kind < 0.55:
        w = pick(rng, WORDS)
        r = rng.random()
        if r < 0.15:
            w = w.upper()
        elif r < 0.3:
            w = w.capitalize()
        return w
    if kind < 0.62:
        return str(rng.randrange(0, 10 ** rng.randrange(1, 7)))
    pool = UNICODE_POOLS[pick(rng, sorted(UNICODE_POOLS))]
    n = rng.randrange(1, 5)
    return "".join(pick(rng, pool) for _ in range(n))


def random_separator(rng):
    r = rng.random()
    if r < 0.6:
        return " "
    if r < 0.75:
        return ", "
    if r < 0.85:
        return ""
    return pick(rng, UNICODE_POOLS["spaces"]) * rng.randrange(1, 4)


def random_prompt(rng, n_words):
    parts = []
    for _ in range(n_words):
        w = random_word(rng)
        r = rng.random()
        if r < 0.08:
            w = f"({w}:{rng.randrange(5, 20) / 10})"
        elif r < 0.12:
            w = f"[{w}|{random_word(rng)}]"
        elif r < 0.14:
            w = f"<lora:{w}:{rng.randrange(1, 10) / 10}>"
        parts.append(w)
        parts.append(random_separator(rng))
    text = "".join(parts)
    r = rng.random()
    if r < 0.15:
        text = unicodedata.normalize("NFD", text)
    elif r < 0.2:
        text = unicodedata.normalize("NFKC", text)
    return text


def random_code_points(rng, n):
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.5:
            cp = rng.randrange(0, 0x3000)
        elif r < 0.8:
            cp = rng.randrange(0x3000, 0x20000)
        else:
            cp = rng.randrange(0x20000, 0x110000)
        if 0xD800 <= cp < 0xE000:
            continue
        out.append(chr(cp))
    return "".join(out)


def make_prompts():
    rng = random.Random(SEED)
    prompts = list(HAND_WRITTEN)
    for _ in range(1200):  # short and medium prompts
        prompts.append(random_prompt(rng, rng.randrange(1, 25)))
    for _ in range(300):  # past 77 tokens
        prompts.append(random_prompt(rng, rng.randrange(40, 120)))
    for _ in range(250):  # random code points from all planes
        prompts.append(random_code_points(rng, rng.randrange(1, 40)))
    for _ in range(150):  # special-token strings in context
        parts = [pick(rng, UNICODE_POOLS["specials"]) if rng.random() < 0.4 else random_word(rng) for _ in range(rng.randrange(1, 8))]
        prompts.append("".join(p + (random_separator(rng) if rng.random() < 0.5 else "") for p in parts))
    for _ in range(150):  # one character class at a time, repeated (runs of punctuation, spaces, marks…)
        pool = UNICODE_POOLS[pick(rng, sorted(UNICODE_POOLS))]
        prompts.append("".join(pick(rng, pool) for _ in range(rng.randrange(1, 30))))
    seen, unique = set(), []
    for p in prompts:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


# ---- the Unicode probe -------------------------------------------------------------------------------
def unicode_probe(tok):
    backend = tok.backend_tokenizer
    normalize, pre = backend.normalizer.normalize_str, backend.pre_tokenizer.pre_tokenize_str

    def klass(c):  # L, N, O(ther) or S(pace), as the CLIP split sees it
        after_letter, after_punct = pre("x" + c), pre("!" + c)
        if len(after_letter) == 1 and len(after_punct) == 1:
            assert after_letter[0][1] == (0, 1) and after_punct[0][1] == (0, 1), repr(c)
            return "S"
        if len(after_letter) == 1:
            return "L"
        return "O" if len(after_punct) == 1 else "N"

    classes, singles = [], {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            k = "X"  # surrogates: not text
        else:
            c = chr(cp)
            k = klass(c)
            out = normalize(c)
            if out != c:
                singles[str(cp)] = out
        if not classes or classes[-1][1] != k:
            classes.append([cp, k])

    # Every code point between "a" and U+0334 (combining class 1): a mark with a higher class
    # moves after U+0334, one that composes with "a" composes. Kept where that happens.
    reorder = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        out = normalize("a" + c + "\u0334")
        if out != "a" + normalize(c) + "\u0334":
            reorder[str(cp)] = out

    # Combining marks (Python's Unicode 14, plus those of Unicode 15 that utf8proc 2.8 knows)
    # against marks of several classes, both ways round.
    unicode15_marks = [0x10EFD, 0x10EFE, 0x10EFF, 0x11F41, 0x11F42, 0x1E08F, 0x1E4EC, 0x1E4ED, 0x1E4EE, 0x1E4EF]
    marks = sorted(set(unicode15_marks) | {cp for cp in range(0x110000)
                                           if not 0xD800 <= cp < 0xE000 and unicodedata.combining(chr(cp))})
    references = ["\u05b0", "\u0334", "\u093c", "\u0316", "\u0301", "\u0345", "\u0315", "\u1dce"]
    sequences = []
    for m in marks:
        for r in references:
            for s in ("a" + chr(m) + r, "a" + r + chr(m)):
                sequences.append([s, normalize(s)])
    decompositions = set()
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        d = unicodedata.normalize("NFD", chr(cp))
        if d != chr(cp):
            decompositions.add(d)
    decompositions.add("\U00011935\U00011930")  # Dives Akuru, the one composition newer than 9.0
    for d in sorted(decompositions):
        sequences.append([d, normalize(d)])
    return {"classes": classes, "singles": singles, "reorder": reorder, "sequences": sequences}


# ---- main ------------------------------------------------------------------------------------------
def encode_case(tok, prompt):
    ids = tok(prompt, padding="max_length", max_length=77, truncation=True)["input_ids"]
    untruncated = tok(prompt, padding="longest")["input_ids"]
    case = {"prompt": prompt, "ids": ids, "n": len(untruncated) - 2}
    if len(untruncated) >= len(ids) and untruncated != ids:  # diffusers' condition for its warning
        case["dropped"] = tok.batch_decode([untruncated[77 - 1 : -1]])[0]
    return case


VARIANT_PROBES = [
    "<|startoftext|>", "<|STARTOFTEXT|>", "<|endoftext|>", "<|EndOfText|>", "x<|endoftext|>y",
    "a <|endoftext|> b", "a\u3000<|endoftext|>\t\tb", "a<|startoftext|>b", " <|startoftext|> ",
    "a-<|startoftext|>-b", "\u00e9<|startoftext|>", "<|startoftext|>\u0301", "<foo>", "<FOO> <bar> <BAR>",
    "a cat", "cats", "a  cat  <bar>cat", "!!", "a! b!!", "hello!", "<|endoftext|><|endoftext|>",
    "ab", "aba", "abab", "ababab", "abc", "abcabc", "aaaa", "aaaaa", "abd", "d", "dd d", "a!", "Ab Aba",
    "<|endoftext|>   <|endoftext|>", "\u0130<|endoftext|>\u0130", "a photo of a cat",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-dir", help="a tokenizer folder that must give the reference ids")
    args = ap.parse_args()

    vocab, merges = build_vocab_and_merges()
    work = tempfile.mkdtemp(prefix="sdmpi-tokenizer-golden-")
    try:
        folders = {}
        for name, files in VARIANTS.items():
            folders[name] = os.path.join(work, name)
            write_folder(folders[name], vocab, merges, files)
        ref = CLIPTokenizer.from_pretrained(folders["sd15"])
        assert type(ref).__name__ == "CLIPTokenizer" and ref.is_fast, "expected the tokenizers-backed class"

        model = json.loads(ref.backend_tokenizer.to_str())["model"]
        ref_vocab = sorted((i, t) for t, i in ref.backend_tokenizer.get_vocab(with_added_tokens=False).items())
        vocab_crc = crc(f"{i}\t{t}\n" for i, t in ref_vocab)
        merges_crc = crc((" ".join(m) if isinstance(m, list) else m) + "\n" for m in model["merges"])

        prompts = make_prompts()
        cases = [encode_case(ref, p) for p in prompts]
        os.makedirs(OUT, exist_ok=True)
        meta = {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "seed": SEED,
            "folder": "vocab.json/merges.txt from bpe_simple_vocab_16e6.txt.gz + SD 1.5 hub configs",
            "vocab_size": len(ref_vocab),
            "vocab_crc32": vocab_crc,  # over "id\ttoken\n" lines in id order
            "num_merges": len(model["merges"]),
            "merges_crc32": merges_crc,  # over "left right\n" lines in rank order
            "added_tokens": json.loads(ref.backend_tokenizer.to_str())["added_tokens"],
        }
        with gzip.GzipFile(os.path.join(OUT, "prompts.json.gz"), "wb", mtime=0) as f:
            f.write(json.dumps({"meta": meta, "cases": cases}, ensure_ascii=False).encode("utf-8"))

        probe = unicode_probe(ref)
        with gzip.GzipFile(os.path.join(OUT, "unicode.json.gz"), "wb", mtime=0) as f:
            f.write(json.dumps(probe, ensure_ascii=False).encode("utf-8"))

        variants = {}
        vdir = os.path.join(OUT, "variants")
        shutil.rmtree(vdir, ignore_errors=True)
        for name, files in VARIANTS.items():
            tok = CLIPTokenizer.from_pretrained(folders[name])
            variants[name] = {
                "pad_id": tok.pad_token_id,
                "bos_id": tok.bos_token_id,
                "eos_id": tok.eos_token_id,
                "added_tokens": json.loads(tok.backend_tokenizer.to_str())["added_tokens"],
                "cases": [{"prompt": p, "ids": tok(p, padding="max_length", max_length=77, truncation=True)["input_ids"]}
                          for p in VARIANT_PROBES + prompts[:60]],
            }
            if files:
                write_files(os.path.join(vdir, name), files)
        with gzip.GzipFile(os.path.join(vdir, "variants.json.gz"), "wb", mtime=0) as f:
            f.write(json.dumps(variants, ensure_ascii=False).encode("utf-8"))

        print(f"{len(cases)} prompts ({sum('dropped' in c for c in cases)} truncated), "
              f"{len(probe['classes'])} class runs, {len(probe['singles'])} normalized code points, "
              f"{len(probe['reorder'])} reordering marks, {len(probe['sequences'])} sequences, "
              f"{len(variants)} folder variants")

        if args.check_dir:
            other = CLIPTokenizer.from_pretrained(args.check_dir)
            bad = [c["prompt"] for c in cases if other(c["prompt"], padding="max_length", max_length=77, truncation=True)["input_ids"] != c["ids"]]
            print(f"--check-dir {args.check_dir}: {len(cases) - len(bad)}/{len(cases)} prompts give the reference ids")
            print("  added tokens:", json.loads(other.backend_tokenizer.to_str())["added_tokens"])
            if bad:
                print("  first mismatches:", [repr(p) for p in bad[:5]])
                sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
