#!/usr/bin/env python3
"""Golden data for img2img: diffusers' StableDiffusionImg2ImgPipeline (pinned versions, CPU,
float32) on the two tiny random SD 1.x pipelines of make_pipeline_golden.py (the same weights:
its build() with its recipes, which the C++ test rebuilds from tests/data/golden/pipeline/
pipelines.json; this script checks that the recipes are the ones stored there).

Per run: 2 prompts with a negative prompt, CFG 7.5, one init image per item (PNG files written
here, loaded as users load them: PIL.Image.open(path).convert("RGB")), a list of per-item
generators, a sampler and a strength. Cases cover DDIM, Euler, PNDM, Euler a, DPM++ 2M and LCM, strengths
from 0.3 to 1.0, a 10-step run at strength 0.7 (int(10 * 0.7) = 7 in Python floats) and a
non-square size.

Also a JPEG file (made by PIL from one init image) and PIL's decoding of it, so the C++ test checks
our libjpeg decode against Pillow's pixel for pixel.

Writes tests/data/golden/img2img/:
  runs.json      per run: pipeline, sampler, steps, guidance, strength, size, prompts, negative
                 prompts, seeds, init image files, byte offset of its uint8 images in images.u8;
                 jpeg: the file, its size and the offset of PIL's pixels in images.u8
  images.u8      the uint8 images users get (PIL), (N, H, W, 3) per run, then the JPEG's pixels
  init_*.png, init_*.jpg
Run: GOLDEN_PY tools/golden/make_img2img_golden.py TOKENIZER_DIR   (as make_pipeline_golden.py)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

import diffusers
from diffusers import PNDMScheduler, StableDiffusionImg2ImgPipeline

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pipeline_golden as pg  # noqa: E402  (PIPELINES, SAMPLERS, SD15_SCHEDULER, build)

OUT = os.path.join(pg.ROOT, "tests", "data", "golden", "img2img")
PIPELINE_JSON = os.path.join(pg.ROOT, "tests", "data", "golden", "pipeline", "pipelines.json")


def init_image(path, width, height, seed):
    """A smooth colour field with edges and some noise, so the encoder sees structure."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / width * 2 * np.pi + seed)
    gch = 128 + 100 * np.cos(y / height * 3 * np.pi)
    b = np.where((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 3) ** 2, 220.0, 40.0)
    img = np.stack([r, gch, b], axis=-1) + g.normal(0, 12, (height, width, 3))
    Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB").save(path)
    return os.path.basename(path)


def main():
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else None
    if not tok_dir:
        sys.exit("usage: make_img2img_golden.py TOKENIZER_DIR  (sd_mpi make-model --preset tiny DIR; then DIR/tokenizer)")
    os.makedirs(OUT, exist_ok=True)
    with open(PIPELINE_JSON) as f:
        stored = json.load(f)["pipelines"]
    images = bytearray()
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
           "note": "models: tests/data/golden/pipeline/pipelines.json (same recipes)", "runs": []}
    for pname, spec in pg.PIPELINES.items():
        txt2img, configs, recipes = pg.build(pname, spec, tok_dir)
        assert recipes == stored[pname]["weights"], f"{pname}: recipes differ from {PIPELINE_JSON}"
        pipe = StableDiffusionImg2ImgPipeline(**txt2img.components)
        pipe.set_progress_bar_config(disable=True)
        base = spec["unet"]["sample_size"] * 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
        cases = [("ddim", 5, 0.5, base, base), ("euler", 5, 0.8, base, base), ("pndm", 5, 0.75, base, base),
                 ("euler_a", 5, 0.6, base, base), ("dpm++2m", 10, 0.7, base, base), ("ddim", 4, 1.0, base, base),
                 ("euler", 6, 0.3, base, base * 3 // 4), ("lcm", 4, 0.75, base, base)]
        for ci, (sampler, steps, strength, width, height) in enumerate(cases):
            files = [init_image(os.path.join(OUT, f"init_{pname}_{width}x{height}_{k}.png"), width, height,
                                seed=height + 7 * k + len(pname)) for k in range(2)]
            cls, extra = pg.SAMPLERS[sampler]
            pipe.scheduler = cls.from_config(PNDMScheduler.from_config(pg.SD15_SCHEDULER).config, **extra)
            seeds = [5000 + 31 * ci, 2 ** 32 + 11 + ci]
            pil_in = [Image.open(os.path.join(OUT, f)).convert("RGB") for f in files]
            with torch.no_grad():
                out = pipe(prompt=pg.PROMPTS, negative_prompt=pg.NEGATIVE, image=pil_in, strength=strength,
                           num_inference_steps=steps, guidance_scale=7.5,
                           generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pil").images
            arr = np.stack([np.asarray(im, dtype=np.uint8) for im in out])
            assert arr.shape == (2, height, width, 3), arr.shape
            run_id = f"{pname}/{ci:02d}_{sampler.replace('+', 'p')}_s{strength}"
            doc["runs"].append({"id": run_id, "pipeline": pname, "sampler": sampler, "steps": steps, "guidance": 7.5,
                                "strength": strength, "width": width, "height": height, "prompts": pg.PROMPTS,
                                "negative_prompts": pg.NEGATIVE, "seeds": seeds, "init_images": files,
                                "images_offset": len(images), "images_shape": list(arr.shape)})
            images += arr.tobytes()
            print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)
    # A JPEG (4:2:0, quality 90, as PIL saves by default but for the quality) and Pillow's decoding.
    src = Image.open(os.path.join(OUT, doc["runs"][0]["init_images"][0])).convert("RGB")
    jpeg = os.path.join(OUT, "init_four_level_jpeg.jpg")
    src.save(jpeg, quality=90)
    decoded = np.asarray(Image.open(jpeg).convert("RGB"), dtype=np.uint8)
    doc["jpeg"] = {"file": os.path.basename(jpeg), "width": decoded.shape[1], "height": decoded.shape[0],
                   "pixels_offset": len(images)}
    images += decoded.tobytes()
    with open(os.path.join(OUT, "images.u8"), "wb") as f:
        f.write(images)
    with open(os.path.join(OUT, "runs.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
