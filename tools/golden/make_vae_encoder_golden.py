#!/usr/bin/env python3
"""Golden data for the VAE encoder (img2img): AutoencoderKL.encode and latent_dist.sample.

Builds the two tiny VAEs of make_models_golden.py (vae_a: four levels, 2 layers per block; vae_b:
two levels, 1 layer per block, another scaling factor) with fresh random parameters, runs the
encoder on the CPU in float32 and writes, per model, tests/data/golden/vae_encoder/<name>/:

  config.json                         diffusers' save_config
  diffusion_pytorch_model.safetensors encoder.* and quant_conv.* only (float16-representable values
                                      stored F16; the reference runs in float32 on those values)
  io.safetensors                      per case: image (the encoder's input in [-1, 1], NHWC),
                                      moments (quant_conv(encoder(image)), NHWC: mean then logvar),
                                      sample (latent_dist.sample(generator) per item, NHWC)
  io.json                             the cases' shapes and each item's generator seed

Inputs are what VaeImageProcessor.preprocess makes of 8-bit pixels: uint8 / 255 (float32), then
2 * x - 1. Sizes include a non-square one; the encoder's right/bottom padding before each stride-2
conv is what the test exercises. The sample draws randn of the mean's shape from a generator
seeded per item, as StableDiffusionImg2ImgPipeline does with a list of generators.

Usage: GOLDEN_PY tools/golden/make_vae_encoder_golden.py [OUT_DIR]   (default tests/data/golden/vae_encoder)
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderKL

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_models_golden as models  # noqa: E402  (reinit_, save_f16, nhwc, VAES)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "golden", "vae_encoder")

torch.set_grad_enabled(False)
torch.set_num_threads(1)

# (batch, height, width) in pixels per case; sides are multiples of the VAE's factor, as the
# pipeline requires.
CASES = {"vae_a": [(2, 32, 32), (1, 24, 40)], "vae_b": [(2, 16, 16), (1, 10, 14)]}


def make(name, seed):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    vae = AutoencoderKL(**models.VAES[name]["config"]).eval()
    models.reinit_(vae, seed, half=True)
    vae.save_config(d)
    sd = {k: v for k, v in vae.state_dict().items() if k.startswith("encoder.") or k.startswith("quant_conv.")}
    models.save_f16(sd, os.path.join(d, "diffusion_pytorch_model.safetensors"))
    g = torch.Generator().manual_seed(seed + 1)
    io, cases = {}, []
    for i, (b, h, w) in enumerate(CASES[name]):
        pixels = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
        # VaeImageProcessor: np.float32 / 255.0, then 2.0 * x - 1.0 in torch.
        x = torch.from_numpy(pixels.numpy().astype(np.float32) / 255.0)
        image = 2.0 * x - 1.0
        moments = vae.encode(image).latent_dist.parameters
        seeds = [1000 * seed + 10 * i + k for k in range(b)]
        samples = [vae.encode(image[k:k + 1]).latent_dist.sample(torch.Generator().manual_seed(s))
                   for k, s in enumerate(seeds)]
        io[f"image{i}"] = models.nhwc(image)
        io[f"moments{i}"] = models.nhwc(moments)
        io[f"sample{i}"] = models.nhwc(torch.cat(samples))
        cases.append({"shape": [b, h, w, 3], "seeds": seeds})
        print(f"{name} case {i}: image {(b, h, w)} -> moments {tuple(moments.shape)}, "
              f"|moments| {moments.norm():.4f}")
    save_file(io, os.path.join(d, "io.safetensors"))
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump({"cases": cases, "num_parameters_encoder": sum(v.numel() for v in sd.values())}, f, indent=1)


def main():
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}")
    for i, name in enumerate(CASES):
        make(name, 400 + i)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"total {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
