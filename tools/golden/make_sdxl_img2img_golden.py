#!/usr/bin/env python3
"""Golden data for SDXL img2img, the SDXL refiner and the base → refiner hand-off: diffusers'
StableDiffusionXLImg2ImgPipeline (pinned versions, CPU, float32) on
  - "sdxl" / "sdxl_turbo": make_sdxl_golden.py's tiny SDXL base pipeline (the same weights: its
    build() with its recipes, checked against tests/data/golden/sdxl/pipelines.json, which the C++
    test rebuilds), loaded into the img2img pipeline (requires_aesthetics_score false: add_time_ids
    are original size, crop, target size, the sizes defaulting to the init image's);
  - "refiner": a tiny pipeline with SDXL refiner 1.0's layout: no text_encoder/tokenizer (the
    context is text_encoder_2's penultimate hidden states alone, 48 wide here, 1280 in the real
    one), a UNet with four levels (DownBlock2D, CrossAttn x2, DownBlock2D), transformer depth 2 and
    projection_class_embeddings_input_dim = pooled + 5 x addition_time_embed_dim, model_index's
    requires_aesthetics_score true and force_zeros_for_empty_prompt false, its own VAE (SDXL's
    scaling 0.13025) and SDXL's EulerDiscrete scheduler config. add_time_ids = (original size, crop,
    aesthetic_score), the negative half (..., negative_aesthetic_score); defaults 6.0 / 2.5.

Runs (2 prompts, per-item PNG init images written here, a list of per-item generators):
  img2img on the base: Euler at strength 0.75 and 0.3 (10 steps), DPM++ 2M at a non-square size
  with micro-conditioning values, zero negatives (force_zeros_for_empty_prompt), SDXL-Turbo's
  Euler ancestral + trailing schedule at guidance 0;
  the refiner alone (img2img): Euler with negatives, DPM++ 2M without (encoded "" since
  force_zeros_for_empty_prompt is false) and other aesthetic scores;
  two stages: base(denoising_end=f, output_type="latent") → refiner(image=those latents,
  denoising_start=f), the same generator objects continuing into the refiner (Euler, DPM++ 2M,
  Euler ancestral).

Writes tests/data/golden/sdxl_img2img/{pipelines.json, images.u8, latents.safetensors,
components.safetensors, init_*.png}: pipelines.json holds the refiner's configs and recipes (the
base's are in ../sdxl/pipelines.json) and per run: kind (img2img | refiner | two_stage), pipeline,
sampler, steps, guidance, strength / refiner_start, size, prompts, negatives, seeds, init image
files, micro values, aesthetic scores, image offset. latents: the final latents of each run.
Run: GOLDEN_PY tools/golden/make_sdxl_img2img_golden.py TOKENIZER_DIR   (as make_sdxl_golden.py)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

import diffusers
from diffusers import (AutoencoderKL, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel)
import transformers
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_sdxl_golden as xl  # noqa: E402  (build, NETWORKS, schedulers, prompts)
from make_img2img_golden import init_image  # noqa: E402  (the same kind of init images)
from make_pipeline_golden import jsonable, reinit, write_golden_folder  # noqa: E402

OUT = os.path.join(xl.ROOT, "tests", "data", "golden", "sdxl_img2img")
BASE_JSON = os.path.join(xl.ROOT, "tests", "data", "golden", "sdxl", "pipelines.json")

torch.set_num_threads(2)

REFINER_TIME_IDS = 5  # original size (h, w), crop (top, left), aesthetic score
REFINER_NETWORKS = {
    # stable-diffusion-xl-refiner-1.0's unet layout at tiny width (there: 384/768/1536/1536,
    # heads 6/12/24/24 of 64, transformer depth 4, cross-attention 1280, input dim 2560).
    "unet": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(32, 32, 64, 64), norm_num_groups=8,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=2, attention_head_dim=(2, 2, 4, 4), use_linear_projection=True,
                 cross_attention_dim=xl.TEXT2, addition_embed_type="text_time",
                 addition_time_embed_dim=xl.TIME_EMBED,
                 projection_class_embeddings_input_dim=xl.PROJECTION + REFINER_TIME_IDS * xl.TIME_EMBED),
    "vae": xl.NETWORKS["vae"],
    "text2": xl.NETWORKS["text2"],
}


def build_refiner(tok_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**REFINER_NETWORKS["unet"]).eval()
    vae = AutoencoderKL(**REFINER_NETWORKS["vae"]).eval()
    text2 = CLIPTextModelWithProjection(CLIPTextConfig(**REFINER_NETWORKS["text2"])).eval()
    recipes = {
        "unet": reinit(unet, "unet", 5_000_000),
        "vae": reinit(vae, "vae", 6_000_000),
        "text_encoder_2": reinit(text2, "text_encoder_2", 7_000_000),
    }
    tokenizer_2 = CLIPTokenizer.from_pretrained(tok_dir, pad_token="!")
    pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=text2, tokenizer=None,
                                            tokenizer_2=tokenizer_2, unet=unet,
                                            scheduler=xl.model_scheduler(xl.SDXL_SCHEDULER),
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
                                            add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    # model_index.json as stable-diffusion-xl-refiner-1.0 states it (components as listed there).
    model_index = {"_class_name": "StableDiffusionXLImg2ImgPipeline", "force_zeros_for_empty_prompt": False,
                   "requires_aesthetics_score": True, "text_encoder": [None, None], "tokenizer": [None, None],
                   "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                   "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    configs = {"unet": dict(unet.config), "vae": dict(vae.config),
               "text_encoder_2": {**text2.config.to_dict(), "architectures": ["CLIPTextModelWithProjection"]},
               "scheduler": xl.SDXL_SCHEDULER, "model_index": model_index}
    return pipe, configs, recipes


def img2img_of(base):
    """The base pipeline's networks in the img2img pipeline, as from_pipe would share them."""
    c = base.components
    pipe = StableDiffusionXLImg2ImgPipeline(vae=c["vae"], text_encoder=c["text_encoder"],
                                            text_encoder_2=c["text_encoder_2"], tokenizer=c["tokenizer"],
                                            tokenizer_2=c["tokenizer_2"], unet=c["unet"], scheduler=c["scheduler"],
                                            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
                                            add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# (kind, pipeline, sampler, steps, guidance, negatives?, width, height, strength or refiner start,
#  micro: None or (original_size, crops_coords_top_left, target_size), aesthetic (score, negative) or None)
CASES = [
    ("img2img", "sdxl", "euler", 5, 5.0, True, 64, 64, 0.75, None, None),
    ("img2img", "sdxl", "euler", 10, 5.0, True, 64, 64, 0.3, None, None),
    ("img2img", "sdxl", "dpm++2m", 6, 5.0, True, 80, 64, 0.6, ((512, 384), (16, 8), (64, 80)), None),
    ("img2img", "sdxl", "euler", 4, 6.0, False, 64, 48, 0.5, None, None),  # zero negatives
    ("img2img", "sdxl_turbo", "euler_a", 2, 0.0, False, 64, 64, 0.5, None, None),
    ("refiner", "refiner", "euler", 5, 5.0, True, 64, 64, 0.3, None, None),
    ("refiner", "refiner", "dpm++2m", 6, 5.0, False, 80, 64, 0.5, ((1024, 768), (8, 0), None), (7.5, 1.5)),
    ("two_stage", "sdxl", "euler", 8, 5.0, True, 64, 64, 0.8, None, None),
    ("two_stage", "sdxl", "dpm++2m", 10, 5.0, False, 64, 48, 0.7, None, (7.0, 2.0)),
    ("two_stage", "sdxl", "euler_a", 6, 5.0, True, 64, 64, 0.5, ((256, 256), (0, 0), None), None),
]


def size_kwargs(micro):
    if micro is None:
        return {}
    kw = dict(original_size=micro[0], crops_coords_top_left=micro[1])
    if micro[2] is not None:
        kw["target_size"] = micro[2]
    return kw


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: make_sdxl_img2img_golden.py TOKENIZER_DIR")
    tok_dir = sys.argv[1]
    os.makedirs(OUT, exist_ok=True)
    with open(BASE_JSON) as f:
        stored = json.load(f)["pipelines"]
    bases = {}
    for pname, sched in xl.PIPELINES.items():
        torch.manual_seed(0)
        base, _, recipes = xl.build(tok_dir, sched)
        known = stored[pname].get("weights") or stored[stored[pname]["weights_of"]]["weights"]
        assert recipes == known, f"{pname}: recipes differ from {BASE_JSON}"
        bases[pname] = base
    refiner, refiner_configs, refiner_recipes = build_refiner(tok_dir)

    images = bytearray()
    latents = {}
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                        "transformers": transformers.__version__},
           "note": "sdxl, sdxl_turbo: ../sdxl/pipelines.json (same recipes); weights: randn(seed)*scale+offset",
           "pipelines": {"refiner": {"configs": jsonable(refiner_configs), "weights": refiner_recipes}}, "runs": []}

    for ci, (kind, pname, sampler, steps, guidance, with_negative, width, height, fraction, micro,
             aesthetic) in enumerate(CASES):
        files = [init_image(os.path.join(OUT, f"init_{width}x{height}_{k}.png"), width, height, seed=width + 5 * k)
                 for k in range(2)]
        seeds = [7000 + 31 * ci, 2 ** 32 + 23 + ci]
        common = dict(prompt=xl.PROMPTS, num_inference_steps=steps, guidance_scale=guidance, **size_kwargs(micro))
        if with_negative:
            common["negative_prompt"] = xl.NEGATIVE
        refiner_kw = {}
        if aesthetic is not None:
            refiner_kw = dict(aesthetic_score=aesthetic[0], negative_aesthetic_score=aesthetic[1])

        def generate(output_type):
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            pil_in = [Image.open(os.path.join(OUT, f)).convert("RGB") for f in files]
            with torch.no_grad():
                if kind == "img2img":
                    pipe = img2img_of(bases[pname])
                    pipe.scheduler = xl.SAMPLERS[sampler].from_config(xl.model_scheduler(xl.PIPELINES[pname]).config)
                    return pipe(image=pil_in, strength=fraction, generator=gens, output_type=output_type,
                                **common).images
                refiner.scheduler = xl.SAMPLERS[sampler].from_config(xl.model_scheduler(xl.SDXL_SCHEDULER).config)
                if kind == "refiner":
                    return refiner(image=pil_in, strength=fraction, generator=gens, output_type=output_type,
                                   **common, **refiner_kw).images
                base = bases[pname]
                base.scheduler = xl.SAMPLERS[sampler].from_config(xl.model_scheduler(xl.PIPELINES[pname]).config)
                base_kw = {k: v for k, v in common.items() if k != "target_size"}
                handed = base(width=width, height=height, denoising_end=fraction, generator=gens,
                              output_type="latent", **base_kw).images
                return refiner(image=handed, denoising_start=fraction, generator=gens, output_type=output_type,
                               **common, **refiner_kw).images

        lat = generate("latent")
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in generate("pil")])
        assert arr.shape == (2, height, width, 3), arr.shape
        run_id = f"{kind}/{ci:02d}_{pname}_{sampler.replace('+', 'p')}_{fraction}"
        latents[run_id] = lat.detach().to(torch.float32).contiguous()
        original = micro[0] if micro else (height, width)
        crop = micro[1] if micro else (0, 0)
        target = micro[2] if micro and micro[2] is not None else (height, width)
        run = {"id": run_id, "kind": kind, "pipeline": pname, "sampler": sampler, "steps": steps,
               "guidance": guidance, "width": width, "height": height, "eta": 0.0, "prompts": xl.PROMPTS,
               "negative_prompts": xl.NEGATIVE if with_negative else None, "seeds": seeds,
               "micro": [original[0], original[1], crop[0], crop[1], target[0], target[1]],
               "aesthetic": list(aesthetic) if aesthetic else [6.0, 2.5],
               "images_offset": len(images), "images_shape": list(arr.shape)}
        if kind == "two_stage":
            run["refiner_start"] = fraction
        else:
            run["strength"] = fraction
            run["init_images"] = files
        doc["runs"].append(run)
        images += arr.tobytes()
        print(run_id, arr.shape, "mean", float(arr.mean()), file=sys.stderr)

    # Two-stage runs draw no init image: remove files no run names.
    named = {f for r in doc["runs"] for f in r.get("init_images", [])}
    for f in os.listdir(OUT):
        if f.startswith("init_") and f not in named:
            os.remove(os.path.join(OUT, f))
    write_golden_folder(OUT, images, latents, {"none": torch.zeros(1)}, doc)


if __name__ == "__main__":
    main()
