#!/usr/bin/env python3
"""Golden data for SDXL: diffusers' StableDiffusionXLPipeline (pinned versions, CPU, float32) on a
tiny random pipeline with SDXL base 1.0's structure:
  - two text encoders: CLIPTextModel (quick_gelu, as CLIP ViT-L) and CLIPTextModelWithProjection
    (gelu, as OpenCLIP bigG); the context is the concatenation of both encoders' penultimate hidden
    states (hidden_states[-2], no final layer norm), the pooled embedding is encoder 2's text_embeds;
  - the second tokenizer pads with "!" (SDXL's tokenizer_2/special_tokens_map.json);
  - a UNet with no attention in its first down block, transformer depth per block [1, 2, 3] (SDXL's
    [1, 2, 10] at tiny size, the mid block taking the last), per-block head counts given as
    attention_head_dim, linear projections, and the "text_time" added conditioning (add_time_proj +
    add_embedding over [pooled text, Fourier features of the six micro-conditioning values]);
  - a VAE with SDXL's scaling factor 0.13025 and force_upcast;
  - stable-diffusion-xl-base-1.0's scheduler_config.json (EulerDiscrete, leading spacing, offset 1),
    and the model_index flag force_zeros_for_empty_prompt (true for the base model): without a
    negative prompt, CFG's negative conditioning (context and pooled) is zeros.

Runs: Euler (the model's default) with and without negatives, Euler ancestral, DPM++ 2M and DDIM
switched as users switch (NewScheduler.from_config(<model's scheduler>.config)), CFG with and
without negatives, guidance 1.0, non-square sizes, micro-conditioning values other than the
defaults (original_size, crops_coords_top_left, target_size), and SDXL-Turbo's schedule (Euler
ancestral with trailing spacing, guidance 0, 1 and 2 steps).
Components: both text encoders' penultimate hidden states and encoder 2's pooled projection for the
runs' prompts, the tokenizer_2 ids ("!" padding) and one UNet call (batch 2, per-item timesteps and
micro-conditioning) on those.

Weights are not stored: every parameter is randn(seed) * scale (+ offset), the recipe of
make_pipeline_golden.py (reinit), listed in the JSON so the C++ test rebuilds the same float32
weights with its torch-compatible generator.

Writes tests/data/golden/sdxl/{pipelines.json, images.u8, latents.safetensors, components.safetensors}
(the format of tests/data/golden/sd2/, plus per run "negative_prompts": null when no negative prompt
was given, "micro" with the six add_time_ids values per item, and components in NHWC).
Run: GOLDEN_PY tools/golden/make_sdxl_golden.py TOKENIZER_DIR   (a CLIP tokenizer folder, e.g. the
tokenizer/ of `sd_mpi make-model --preset tiny DIR`)
"""
import os
import sys

import numpy as np
import torch

import diffusers
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel)
import transformers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_pipeline_golden import jsonable, reinit, write_golden_folder  # noqa: E402  (same recipe, same JSON form)

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "data", "golden", "sdxl")

torch.set_num_threads(2)

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (the keys it states).
SDXL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}
# stabilityai/sdxl-turbo: Euler ancestral, trailing spacing.
SDXL_TURBO_SCHEDULER = {**SDXL_SCHEDULER, "_class_name": "EulerAncestralDiscreteScheduler",
                        "timestep_spacing": "trailing"}

TEXT1 = 32          # hidden width of encoder 1 (768 in SDXL)
TEXT2 = 48          # hidden width of encoder 2 (1280 in SDXL)
PROJECTION = 40     # encoder 2's projection_dim: the pooled width (1280 in SDXL)
TIME_EMBED = 8      # addition_time_embed_dim (256 in SDXL)
NETWORKS = {
    "unet": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(32, 32, 64), norm_num_groups=8,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 3), attention_head_dim=(2, 2, 4),
                 use_linear_projection=True, cross_attention_dim=TEXT1 + TEXT2,
                 addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
                 projection_class_embeddings_input_dim=PROJECTION + 6 * TIME_EMBED),
    "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                block_out_channels=(16, 16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64, scaling_factor=0.13025,
                force_upcast=True),
    # SDXL's text_encoder/config.json at tiny width (CLIP ViT-L: quick_gelu; the pre-2023 ids).
    "text": dict(vocab_size=49408, hidden_size=TEXT1, intermediate_size=64, num_hidden_layers=3,
                 num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                 bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=TEXT1),
    # text_encoder_2 (OpenCLIP bigG as CLIPTextModelWithProjection: gelu, a projection).
    "text2": dict(vocab_size=49408, hidden_size=TEXT2, intermediate_size=96, num_hidden_layers=4,
                  num_attention_heads=3, max_position_embeddings=77, hidden_act="gelu",
                  bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=PROJECTION),
}
PIPELINES = {"sdxl": SDXL_SCHEDULER, "sdxl_turbo": SDXL_TURBO_SCHEDULER}

SAMPLERS = {  # our name → scheduler class
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
}

PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dawn, dramatic sky"]
NEGATIVE = ["blurry, low quality", "cartoon"]

# (pipeline, sampler, steps, guidance, negatives?, width, height, micro)
# micro: None (defaults: original = target = (height, width), crop (0, 0)) or
# (original_size, crops_coords_top_left, target_size) as (h, w) pairs.
CASES = [
    ("sdxl", "euler", 5, 5.0, True, 64, 64, None),
    ("sdxl", "euler", 4, 5.0, False, 64, 64, None),  # force_zeros_for_empty_prompt: zero negatives
    ("sdxl", "euler_a", 4, 6.0, True, 64, 48, None),
    ("sdxl", "dpm++2m", 5, 5.0, True, 80, 64, ((512, 384), (16, 8), (64, 80))),
    ("sdxl", "ddim", 4, 1.0, False, 64, 64, ((1024, 1024), (0, 0), (1024, 1024))),
    ("sdxl_turbo", "euler_a", 1, 0.0, False, 64, 64, None),
    ("sdxl_turbo", "euler_a", 2, 0.0, False, 48, 64, None),
]


def model_scheduler(scheduler_config):
    """The scheduler the model folder's scheduler_config.json makes."""
    return SAMPLERS["euler" if scheduler_config["_class_name"] == "EulerDiscreteScheduler" else "euler_a"].from_config(
        scheduler_config)


def build(tok_dir, scheduler_config):
    unet = UNet2DConditionModel(**NETWORKS["unet"]).eval()
    vae = AutoencoderKL(**NETWORKS["vae"]).eval()
    text = CLIPTextModel(CLIPTextConfig(**NETWORKS["text"])).eval()
    text2 = CLIPTextModelWithProjection(CLIPTextConfig(**NETWORKS["text2"])).eval()
    recipes = {
        "unet": reinit(unet, "unet", 1_000_000),
        "vae": reinit(vae, "vae", 2_000_000),
        "text_encoder": reinit(text, "text_encoder", 3_000_000),
        "text_encoder_2": reinit(text2, "text_encoder_2", 4_000_000),
    }
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    tokenizer_2 = CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text, text_encoder_2=text2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=model_scheduler(scheduler_config),
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": text.config.to_dict(),
               # "architectures" as save_pretrained writes it (a fresh model's config has none).
               "text_encoder_2": {**text2.config.to_dict(), "architectures": ["CLIPTextModelWithProjection"]},
               "scheduler": scheduler_config,
               "model_index": {"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True}}
    return pipe, configs, recipes


def micro_values(micro, width, height):
    if micro is None:
        return [height, width, 0, 0, height, width]
    (oh, ow), (ct, cl), (th, tw) = micro
    return [oh, ow, ct, cl, th, tw]


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_sdxl_golden.py TOKENIZER_DIR")
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

    # Components, on the base pipeline's networks.
    pipe = pipes["sdxl"]
    # The last text checks "!" as tokenizer_2's pad token: an added special token, so "!!" is two.
    texts = PROMPTS + NEGATIVE + ["wow!! so cool!"]
    with torch.no_grad():
        ids = pipe.tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        ids2 = pipe.tokenizer_2(texts, padding="max_length", max_length=77, truncation=True,
                                return_tensors="pt").input_ids
        out1 = pipe.text_encoder(ids, output_hidden_states=True)
        out2 = pipe.text_encoder_2(ids2, output_hidden_states=True)
        components["text1_penultimate"] = out1.hidden_states[-2].contiguous()
        components["text2_penultimate"] = out2.hidden_states[-2].contiguous()
        components["text2_pooled"] = out2.text_embeds.contiguous()
        # The pipeline's own encode_prompt (both encoders, concatenated), no CFG.
        ctx, _, pooled, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
        # tokenizer_2's ids of "!!" as the ordinary vocabulary would give them (one merged token).
        plain = CLIPTokenizer.from_pretrained(sys.argv[1])
        assert plain("wow!!").input_ids != pipe.tokenizer_2("wow!!").input_ids, "'!' pad not special?"
        components["prompt_embeds"] = ctx.contiguous()
        components["pooled_prompt_embeds"] = pooled.contiguous()
        g = torch.Generator().manual_seed(7)
        sample = torch.randn((2, 4, 8, 10), generator=g)
        timesteps = torch.tensor([981.0, 500.5])
        time_ids = torch.tensor([[64.0, 80.0, 0.0, 0.0, 64.0, 80.0], [512.0, 384.0, 16.0, 8.0, 64.0, 80.0]])
        out = pipe.unet(sample, timesteps, encoder_hidden_states=ctx,
                        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        components["unet_sample"] = sample.permute(0, 2, 3, 1).contiguous()
        components["unet_out"] = out.permute(0, 2, 3, 1).contiguous()
    doc["components"] = {"pipeline": "sdxl", "texts": texts, "text_ids": ids.tolist(), "text_ids_2": ids2.tolist(),
                         "unet_timesteps": timesteps.tolist(), "unet_time_ids": time_ids.tolist(),
                         "unet_context": "prompt_embeds, pooled_prompt_embeds"}

    for ci, (pname, sampler, steps, guidance, with_negative, width, height, micro) in enumerate(CASES):
        pipe = pipes[pname]
        # As users switch samplers: NewScheduler.from_config(<the model's scheduler>.config).
        pipe.scheduler = SAMPLERS[sampler].from_config(model_scheduler(PIPELINES[pname]).config)
        seeds = [3000 + 31 * ci, 2 ** 32 + 17 + ci]
        kw = dict(prompt=PROMPTS, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height,
                  generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="latent")
        if with_negative:
            kw["negative_prompt"] = NEGATIVE
        if micro is not None:
            kw.update(original_size=micro[0], crops_coords_top_left=micro[1], target_size=micro[2])
        with torch.no_grad():
            lat = pipe(**kw).images
            kw["generator"] = [torch.Generator().manual_seed(s) for s in seeds]
            kw["output_type"] = "pil"
            pil = pipe(**kw).images
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in pil])
        run_id = f"{pname}/{ci:02d}_{sampler.replace('+', 'p')}"
        latents[run_id] = lat.detach().to(torch.float32).contiguous()
        doc["runs"].append({"id": run_id, "pipeline": pname, "sampler": sampler, "steps": steps, "guidance": guidance,
                            "width": width, "height": height, "eta": 0.0, "prompts": PROMPTS,
                            "negative_prompts": NEGATIVE if with_negative else None,
                            "micro": micro_values(micro, width, height), "seeds": seeds,
                            "images_offset": len(images), "images_shape": list(arr.shape)})
        images += arr.tobytes()
        print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)

    write_golden_folder(OUT, images, latents, components, doc)


if __name__ == "__main__":
    main()
