"""Scores a demo model folder as tests/unit/demo_model_test.cpp does, in Python, for quick looks
while trying recipes: diffusers draws held-out captions (dataset.py's, the first 24 being the
test's tests/data/demo/heldout_prompts.txt) with the test's settings (seed 100 + i, 20 PNDM
steps, guidance 5, 64x64), and a copy of the test's detector reads each image.

The C++ test stays the judge; this copy follows its rules (nearest palette colour per pixel, none
beyond kMixedColourDistance, background = commonest class, shapes' colour = commonest other one
with at least kMinBlobPixels, blobs = its 4-connected components of that size, position =
dataset.group_position of their centroid).

Run: tools/golden/.venv/bin/python tools/demo_model/evaluate.py MODEL_DIR [-n 48] [--guidance 5]
         [--misses] [--sheet out.png]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402

PALETTE = np.array([dataset.PALETTE[c] for c in dataset.COLOURS], np.int64)
MIN_BLOB_PIXELS = 12  # the test's kMinBlobPixels
MIXED_COLOUR_DISTANCE = 100  # the test's kMixedColourDistance
ATTRIBUTES = ("background", "colour", "count", "position")


def expected(caption: str) -> dict:
    w = caption.split()
    return {"background": dataset.COLOURS.index(w[9]), "colour": dataset.COLOURS.index(w[2]),
            "count": dataset.COUNTS[w[0]], "position": w[6]}


def components(mask: np.ndarray) -> list[np.ndarray]:
    """The 4-connected components of a boolean mask, each as an array of (y, x)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    stack.append((yy, xx))
        found.append(np.array(pixels))
    return found


def detect(img: np.ndarray) -> dict:
    h, w, _ = img.shape
    dist = ((img.reshape(-1, 1, 3).astype(np.int64) - PALETTE[None]) ** 2).sum(-1)
    cls = np.where(dist.min(1) > MIXED_COLOUR_DISTANCE ** 2, -1, dist.argmin(1))
    hist = np.bincount(cls[cls >= 0], minlength=len(PALETTE))
    seen = {"background": int(np.argmax(hist)), "colour": -1, "count": 0, "position": ""}
    others = [c for c in range(len(PALETTE)) if c != seen["background"] and hist[c] >= MIN_BLOB_PIXELS]
    if not others:
        return seen
    seen["colour"] = max(others, key=lambda c: (hist[c], -c))  # the test keeps the first of equals
    blobs = [b for b in components((cls == seen["colour"]).reshape(h, w)) if len(b) >= MIN_BLOB_PIXELS]
    seen["count"] = len(blobs)
    if blobs:
        pixels = np.concatenate(blobs) + 0.5
        seen["position"] = dataset.group_position(pixels[:, 1].mean() * 64 / w, pixels[:, 0].mean() * 64 / h)
    return seen


def heldout_captions(n: int) -> list[str]:
    rng = np.random.default_rng(2024)  # dataset.py --heldout
    return [dataset.caption(*dataset.sample_attributes(rng, held_out=True)) for _ in range(n)]


SCHEDULERS = {  # --sampler: sd_mpi's names → diffusers' scheduler classes (the model's own config)
    "pndm": ("PNDMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
}


def draw(model_dir: str, captions: list[str], guidance: float, first_seed: int = 100, steps: int = 20,
         sampler: str = "pndm") -> list[np.ndarray]:
    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    cls, extra = SCHEDULERS[sampler]
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config, **extra)
    pipe.set_progress_bar_config(disable=True)
    images = []
    for i in range(0, len(captions), 16):
        part = captions[i:i + 16]
        with torch.no_grad():
            out = pipe(part, num_inference_steps=steps, guidance_scale=guidance, width=64, height=64, output_type="np",
                       generator=[torch.Generator().manual_seed(first_seed + i + k) for k in range(len(part))]).images
        images += list((out * 255).round().astype(np.uint8))
    return images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("-n", type=int, default=48, help="held-out captions (the test draws the first 24)")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--skip", type=int, default=0,
                    help="leave out the first SKIP held-out captions (e.g. 48: a selection set disjoint from the "
                         "test's 24 and the probes' 48, for choosing settings such as the guidance)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20, help="sampling steps (the test's: 20)")
    ap.add_argument("--sampler", default="pndm", choices=sorted(SCHEDULERS), help="the test's: pndm")
    ap.add_argument("--misses", action="store_true", help="print every caption not drawn right")
    ap.add_argument("--sheet", help="write the images, 8 a row, to this PNG")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    captions = heldout_captions(args.skip + args.n)[args.skip:]
    images = draw(args.model_dir, captions, args.guidance, first_seed=100 + args.skip, steps=args.steps,
                  sampler=args.sampler)
    right = dict.fromkeys(ATTRIBUTES, 0)
    right24 = dict.fromkeys(ATTRIBUTES, 0)  # the test's captions: its thresholds apply to these
    first24 = all_right = 0
    for i, (c, img) in enumerate(zip(captions, images)):
        e, s = expected(c), detect(img)
        ok = [e[k] == s[k] for k in ATTRIBUTES]
        for k, g in zip(ATTRIBUTES, ok):
            right[k] += g
            right24[k] += g and i < 24 and args.skip == 0
        all_right += all(ok)
        first24 += all(ok) and i < 24 and args.skip == 0
        if args.misses and not all(ok):
            print(f"MISS {c:62s} | saw {s}")
    print(f"{args.model_dir}: {all_right} of {len(captions)} right in all four (first 24: {first24}); "
          + ", ".join(f"{k} {v}" for k, v in right.items())
          + f"; guidance {args.guidance}, {args.sampler} {args.steps} steps")
    print("first 24 (the test's): " + ", ".join(f"{k} {v}" for k, v in right24.items()) + f", all four {first24}")
    if args.sheet:
        from PIL import Image

        rows = (len(images) + 7) // 8
        sheet = np.zeros((rows * 8, 64, 64, 3), np.uint8)
        sheet[:len(images)] = images
        sheet = sheet.reshape(rows, 8, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 64, 8 * 64, 3)
        Image.fromarray(sheet).resize((16 * 64, rows * 128), Image.NEAREST).save(args.sheet)


if __name__ == "__main__":
    main()
