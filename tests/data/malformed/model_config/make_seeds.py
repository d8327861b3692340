#!/usr/bin/env python3
"""Writes the seeds of tests/fuzz/model_config_fuzz.cpp: each seed packs a model folder's five JSON
files (tests/fuzz/fuzz_files.h: a line "@@ unet/config.json" starts that file). The valid configs are
the SD 1.5 and tiny rows of src/io/sd_configs.cpp (read from that file, not copied); each broken seed
changes one thing: absurd sizes (channels 1e9, a million layers, 100 blocks), wrong types, NaN,
another family (SDXL, SD 2.x), a missing or truncated file, deep nesting. No manifest: the fuzz
target asserts an InputError or a config, never a crash or a huge allocation.
Run from this folder: python3 make_seeds.py"""
import copy
import glob
import json
import os
import re

with open("../../../../src/io/sd_configs.cpp") as f:
    source = f.read()
raw = dict(re.findall(r'const char\* (k\w+) = R"json\((.*?)\)json";', source, re.S))
SD15 = {"unet": json.loads(raw["kSd15Unet"]), "vae": json.loads(raw["kSd15Vae"]),
        "text_encoder": json.loads(raw["kSd15TextEncoder"]), "scheduler": json.loads(raw["kSd15Scheduler"])}


def merge_patch(target, patch):  # RFC 7386, as sd_configs.cpp applies the tiny row
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


TINY = {c: merge_patch(SD15[c], json.loads(raw[k])) for c, k in
        [("unet", "kTinyUnet"), ("vae", "kTinyVae"), ("text_encoder", "kTinyTextEncoder")]}
TINY["scheduler"] = SD15["scheduler"]
INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
         "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
         "scheduler": ["diffusers", "PNDMScheduler"]}
FILES = {"index": "model_index.json", "unet": "unet/config.json", "vae": "vae/config.json",
         "text_encoder": "text_encoder/config.json", "scheduler": "scheduler/scheduler_config.json"}


def folder(base, **changes):
    """base's files as bytes; changes: component -> dict of keys to set (None: delete the key),
    or bytes (the file's whole text), or False (file left out)."""
    docs = {"index": copy.deepcopy(INDEX), **copy.deepcopy(base)}
    out = {}
    for comp, name in FILES.items():
        change = changes.get(comp)
        if change is False:
            continue
        if isinstance(change, bytes):
            out[name] = change
            continue
        doc = docs[comp]
        for k, v in (change or {}).items():
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        out[name] = json.dumps(doc, indent=1).encode()
    return out


seeds = {
    "valid_sd15": folder(SD15),
    "valid_tiny": folder(TINY),
    "valid_tiny_lists": folder(TINY, unet={"layers_per_block": [1, 1], "cross_attention_dim": [32, 32]}),
    "valid_euler": folder(TINY, scheduler={"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing"}),
    "unet_channels_1e9": folder(TINY, unet={"block_out_channels": [1000000000, 1000000000]}),
    "unet_in_channels_huge": folder(TINY, unet={"in_channels": 2**40}),
    "unet_layers_million": folder(TINY, unet={"layers_per_block": 1000000}),
    "unet_100_blocks": folder(TINY, unet={"block_out_channels": [32] * 100, "down_block_types": ["DownBlock2D"] * 100,
                                          "up_block_types": ["UpBlock2D"] * 100}),
    "unet_heads_zero": folder(TINY, unet={"attention_head_dim": 0}),
    "unet_groups_zero": folder(TINY, unet={"norm_num_groups": 0}),
    "unet_channels_string": folder(TINY, unet={"block_out_channels": "32,64"}),
    "unet_sample_size_list": folder(TINY, unet={"sample_size": [8, 16]}),
    "unet_sample_size_empty_list": folder(TINY, unet={"sample_size": []}),
    "unet_cross_attention_1024": folder(SD15, unet={"cross_attention_dim": 1024}),
    "unet_class_other": folder(TINY, unet={"_class_name": "UNet2DModel"}),
    "unet_eps_nan": folder(TINY, unet=json.dumps({**TINY["unet"], "norm_eps": 0}).replace('"norm_eps": 0', '"norm_eps": NaN').encode()),
    "unet_float_channels": folder(TINY, unet={"in_channels": 4.5}),
    "vae_channels_1e9": folder(TINY, vae={"block_out_channels": [1e9]}),
    "vae_latent_negative": folder(TINY, vae={"latent_channels": -4}),
    "vae_scaling_zero": folder(TINY, vae={"scaling_factor": 0}),
    "vae_nine_blocks": folder(TINY, vae={"block_out_channels": [32] * 9, "down_block_types": ["DownEncoderBlock2D"] * 9,
                                         "up_block_types": ["UpDecoderBlock2D"] * 9}),
    "text_vocab_huge": folder(TINY, text_encoder={"vocab_size": 10**12}),
    "text_heads_not_dividing": folder(TINY, text_encoder={"num_attention_heads": 7}),
    "text_layers_million": folder(TINY, text_encoder={"num_hidden_layers": 1000000}),
    "text_positions_zero": folder(TINY, text_encoder={"max_position_embeddings": 0}),
    "text_full_clip_config": folder(TINY, text_encoder={"text_config": TINY["text_encoder"], "_class_name": "CLIPModel"}),
    "text_act_other": folder(TINY, text_encoder={"hidden_act": "relu"}),
    # found by the campaign of 2026-12-05: a hidden_act that is not a string escaped as a type_error
    "text_act_number": folder(TINY, text_encoder={"hidden_act": 5}),
    "sched_timesteps_1e9": folder(TINY, scheduler={"num_train_timesteps": 10**9}),
    "sched_trained_betas_short": folder(TINY, scheduler={"trained_betas": [0.1, 0.2]}),
    "sched_beta_end_string": folder(TINY, scheduler={"beta_end": "0.012"}),
    "sched_offset_past_end": folder(TINY, scheduler={"steps_offset": 5000}),
    "sched_class_number": folder(TINY, scheduler={"_class_name": 5}),
    "sched_not_object": folder(TINY, scheduler=b"[1, 2, 3]"),
    "index_sdxl": folder(TINY, index={"_class_name": "StableDiffusionXLPipeline"}),
    "index_not_object": folder(TINY, index=b'"StableDiffusionPipeline"'),
    # found by the campaign of 2026-12-05: a list as _class_name escaped as nlohmann's type_error
    "index_class_name_list": folder(TINY, index={"_class_name": ["diffusers", "PNDMScheduler"]}),
    "index_truncated": folder(TINY, index=b'{"_class_name": "StableDiffus'),
    "index_missing": folder(TINY, index=False),
    "vae_missing": folder(TINY, vae=False),
    "unet_deep_nesting": folder(TINY, unet=b"[" * 5000 + b"]" * 5000),
    "unet_bad_utf8": folder(TINY, unet=b'{"_class_name": "UNet\xff"}'),
    "empty": {},
}

for old in glob.glob("*.seed"):
    os.remove(old)
for name, files in sorted(seeds.items()):
    with open(name + ".seed", "wb") as f:
        f.write(b"".join(b"@@ " + n.encode() + b"\n" + d + b"\n" for n, d in files.items()))
