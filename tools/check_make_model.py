#!/usr/bin/env python3
"""Checks folders written by `sd_mpi make-model` against the pinned diffusers / transformers.

For each folder:
  1. every component loads with output_loading_info: no missing, unexpected or mismatched keys and
     no error messages (UNet2DConditionModel, AutoencoderKL, CLIPTextModel), and the whole
     StableDiffusionPipeline loads from model_index.json without a warning about weights;
  2. the tokenizer gives the SD 1.x ids ("a photo of a cat" → 49406 320 1125 539 320 2368 49407);
  3. each config.json equals, key for key, what diffusers / transformers write for the loaded
     component (save_pretrained into a temporary folder), apart from provenance keys (the
     scheduler config, like SD 1.5's, states a subset: the keys it states must agree);
  4. the pipeline runs 2 PNDM steps at 64x64 (float32, CPU) and gives a finite image;
  5. weight statistics: no all-zero tensor, largest |w|, and the largest activation magnitude
     that fp16 would have to hold in one UNet call (should stay far below 65504).

Not part of CI (needs the Python ML stack). Usage:
  GOLDEN_PY tools/check_make_model.py DIR [DIR ...]
  e.g. sd_mpi make-model --preset tiny --seed 0 /tmp/tiny && GOLDEN_PY tools/check_make_model.py /tmp/tiny
Exit status 0 when every check passes.
"""

import json
import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

import diffusers
import transformers
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

torch.set_grad_enabled(False)
PROVENANCE = {"_diffusers_version", "transformers_version", "_name_or_path", "dtype", "torch_dtype",
              "architectures", "_commit_hash", "output_hidden_states", "return_dict"}

failures = []


def check(cond, what):
    print(("  ok    " if cond else "  FAIL  ") + what)
    if not cond:
        failures.append(what)


def compare_json(ours, theirs, what):
    diff = []
    for k in sorted(set(ours) | set(theirs)):
        if k in PROVENANCE:
            continue
        if ours.get(k, "<absent>") != theirs.get(k, "<absent>"):
            diff.append(f"{k}: ours {ours.get(k, '<absent>')!r} theirs {theirs.get(k, '<absent>')!r}")
    check(not diff, f"{what} equals what the library writes" + ("" if not diff else ": " + "; ".join(diff)))


def loading_info_clean(info, what):
    bad = {k: sorted(v)[:5] for k, v in info.items() if v}
    check(not bad, f"{what}: no missing/unexpected/mismatched keys" + ("" if not bad else f" {bad}"))


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def check_folder(folder):
    print(f"{folder}:")
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    check(index.get("_class_name") == "StableDiffusionPipeline", "model_index names StableDiffusionPipeline")

    unet, info = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", output_loading_info=True,
                                                      torch_dtype=torch.float32)
    loading_info_clean(info, "unet")
    vae, info = AutoencoderKL.from_pretrained(folder, subfolder="vae", output_loading_info=True,
                                              torch_dtype=torch.float32)
    loading_info_clean(info, "vae")
    text, info = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", output_loading_info=True,
                                               dtype=torch.float32)
    loading_info_clean(info, "text_encoder")
    n_unet = sum(p.numel() for p in unet.parameters())
    n_vae = sum(p.numel() for p in vae.parameters())
    n_text = sum(p.numel() for p in text.parameters())
    print(f"  parameters: unet {n_unet:,}, vae {n_vae:,}, text_encoder {n_text:,}")

    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    ids = tok("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids
    check(ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and len(ids) == 77 and ids[-1] == 49407,
          "tokenizer gives the SD 1.x ids")

    # The whole pipeline: loads without weight warnings, saves the same configs, runs.
    capture = Capture()
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(capture)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    messages = capture.records + [str(w.message) for w in caught]
    weight_warnings = [m for m in messages if any(s in m.lower() for s in
                                                  ("missing", "unexpected", "not initialized", "newly initialized", "mismatch"))]
    check(not weight_warnings, "pipeline loads without weight warnings" + ("" if not weight_warnings else f": {weight_warnings[:3]}"))
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        for sub, fname in (("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                           ("scheduler", "scheduler_config.json"), ("", "model_index.json")):
            with open(os.path.join(folder, sub, fname)) as f:
                ours = json.load(f)
            with open(os.path.join(tmp, sub, fname)) as f:
                theirs = json.load(f)
            if sub == "scheduler":
                # SD 1.5's scheduler_config.json states only some keys (no timestep_spacing,
                # prediction_type): diffusers leaves the others to each scheduler's own default
                # when another scheduler is built from it, so they must stay absent.
                theirs = {k: v for k, v in theirs.items() if k in ours}
            compare_json(ours, theirs, os.path.join(sub, fname))
        for fname in ("tokenizer_config.json", "special_tokens_map.json"):
            path = os.path.join(folder, "tokenizer", fname)
            if os.path.exists(path) and os.path.exists(os.path.join(tmp, "tokenizer", fname)):
                with open(path) as f:
                    ours = json.load(f)
                with open(os.path.join(tmp, "tokenizer", fname)) as f:
                    theirs = json.load(f)
                if ours != theirs:
                    print(f"  note  tokenizer/{fname} differs from what transformers re-saves (informative)")

    # Largest activation one UNet call produces (fp16 holds up to 65504).
    peak = {"max": 0.0}

    def hook(_module, _inputs, output):
        t = output[0] if isinstance(output, tuple) else output
        if torch.is_tensor(t):
            peak["max"] = max(peak["max"], float(t.abs().max()))

    handles = [m.register_forward_hook(hook) for m in pipe.unet.modules()]
    image = pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    for h in handles:
        h.remove()
    check(image.shape == (1, 64, 64, 3) and np.isfinite(image).all(), "pipeline runs (2 steps, 64x64)")
    print(f"  image mean {image.mean():.3f} std {image.std():.3f}; largest UNet activation {peak['max']:.1f}")
    check(peak["max"] < 6e4 / 8, "UNet activations stay far inside the fp16 range")

    zero = [n for m in (unet, vae, text) for n, p in m.named_parameters() if not p.abs().max() > 0]
    check(not zero, "no all-zero parameter" + ("" if not zero else f": {zero[:5]}"))
    wmax = max(float(p.abs().max()) for m in (unet, vae, text) for p in m.parameters())
    print(f"  largest |w| {wmax:.3f}")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}")
    for folder in sys.argv[1:]:
        check_folder(folder)
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
