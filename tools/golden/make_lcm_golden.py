#!/usr/bin/env python3
"""Golden data for latent-consistency-distilled UNets (LCM checkpoints such as
SimianLuo/LCM_Dreamshaper_v7 and latent-consistency/lcm-sdxl): diffusers' StableDiffusionPipeline
(pinned versions, CPU, float32) on a tiny random SD 1.x pipeline whose UNet has a guidance
embedding (time_cond_proj_dim: TimestepEmbedding.cond_proj adds a projection of
get_guidance_scale_embedding(guidance_scale - 1) to the sinusoidal timestep projection), with an
LCMScheduler config as those checkpoints ship. With such a UNet diffusers runs no classifier-free
guidance (do_classifier_free_guidance is false whatever the guidance scale): the guidance scale only
enters through the embedding.

Runs: LCM at 1, 2 and 4 steps with guidance 8.5, 1.5 and 1.0 (w = 0: the embedding of zero), and
Euler ancestral switched from the same config; one non-square size. Components: one UNet call
with a given timestep_cond.

Weights are not stored: every parameter is randn(seed) * scale (+ offset), the recipe of
make_pipeline_golden.py (reinit), listed in the JSON.

Writes tests/data/golden/lcm/{pipelines.json, images.u8, latents.safetensors, components.safetensors}
(the format of tests/data/golden/sd2/; components NHWC).
Run: GOLDEN_PY tools/golden/make_lcm_golden.py TOKENIZER_DIR
"""
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, LCMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_pipeline_golden import PIPELINES as SD1, jsonable, reinit, write_golden_folder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "golden", "lcm")

torch.set_num_threads(2)

# SimianLuo/LCM_Dreamshaper_v7's scheduler/scheduler_config.json (the keys it states).
LCM_SCHEDULER = {
    "_class_name": "LCMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "original_inference_steps": 50, "prediction_type": "epsilon",
    "set_alpha_to_one": True, "steps_offset": 1, "trained_betas": None, "timestep_spacing": "leading",
}
TIME_COND = 16  # time_cond_proj_dim (256 in the real checkpoints)
NETWORKS = {**SD1["four_level"], "unet": {**SD1["four_level"]["unet"], "time_cond_proj_dim": TIME_COND}}

PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dawn, dramatic sky"]
# (sampler, steps, guidance, width, height)
CASES = [
    ("lcm", 4, 8.5, 64, 64),
    ("lcm", 2, 1.5, 64, 48),
    ("lcm", 1, 1.0, 64, 64),
    ("euler_a", 3, 8.5, 64, 64),
]


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_lcm_golden.py TOKENIZER_DIR")
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**NETWORKS["unet"]).eval()
    vae = AutoencoderKL(**NETWORKS["vae"]).eval()
    text = CLIPTextModel(CLIPTextConfig(**NETWORKS["text"])).eval()
    recipes = {"unet": reinit(unet, "unet", 1_000_000), "vae": reinit(vae, "vae", 2_000_000),
               "text_encoder": reinit(text, "text_encoder", 3_000_000)}
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(sys.argv[1]),
                                   unet=unet, scheduler=LCMScheduler.from_config(LCM_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": text.config.to_dict(),
               "scheduler": LCM_SCHEDULER}
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__},
           "note": "weights: randn(seed)*scale+offset per parameter (see make_pipeline_golden.py reinit)",
           "pipelines": {"lcm": {"configs": jsonable(configs), "weights": recipes}}, "runs": []}

    components = {}
    with torch.no_grad():
        ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids)[0]
        g = torch.Generator().manual_seed(7)
        sample = torch.randn((2, 4, 8, 10), generator=g)
        timesteps = torch.tensor([999.0, 259.0])
        w = torch.tensor([7.5, 0.5])
        cond = pipe.get_guidance_scale_embedding(w, embedding_dim=TIME_COND)
        out = pipe.unet(sample, timesteps, encoder_hidden_states=hidden, timestep_cond=cond).sample
        components["guidance_embedding"] = cond.contiguous()
        components["unet_sample"] = sample.permute(0, 2, 3, 1).contiguous()
        components["unet_context"] = hidden.contiguous()
        components["unet_out"] = out.permute(0, 2, 3, 1).contiguous()
    doc["components"] = {"unet_timesteps": timesteps.tolist(), "w": w.tolist()}

    images, latents = bytearray(), {}
    for ci, (sampler, steps, guidance, width, height) in enumerate(CASES):
        cls = LCMScheduler if sampler == "lcm" else EulerAncestralDiscreteScheduler
        pipe.scheduler = cls.from_config(LCMScheduler.from_config(LCM_SCHEDULER).config)
        seeds = [5000 + 37 * ci, 2 ** 32 + 23 + ci]
        kw = dict(prompt=PROMPTS, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height,
                  generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent")
        with torch.no_grad():
            lat = pipe(**kw).images
            kw["generator"] = [torch.Generator().manual_seed(s) for s in seeds]
            kw["output_type"] = "pil"
            pil = pipe(**kw).images
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in pil])
        run_id = f"lcm/{ci:02d}_{sampler}"
        latents[run_id] = lat.detach().to(torch.float32).contiguous()
        doc["runs"].append({"id": run_id, "pipeline": "lcm", "sampler": sampler, "steps": steps, "guidance": guidance,
                            "width": width, "height": height, "eta": 0.0, "prompts": PROMPTS,
                            "negative_prompts": ["", ""], "seeds": seeds, "images_offset": len(images),
                            "images_shape": list(arr.shape)})
        images += arr.tobytes()
        print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)

    write_golden_folder(OUT, images, latents, components, doc)


if __name__ == "__main__":
    main()
