#!/usr/bin/env python3
"""FLOPs of one call of each component of a diffusers model folder at an image size, as the
benchmarks time them: text encoder(s) on 2×77 tokens (prompt + negative), UNet on the CFG batch of
2 latents, VAE decoder on 1 latent. bench/cpu/run_e2e.sh divides these by the measured times to
put each engine's GFLOP/s beside the machine's sgemm rate.

Counted by torch's own FlopCounterMode (matrix products, convolutions, attention: 2 FLOP per
multiply-add; norms and elementwise ops are not counted) on the models built from the folder's
configs on the meta device: no weights are read and nothing is computed, so SDXL costs seconds.
  GOLDEN_PY bench/cpu/count_flops.py MODEL_DIR SIZE   -> one JSON line of GFLOP per call
"""
import json
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

TOKENS = 77


def gflop(fn):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() / 1e9


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: count_flops.py MODEL_DIR SIZE")
    model_dir, size = sys.argv[1], int(sys.argv[2])
    out = {"size": size}
    meta = torch.device("meta")
    ids = torch.zeros((2, TOKENS), dtype=torch.long, device=meta)
    for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
        if os.path.isdir(os.path.join(model_dir, name)):
            with meta:
                te = cls(CLIPTextConfig.from_pretrained(os.path.join(model_dir, name)))
            out[name + "_gflop"] = gflop(lambda: te(ids))
    with meta:
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(os.path.join(model_dir, "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(model_dir, "vae")))
    latent = size // 2 ** (len(vae.config.block_out_channels) - 1)
    x = torch.zeros((2, unet.config.in_channels, latent, latent), device=meta)
    ctx = torch.zeros((2, TOKENS, unet.config.cross_attention_dim), device=meta)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embedding + 6 size/crop values
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros((2, pooled), device=meta),
                                       "time_ids": torch.zeros((2, 6), device=meta)}
    out["unet_gflop"] = gflop(lambda: unet(x, torch.tensor(500, device=meta), encoder_hidden_states=ctx, **kwargs))
    z = torch.zeros((1, vae.config.latent_channels, latent, latent), device=meta)
    out["vae_decode_gflop"] = gflop(lambda: vae.decode(z))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
