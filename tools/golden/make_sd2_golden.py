#!/usr/bin/env python3
"""Golden data for SD 2.x: diffusers' StableDiffusionPipeline (pinned versions, CPU, float32) on a
tiny random pipeline with SD 2.x's structure: CLIPTextModel with exact GELU (the OpenCLIP tower as
transformers holds it), UNet with linear proj_in/out, per-block head counts (the list the file calls
attention_head_dim) and upcast_attention, and stable-diffusion-2-1's scheduler_config.json (DDIM,
v_prediction); a second pipeline with the same networks and SD 2 base's config (PNDM, epsilon); a third
with SD-Turbo's (Euler, trailing spacing, epsilon) run at 1, 2 and 4 steps with guidance 0.

Runs: several samplers on the v-prediction model (each as users switch: NewScheduler.from_config(
<the model's scheduler>.config)), CFG 7.5 with negative prompts, guidance_rescale 0.7 (diffusers'
rescale_noise_cfg), guidance 1.0, non-square sizes; one epsilon run on the base pipeline.
Components: the text encoder's last_hidden_state for the runs' prompts, and one UNet call (batch 2,
per-item timesteps, one fractional) on those embeddings.

Weights are not stored: every parameter is randn(seed) * scale (+ offset), the recipe of
make_pipeline_golden.py (reinit), listed in the JSON so the C++ test rebuilds the same float32
weights with its torch-compatible generator.

Writes tests/data/golden/sd2/{pipelines.json, images.u8, latents.safetensors, components.safetensors}
(the format of tests/data/golden/pipeline/, plus per run "guidance_rescale" and a pipeline's
"weights_of" naming the pipeline whose weight recipes it shares; components are NHWC).
Run: GOLDEN_PY tools/golden/make_sd2_golden.py TOKENIZER_DIR   (a CLIP tokenizer folder, e.g. the
tokenizer/ of `sd_mpi make-model --preset tiny DIR`)
"""
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel)
import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_pipeline_golden import jsonable, reinit, write_golden_folder  # noqa: E402  (same recipe, same JSON form)

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "golden", "sd2")

torch.set_num_threads(2)

# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json (the keys it states).
SD21_SCHEDULER = {
    "_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction", "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
}
# stabilityai/stable-diffusion-2-base: PNDM, epsilon.
SD2_BASE_SCHEDULER = {**SD21_SCHEDULER, "_class_name": "PNDMScheduler", "prediction_type": "epsilon"}
# stabilityai/sd-turbo (SD 2.1 networks distilled for 1-4 steps): Euler with trailing spacing, epsilon;
# used with guidance 0 (no CFG pass). Its Euler ancestral sibling is covered by switching samplers.
SD_TURBO_SCHEDULER = {**SD21_SCHEDULER, "_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon",
                      "timestep_spacing": "trailing", "interpolation_type": "linear", "use_karras_sigmas": False}

NETWORKS = {
    "unet": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(32, 32, 64, 64), norm_num_groups=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=48, attention_head_dim=(2, 2, 4, 4), use_linear_projection=True,
                 upcast_attention=True),
    "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                block_out_channels=(16, 16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64),
    # SD 2.x's text_encoder/config.json at tiny width: gelu, the pre-2023 bos/eos/pad ids it keeps.
    "text": dict(vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                 num_attention_heads=3, max_position_embeddings=77, hidden_act="gelu",
                 bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=48),
}
PIPELINES = {"sd2_v": SD21_SCHEDULER, "sd2_base": SD2_BASE_SCHEDULER, "sd_turbo": SD_TURBO_SCHEDULER}

SAMPLERS = {  # our name → scheduler class, extra config
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "dpm++2m": (DPMSolverMultistepScheduler, {}),
}

PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dawn, dramatic sky"]
NEGATIVE = ["blurry, low quality", ""]

# (pipeline, sampler, steps, guidance, guidance_rescale, width, height)
CASES = [
    ("sd2_v", "ddim", 5, 7.5, 0.0, 64, 64),
    ("sd2_v", "euler", 5, 7.5, 0.0, 64, 64),
    ("sd2_v", "dpm++2m", 6, 7.5, 0.7, 64, 64),
    ("sd2_v", "euler_a", 5, 7.5, 0.7, 64, 48),
    ("sd2_v", "ddim", 4, 5.0, 0.7, 80, 64),
    ("sd2_v", "pndm", 4, 1.0, 0.7, 64, 64),  # no CFG: diffusers skips the rescale too
    ("sd2_base", "pndm", 5, 7.5, 0.0, 64, 64),
    ("sd2_base", "euler", 5, 7.5, 0.7, 48, 64),
    ("sd_turbo", "euler", 1, 0.0, 0.0, 64, 64),  # SD-Turbo as its model card runs it: 1 step, guidance 0
    ("sd_turbo", "euler", 4, 0.0, 0.0, 64, 48),
    ("sd_turbo", "euler_a", 2, 0.0, 0.0, 64, 64),
]


def model_scheduler(scheduler_config):
    """The scheduler the model folder's scheduler_config.json makes."""
    cls = {"DDIMScheduler": DDIMScheduler, "PNDMScheduler": PNDMScheduler,
           "EulerDiscreteScheduler": EulerDiscreteScheduler}[scheduler_config["_class_name"]]
    return cls.from_config(scheduler_config)


def build(tok_dir, scheduler_config):
    unet = UNet2DConditionModel(**NETWORKS["unet"]).eval()
    vae = AutoencoderKL(**NETWORKS["vae"]).eval()
    text = CLIPTextModel(CLIPTextConfig(**NETWORKS["text"])).eval()
    recipes = {
        "unet": reinit(unet, "unet", 1_000_000),
        "vae": reinit(vae, "vae", 2_000_000),
        "text_encoder": reinit(text, "text_encoder", 3_000_000),
    }
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=model_scheduler(scheduler_config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": text.config.to_dict(),
               "scheduler": scheduler_config}
    return pipe, configs, recipes


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_sd2_golden.py TOKENIZER_DIR")
    tok_dir = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    images = bytearray()
    latents, components = {}, {}
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__},
           "note": "weights: randn(seed)*scale+offset per parameter (see make_pipeline_golden.py reinit)",
           "pipelines": {}, "runs": []}
    pipes = {}
    for pname, sched in PIPELINES.items():
        torch.manual_seed(0)
        pipes[pname], configs, recipes = build(tok_dir, sched)
        entry = {"configs": jsonable(configs), "weights": recipes}
        for other, known in doc["pipelines"].items():  # the same networks: point at the recipes
            if known.get("weights") == recipes:
                entry = {"configs": entry["configs"], "weights_of": other}
        doc["pipelines"][pname] = entry

    # Components, on the v-prediction pipeline's networks.
    pipe = pipes["sd2_v"]
    with torch.no_grad():
        ids = pipe.tokenizer(PROMPTS + NEGATIVE, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        hidden = pipe.text_encoder(ids)[0]
        components["text_out"] = hidden.contiguous()
        g = torch.Generator().manual_seed(7)
        sample = torch.randn((2, 4, 8, 10), generator=g)
        timesteps = torch.tensor([981.0, 500.5])
        out = pipe.unet(sample, timesteps, encoder_hidden_states=hidden[:2]).sample
        components["unet_sample"] = sample.permute(0, 2, 3, 1).contiguous()
        components["unet_out"] = out.permute(0, 2, 3, 1).contiguous()
    doc["components"] = {"pipeline": "sd2_v", "text_ids": ids.tolist(), "unet_timesteps": timesteps.tolist(),
                         "unet_context": "text_out rows 0..1"}

    for ci, (pname, sampler, steps, guidance, rescale, width, height) in enumerate(CASES):
        pipe = pipes[pname]
        cls, extra = SAMPLERS[sampler]
        # As users switch samplers: NewScheduler.from_config(<the model's scheduler>.config).
        pipe.scheduler = cls.from_config(model_scheduler(PIPELINES[pname]).config, **extra)
        seeds = [2000 + 31 * ci, 2 ** 32 + 11 + ci]
        kw = dict(prompt=PROMPTS, num_inference_steps=steps, guidance_scale=guidance, guidance_rescale=rescale,
                  width=width, height=height, generator=[torch.Generator().manual_seed(s) for s in seeds],
                  output_type="latent")
        if guidance > 1:
            kw["negative_prompt"] = NEGATIVE
        with torch.no_grad():
            lat = pipe(**kw).images
            kw["generator"] = [torch.Generator().manual_seed(s) for s in seeds]
            kw["output_type"] = "pil"
            pil = pipe(**kw).images
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in pil])
        run_id = f"{pname}/{ci:02d}_{sampler.replace('+', 'p')}"
        latents[run_id] = lat.detach().to(torch.float32).contiguous()
        doc["runs"].append({"id": run_id, "pipeline": pname, "sampler": sampler, "steps": steps, "guidance": guidance,
                            "guidance_rescale": rescale, "width": width, "height": height, "eta": 0.0,
                            "prompts": PROMPTS, "negative_prompts": NEGATIVE if guidance > 1 else ["", ""],
                            "seeds": seeds, "images_offset": len(images), "images_shape": list(arr.shape)})
        images += arr.tobytes()
        print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)

    write_golden_folder(OUT, images, latents, components, doc)


if __name__ == "__main__":
    main()
