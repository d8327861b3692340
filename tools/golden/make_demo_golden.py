#!/usr/bin/env python3
"""Golden data for the trained demo model (tools/demo_model/model, sd_mpi's `--model demo`):
diffusers' StableDiffusionPipeline (pinned versions, CPU, float32) loads the committed folder
itself and generates a few prompts with several samplers, CFG on and off.

The demo model's weights are real (trained), so unlike make_pipeline_golden.py nothing is
re-initialised; the C++ test (tests/unit/demo_model_test.cpp) runs the copy embedded in sd_mpi,
so it also checks that the embedded bytes are the folder's.

Writes tests/data/golden/demo/{runs.json, images.u8}: per run its parameters, prompts, seeds and the
byte offset of its uint8 images (N, H, W, 3) in images.u8.
Run: GOLDEN_PY tools/golden/make_demo_golden.py   (GOLDEN_PY = the venv of requirements.txt)
"""
import json
import os
import sys

import numpy as np
import torch

import diffusers
import transformers
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODEL = os.path.join(ROOT, "tools", "demo_model", "model")
OUT = os.path.join(ROOT, "tests", "data", "golden", "demo")

SAMPLERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}
PROMPTS = ["two small red circles on the left on a blue background",
           "one large yellow square in the center on a black background"]
CASES = [
    dict(sampler="pndm", steps=20, guidance=5.0),
    dict(sampler="ddim", steps=10, guidance=5.0),
    dict(sampler="euler", steps=12, guidance=1.0),
    dict(sampler="euler_a", steps=12, guidance=5.0),
    dict(sampler="dpm++2m karras", steps=10, guidance=7.5),
]


def main():
    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    model_config = pipe.scheduler.config
    os.makedirs(OUT, exist_ok=True)
    images = bytearray()
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__},
           "model": "tools/demo_model/model (fp16 weights, run in float32)", "runs": []}
    for ci, case in enumerate(CASES):
        cls, extra = SAMPLERS[case["sampler"]]
        pipe.scheduler = cls.from_config(model_config, **extra)  # as users switch samplers
        seeds = [7 + ci, 2 ** 33 + 11 * ci]
        kw = dict(prompt=PROMPTS, num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                  width=size, height=size, output_type="pil",
                  generator=[torch.Generator().manual_seed(s) for s in seeds])
        with torch.no_grad():
            pil = pipe(**kw).images
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in pil])
        run_id = f"{ci:02d}_{case['sampler'].replace(' ', '_').replace('+', 'p')}"
        doc["runs"].append({"id": run_id, **case, "width": size, "height": size, "prompts": PROMPTS,
                            "seeds": seeds, "images_offset": len(images), "images_shape": list(arr.shape)})
        images += arr.tobytes()
        print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)
    with open(os.path.join(OUT, "images.u8"), "wb") as f:
        f.write(images)
    with open(os.path.join(OUT, "runs.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
