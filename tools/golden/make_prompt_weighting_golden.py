#!/usr/bin/env python3
"""Golden data for A1111 prompt weighting (--prompt-weighting a1111; docs/reference/a1111-prompt-weighting.md).

The reference is AUTOMATIC1111's algorithm, re-implemented here in plain Python from its rules
(stable-diffusion-webui: prompt_parser.parse_prompt_attention, sd_hijack_clip's tokenize_line and
process_tokens with the "Original" emphasis, comma_padding_backtrack 20), on top of transformers'
CLIPTokenizer and CLIPTextModel: the text encoder of the tiny SD 1.x pipeline "four_level" of
make_pipeline_golden.py (same configs and weight recipe, rebuilt by the C++ test). compel is not
used: its own syntax ("word++", "(word)1.2") and its weighting (blending with an embedding of the
prompt without the word for weights < 1, no mean restoration) compute other numbers.

Writes tests/data/golden/prompt_weighting/{cases.json, contexts.safetensors, images.u8}:
  cases.json   per corpus prompt: the parsed (text, weight) list (weights as Python floats), each
               chunk's 77 ids and multipliers; per context case: prompt, clip_skip, tensor name;
               one generation: the pipeline's configs and recipes, items, the image offsets.
  contexts.safetensors   the weighted contexts [77*k, 32] float32
  images.u8    the generation's uint8 images, diffusers' StableDiffusionPipeline given
               prompt_embeds / negative_prompt_embeds from this reference (the negative padded
               with the encoding of "" to the prompt's chunk count, A1111's pad_cond_uncond)
Run: GOLDEN_PY tools/golden/make_prompt_weighting_golden.py TOKENIZER_DIR
"""
import json
import os
import re
import sys

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import EulerDiscreteScheduler, PNDMScheduler

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_pipeline_golden as mpg  # noqa: E402  (the tiny pipelines and their weight recipes)

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "golden", "prompt_weighting")

CHUNK = 75
COMMA_BACKTRACK = 20

# ---- the parser ---------------------------------------------------------------------------------
# One scanner over the alternatives A1111 tries in order at each position.
TOKEN = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse(prompt):
    out, rounds, squares = [], [], []

    def scale(start, factor):
        for item in out[start:]:
            item[1] *= factor

    for m in TOKEN.finditer(prompt):
        tok, number = m.group(0), m.group(1)
        if tok[0] == "\\":
            out.append([tok[1:], 1.0])
        elif tok == "(":
            rounds.append(len(out))
        elif tok == "[":
            squares.append(len(out))
        elif number is not None and rounds:
            scale(rounds.pop(), float(number))
        elif tok == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif tok == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        else:
            for i, piece in enumerate(BREAK.split(tok)):
                if i:
                    out.append(["BREAK", -1])
                out.append([piece, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    if not out:
        out = [["", 1.0]]
    merged = [out[0]]
    for text, weight in out[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return merged


# ---- chunks ----------------------------------------------------------------------------------------
def close(tokenizer, tokens, mults):
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    ids = [bos] + tokens + [eos] * (CHUNK + 1 - len(tokens))
    m = [1.0] + mults + [1.0] * (CHUNK + 1 - len(mults))
    if pad != eos:
        first = ids.index(eos)
        ids = ids[:first + 1] + [pad] * (len(ids) - first - 1)
    return {"ids": ids, "multipliers": m}


def chunks_of(tokenizer, fragments):
    comma = tokenizer.get_vocab().get(",</w>")
    done, tokens, mults, last_comma = [], [], [], -1
    for text, weight in fragments:
        if text == "BREAK" and weight == -1:
            done.append(close(tokenizer, tokens, mults))
            tokens, mults, last_comma = [], [], -1
            continue
        for t in tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"]:
            if t == comma:
                last_comma = len(tokens)
            elif len(tokens) == CHUNK and last_comma != -1 and len(tokens) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                done.append(close(tokenizer, tokens[:cut], mults[:cut]))
                tokens, mults, last_comma = tokens[cut:], mults[cut:], -1
            if len(tokens) == CHUNK:
                done.append(close(tokenizer, tokens, mults))
                tokens, mults, last_comma = [], [], -1
            tokens.append(t)
            mults.append(weight)
    if tokens or not done:
        done.append(close(tokenizer, tokens, mults))
    return done


# ---- the weighted encoding ----------------------------------------------------------------------------
def encode(text_model, chunks, clip_skip=0, pad_to=0):
    """[1, 77*k, D]: each chunk encoded alone (A1111: one transformer call per chunk index), z·m,
    then z·(mean before / mean after) over the chunk."""
    parts = []
    for c in chunks + [None] * max(0, pad_to - len(chunks)):
        if c is None:  # A1111's empty chunk: the encoding of ""
            c = close(TOKENIZER, [], [])
        ids = torch.tensor([c["ids"]])
        with torch.no_grad():
            out = text_model(ids, output_hidden_states=True)
            if clip_skip == 0:
                z = out.last_hidden_state
            else:
                z = text_model.final_layer_norm(out.hidden_states[-(clip_skip + 1)])  # transformers 5: on the model
            m = torch.asarray(c["multipliers"]).reshape(1, -1, 1)
            before = z.mean()
            z = z * m.expand(z.shape)
            after = z.mean()
            z = z * (before / after)
        parts.append(z)
    return torch.cat(parts, dim=1)


LONG = ", ".join(f"word{i} (detail{i}:1.2)" for i in range(30))
CORPUS = [
    "a photo of a cat",
    "a (red) cat",
    "a [blue] dog",
    "a ((very)) [[small]] house",
    "(masterpiece:1.5), (worst quality:0.8), [background]",
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "(unbalanced",
    "unmatched) and ] closers",
    "[open square (and round",
    r"\(literal\) \[brackets\] and a \\ backslash and a lone \ one",
    "a ( spaced : 1.25 ) weight",
    "a (neg:-0.5) weight and (plus:+1.5)",
    "(a)(b)[c][d]",
    "(a)[b] differ by rounding",
    "",
    "   ",
    "(:1.2)",
    "ratio 16:9 and time 10:30",
    "first part BREAK second part",
    "BREAK at start",
    "at end BREAK",
    "twice BREAK BREAK over",
    "(inside BREAK brackets)",
    "notaBREAK andBREAKnot BREAK_ x",
    "tab\tBREAK\nnewline",
    LONG,
    "x " * 80,
    "y, " * 40,
    "a " * 60 + ", " + "b " * 20,
    "(" + "long weighted " * 40 + ":1.3) tail",
    "unicode: café (naïve:1.2) 日本語 BREAK émoji 🐱",
]

TOKENIZER = None


def main():
    global TOKENIZER
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else None
    if not tok_dir:
        sys.exit("usage: make_prompt_weighting_golden.py TOKENIZER_DIR  (sd_mpi make-model --preset tiny DIR; DIR/tokenizer)")
    os.makedirs(OUT, exist_ok=True)
    spec = mpg.PIPELINES["four_level"]
    pipe, configs, recipes = mpg.build("four_level", spec, tok_dir)
    TOKENIZER = pipe.tokenizer
    text = pipe.text_encoder
    # The random final layer norm leaves each chunk's mean near 0 (about 1e-3 against values near 1),
    # where mean(z) / mean(z*m) turns float32 rounding into percent-size differences between any two
    # correct implementations. An offset on its bias gives the hidden states a mean well away from
    # 0, as trained text encoders have; the recipe records it, so the C++ test rebuilds the same.
    for r in recipes["text_encoder"]:
        if r["name"].endswith("final_layer_norm.bias"):
            r["offset"] = 0.5
            with torch.no_grad():
                dict(text.named_parameters())[r["name"]].add_(0.5)
    doc = {"pipeline": {"configs": mpg.jsonable(configs), "weights": recipes}, "corpus": [], "contexts": [],
           "generation": {}}
    tensors = {}
    for i, prompt in enumerate(CORPUS):
        fragments = parse(prompt)
        chunks = chunks_of(TOKENIZER, fragments)
        doc["corpus"].append({"prompt": prompt, "fragments": fragments, "chunks": chunks})
        for clip_skip in (0, 1):
            if clip_skip and i % 6:
                continue
            name = f"p{i:02d}_skip{clip_skip}"
            tensors[name] = encode(text, chunks, clip_skip)[0].contiguous()
            doc["contexts"].append({"prompt": prompt, "clip_skip": clip_skip, "tensor": name})
    save_file(tensors, os.path.join(OUT, "contexts.safetensors"))

    # One generation: two items of different chunk counts (2 and 1), a negative prompt shorter than
    # the first prompt; diffusers gets the reference's embeddings item by item.
    items = [
        {"prompt": "(a lighthouse:1.3) at dawn, [fog], " + "dramatic sky, " * 30 + "BREAK (oil painting)",
         "negative_prompt": "(blurry:1.2), low quality", "seed": 1234},
        {"prompt": "a [[small]] (cat:1.4) on a mat", "negative_prompt": "", "seed": 2 ** 32 + 7},
    ]
    base = spec["unet"]["sample_size"] * 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
    run = dict(sampler="euler", steps=5, guidance=7.5, width=base, height=base)
    pipe.scheduler = EulerDiscreteScheduler.from_config(PNDMScheduler.from_config(mpg.SD15_SCHEDULER).config)
    images = bytearray()
    for it in items:
        pos = chunks_of(TOKENIZER, parse(it["prompt"]))
        neg = chunks_of(TOKENIZER, parse(it["negative_prompt"]))
        k = max(len(pos), len(neg))
        with torch.no_grad():
            pil = pipe(prompt_embeds=encode(text, pos, 0, k), negative_prompt_embeds=encode(text, neg, 0, k),
                       num_inference_steps=run["steps"], guidance_scale=run["guidance"], width=run["width"],
                       height=run["height"], generator=torch.Generator().manual_seed(it["seed"]),
                       output_type="pil").images
        arr = np.asarray(pil[0], dtype=np.uint8)
        it["images_offset"] = len(images)
        it["chunks"] = k
        images += arr.tobytes()
        print(it["prompt"][:40], "chunks", k, "mean", float(arr.mean()), file=sys.stderr)
    doc["generation"] = {**run, "items": items, "image_shape": [base, base, 3]}
    with open(os.path.join(OUT, "images.u8"), "wb") as f:
        f.write(images)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"), ensure_ascii=False)  # compact: the chunks' ids are long lists
        f.write("\n")


if __name__ == "__main__":
    main()
