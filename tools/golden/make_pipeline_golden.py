#!/usr/bin/env python3
"""Golden data for whole txt2img generations: diffusers' StableDiffusionPipeline (pinned versions,
CPU, float32) on two tiny random pipelines of different topology, for every scheduler sd_mpi
supports, with guidance 7.5 and a negative prompt, a guidance-1.0 case and a non-square case.

Weights are not stored. Every parameter is re-initialised as
    torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale   (+ offset for norms)
with (name, shape, seed, scale, offset) listed in the JSON, so the C++ test rebuilds the same
float32 weights with its torch-compatible generator (itself golden-tested). No layer is left at
diffusers' zero initialisation, which would hide mistakes.

Writes tests/data/golden/pipeline/{pipelines.json, images.u8, latents.safetensors}:
  pipelines.json   configs, parameter recipes, and per run: parameters, prompts, seeds, the byte
                   offset of its uint8 images (N, H, W, 3) in images.u8
  latents.safetensors  the final latents of each run (N, 4, h, w) float32, NCHW as diffusers has them
Run: GOLDEN_PY tools/golden/make_pipeline_golden.py   (GOLDEN_PY = the venv of requirements.txt)
"""
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, LCMScheduler, PNDMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "golden", "pipeline")

torch.set_num_threads(2)
torch.backends.mkldnn.enabled = True

# The SD 1.5 scheduler_config.json (docs/reference/sd15-semantics.md §0): PNDM, scaled_linear, no timestep_spacing key.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}

PIPELINES = {
    # A: the full four-level SD 1.5 layout at small width.
    "four_level": {
        "unet": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                     block_out_channels=(32, 32, 64, 64), norm_num_groups=8,
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                     cross_attention_dim=32, attention_head_dim=2),
        "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                    block_out_channels=(16, 16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64),
        "text": dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                     bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=32),
    },
    # B: two levels, linear projections, per-block heads, one layer per block, exact GELU text MLP.
    "two_level": {
        "unet": dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                     block_out_channels=(24, 48), norm_num_groups=8,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                     cross_attention_dim=40, attention_head_dim=(3, 6), use_linear_projection=True),
        "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=8,
                    block_out_channels=(16, 24), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32),
        "text": dict(vocab_size=49408, hidden_size=40, intermediate_size=72, num_hidden_layers=3,
                     num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                     bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=40),
    },
}

SAMPLERS = {  # our name → (scheduler class, extra config, karras)
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {}),
    "dpm++2m karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "lcm": (LCMScheduler, {}),
}

PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dawn, dramatic sky"]
NEGATIVE = ["blurry, low quality", ""]


def reinit(model, component, seed_base):
    """Every parameter ← randn(seed) * scale + offset; returns the recipe list."""
    recipe = []
    sd = dict(model.named_parameters())
    for i, (name, p) in enumerate(sorted(sd.items())):
        seed = seed_base + i
        if p.ndim == 1:
            is_norm_weight = any(k in name for k in ("norm", "layer_norm", "group_norm")) and name.endswith("weight")
            scale, offset = (0.1, 1.0) if is_norm_weight else (0.05, 0.0)
        else:
            fan_in = int(np.prod(p.shape[1:])) if p.ndim > 1 else 1
            scale, offset = (1.0 / math.sqrt(fan_in), 0.0)
            if "embedding" in name:
                scale = 0.5
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            v = torch.randn(tuple(p.shape), generator=g, dtype=torch.float32) * scale
            if offset != 0.0:
                v = v + offset
            p.copy_(v)
        recipe.append({"name": name, "shape": list(p.shape), "seed": seed, "scale": scale, "offset": offset})
    return recipe


def build(name, spec, tok_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**spec["unet"]).eval()
    vae = AutoencoderKL(**spec["vae"]).eval()
    text = CLIPTextModel(CLIPTextConfig(**spec["text"])).eval()
    recipes = {
        "unet": reinit(unet, "unet", 1_000_000),
        "vae": reinit(vae, "vae", 2_000_000),
        "text_encoder": reinit(text, "text_encoder", 3_000_000),
    }
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": text.config.to_dict(),
               "scheduler": SD15_SCHEDULER}
    return pipe, configs, recipes


def write_golden_folder(out, images, latents, components, doc):
    """The files every pipeline golden writes into `out`: images.u8 (every run's uint8 images back to
    back), latents.safetensors, components.safetensors and pipelines.json."""
    with open(os.path.join(out, "images.u8"), "wb") as f:
        f.write(images)
    save_file(latents, os.path.join(out, "latents.safetensors"))
    save_file(components, os.path.join(out, "components.safetensors"))
    with open(os.path.join(out, "pipelines.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items() if not str(k).startswith("_") or k == "_class_name"}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, torch.dtype):
        return str(x).replace("torch.", "")
    return x


def main():
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else None
    if not tok_dir:
        sys.exit("usage: make_pipeline_golden.py TOKENIZER_DIR  (write one with: sd_mpi make-model --preset tiny DIR; "
                 "then DIR/tokenizer)")
    os.makedirs(OUT, exist_ok=True)
    images = bytearray()
    latents = {}
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__},
           "note": "weights: randn(seed)*scale+offset per parameter (see make_pipeline_golden.py)",
           "pipelines": {}, "runs": []}
    for pname, spec in PIPELINES.items():
        pipe, configs, recipes = build(pname, spec, tok_dir)
        doc["pipelines"][pname] = {"configs": jsonable(configs), "weights": recipes}
        vae_scale = 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
        base = spec["unet"]["sample_size"] * vae_scale
        cases = []
        for sampler in SAMPLERS:
            cases.append(dict(sampler=sampler, steps=5, guidance=7.5, width=base, height=base, eta=0.0))
        cases.append(dict(sampler="ddim", steps=4, guidance=7.5, width=base, height=base, eta=0.6))
        cases.append(dict(sampler="pndm", steps=4, guidance=1.0, width=base, height=base, eta=0.0))
        cases.append(dict(sampler="euler_a", steps=4, guidance=1.0, width=base, height=base, eta=0.0))
        cases.append(dict(sampler="euler", steps=6, guidance=7.5, width=base, height=base * 3 // 4, eta=0.0))
        cases.append(dict(sampler="dpm++2m", steps=16, guidance=5.0, width=base * 5 // 4, height=base, eta=0.0))
        for ci, case in enumerate(cases):
            cls, extra = SAMPLERS[case["sampler"]]
            # As users switch samplers: NewScheduler.from_config(<the model's PNDM scheduler>.config).
            base_config = PNDMScheduler.from_config(SD15_SCHEDULER).config
            pipe.scheduler = cls.from_config(base_config, **extra)
            seeds = [1000 + 17 * ci, 2 ** 32 + 5 + ci]
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            kw = dict(prompt=PROMPTS, num_inference_steps=case["steps"], guidance_scale=case["guidance"],
                      width=case["width"], height=case["height"], generator=gens, eta=case["eta"], output_type="latent")
            if case["guidance"] > 1:
                kw["negative_prompt"] = NEGATIVE
            # Pass 1: the final latents; pass 2 (fresh generators): the images, as users get them.
            with torch.no_grad():
                lat = pipe(**kw).images
                kw["generator"] = [torch.Generator().manual_seed(s) for s in seeds]
                kw["output_type"] = "pil"
                pil = pipe(**kw).images
            arr = np.stack([np.asarray(im, dtype=np.uint8) for im in pil])
            run_id = f"{pname}/{ci:02d}_{case['sampler'].replace(' ', '_').replace('+', 'p')}"
            latents[run_id] = lat.detach().to(torch.float32).contiguous()
            doc["runs"].append({"id": run_id, "pipeline": pname, **case,
                                "prompts": PROMPTS, "negative_prompts": NEGATIVE if case["guidance"] > 1 else ["", ""],
                                "seeds": seeds, "images_offset": len(images), "images_shape": list(arr.shape)})
            images += arr.tobytes()
            print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)
    with open(os.path.join(OUT, "images.u8"), "wb") as f:
        f.write(images)
    save_file(latents, os.path.join(OUT, "latents.safetensors"))
    with open(os.path.join(OUT, "pipelines.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
