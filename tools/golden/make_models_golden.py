#!/usr/bin/env python3
"""Golden data for the model code: UNet2DConditionModel, AutoencoderKL (decoder) and CLIPTextModel.

Builds tiny random models of the SD 1.x family with the pinned diffusers / transformers, runs them
on the CPU in float32 and writes, per model, a diffusers-style folder under
tests/data/golden/models/<name>/:

  config.json                         written by diffusers' save_config / transformers' to_json_file
  <weights>.safetensors               every parameter, diffusers / transformers names; UNet and VAE
                                      weights are float16-representable values stored as F16 (half
                                      the size; the reference runs in float32 on those values),
                                      CLIP weights F32
  io.safetensors                      inputs and reference outputs (float32, NCHW turned NHWC;
                                      uint8 images as exact F16 integers)
  io.json                             the non-tensor inputs (timesteps, token ids, prompts)

Every parameter is re-initialised to non-trivial random values (weights ~ N(0, 1/fan_in),
norm scales ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2)): diffusers zero-initialises some output
layers in its own tests, which would hide wiring mistakes.

Models:
  unet_a  the full four-level SD 1.5 layout at tiny width (conv proj_in/out, 2 layers per block)
  unet_b  two levels, Linear proj_in/out, per-block head counts, 1 layer per block, 2 transformer
          layers in the mid block, flip_sin_to_cos=false, freq_shift=1, custom time_embedding_dim,
          mid_block_scale_factor 2, norm_eps 1e-6, cross_attention_dim != any channel count
  vae_a   four UpDecoderBlock2D levels, 2 layers per block
  vae_b   two levels, 1 layer per block, another scaling factor
  clip_a  quick_gelu, weights named text_model.* (as SD 1.x files are)
  clip_b  gelu, layer_norm_eps 1e-6, weights named without the text_model. prefix (as
          transformers 5 saves them)

UNet cases: a batch of 2 at 8x8 latents (64x64 px) and a non-square batch of 2 whose sides are not
multiples of 8 (diffusers then forwards the upsample sizes), each item with its own timestep
(one of them fractional, as Euler-type schedulers pass). VAE cases: the pipeline's
`latents / scaling_factor` (one float32 division) then decode; outputs are the decoder output and
the uint8 image after VaeImageProcessor.postprocess (stored as float32 integers).

CLIP: 5 prompts tokenised by the real CLIP tokenizer (vocabulary built from the BPE file in
src/text/), last_hidden_state and the clip-skip 1 and 2 outputs (hidden_states[-(k+1)] then
final_layer_norm, as StableDiffusionPipeline.encode_prompt does). The 49408-row token embedding
would be too big to store, so only the rows the prompts use are stored (tensor
`token_embedding_rows`, row i belongs to id io.json["token_embedding_ids"][i]); every other row
is zero, in the reference run too, so the outputs depend on stored data only.

Usage: GOLDEN_PY tools/golden/make_models_golden.py [OUT_DIR]   (default tests/data/golden/models)
"""

import gzip
import json
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "golden", "models")

torch.set_grad_enabled(False)
torch.set_num_threads(1)


def reinit_(model, seed, half=False):
    """Every parameter random: weights N(0, 1/fan_in), norm scales near 1, biases small. With
    half, the values are rounded to float16 (the file stores them so; the reference runs in float32
    on exactly those values)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(s in name for s in ("norm", "layer_norm", "group_norm")) and p.dim() == 1
        if leaf == "bias":
            v = torch.randn(p.shape, generator=g) * 0.1
        elif is_norm:
            v = 1.0 + torch.randn(p.shape, generator=g) * 0.1
        elif p.dim() == 1:
            v = torch.randn(p.shape, generator=g) * 0.1
        elif "embedding" in name and p.dim() == 2 and "time" not in name:
            v = torch.randn(p.shape, generator=g) * 0.5
        else:
            fan_in = p[0].numel()
            v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
        p.copy_(v.half().float() if half else v)


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


def fresh_dir(name):
    d = os.path.join(OUT, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def save_f16(state, path):
    """Weights rounded to float16 by reinit_(half=True) are stored as F16: exact, half the size."""
    sd = {k: v.contiguous().half() for k, v in state.items()}
    for k, v in state.items():
        assert torch.equal(sd[k].float(), v), k
    save_file(sd, path, metadata={"format": "pt"})


# ---- UNet -----------------------------------------------------------------------------------------

UNETS = {
    "unet_a": dict(
        config=dict(
            sample_size=8,
            block_out_channels=(8, 16, 24, 24),
            layers_per_block=2,
            norm_num_groups=4,
            cross_attention_dim=12,
            attention_head_dim=2,
        ),
        cases=[((2, 4, 8, 8), [981, 1]), ((2, 4, 6, 10), [500.5, 20])],
    ),
    "unet_b": dict(
        config=dict(
            sample_size=8,
            block_out_channels=(16, 24),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            norm_num_groups=8,
            norm_eps=1e-6,
            cross_attention_dim=20,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            flip_sin_to_cos=False,
            freq_shift=1,
            time_embedding_dim=48,
            mid_block_scale_factor=2.0,
            upcast_attention=True,
        ),
        cases=[((2, 4, 8, 8), [999, 0]), ((2, 4, 5, 7), [637.25, 3])],
    ),
}


def make_unet(name, spec, seed):
    d = fresh_dir(name)
    unet = UNet2DConditionModel(**spec["config"]).eval()
    reinit_(unet, seed, half=True)
    unet.save_config(d)
    save_f16(unet.state_dict(), os.path.join(d, "diffusion_pytorch_model.safetensors"))
    g = torch.Generator().manual_seed(seed + 1)
    io, meta = {}, {"cases": []}
    ctx_dim = unet.config.cross_attention_dim
    for i, (shape, timesteps) in enumerate(spec["cases"]):
        sample = torch.randn(shape, generator=g)
        ehs = torch.randn((shape[0], 77, ctx_dim), generator=g)
        # One timestep per batch item, as a 1-D tensor (int64 for integer steps, like PNDM/DDIM).
        is_int = all(float(t).is_integer() for t in timesteps)
        t = torch.tensor(timesteps, dtype=torch.int64 if is_int else torch.float32)
        out = unet(sample, t, encoder_hidden_states=ehs).sample
        io[f"t_emb{i}"] = unet.get_time_embed(sample=sample, timestep=t)  # sinusoidal part
        io[f"sample{i}"] = nhwc(sample)
        io[f"encoder_hidden_states{i}"] = ehs.contiguous()
        io[f"out{i}"] = nhwc(out)
        meta["cases"].append({"timesteps": [float(x) for x in timesteps], "shape_nchw": list(shape)})
        print(f"{name} case {i}: sample {tuple(shape)} -> |out| {out.norm():.4f}")
    save_file(io, os.path.join(d, "io.safetensors"))
    meta["num_parameters"] = sum(p.numel() for p in unet.parameters())
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump(meta, f, indent=1)


# ---- VAE ------------------------------------------------------------------------------------------

VAES = {
    "vae_a": dict(
        config=dict(
            block_out_channels=(8, 16, 24, 24),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            norm_num_groups=4,
            latent_channels=4,
            sample_size=64,
        ),
        cases=[(2, 4, 8, 8), (1, 4, 6, 10)],
    ),
    "vae_b": dict(
        config=dict(
            block_out_channels=(16, 24),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            sample_size=16,
            scaling_factor=0.13025,
        ),
        cases=[(2, 4, 8, 8), (1, 4, 5, 7)],
    ),
}


def half_points(levels):
    """float32 x with fl(fl(fl(x*0.5)+0.5)*255) == k + 0.5 exactly, one per level k that has one."""
    f = np.float32
    out = []
    for k in levels:
        x0 = f(2 * ((k + 0.5) / 255) - 1)
        for c in x0 + np.arange(-3000, 3000, dtype=np.float32) * np.spacing(x0):
            if f(f(f(f(c) * f(0.5)) + f(0.5)) * f(255)) == f(k + 0.5):
                out.append(float(c))
                break
    assert len(out) == len(levels), out
    return out


def make_vae(name, spec, seed):
    d = fresh_dir(name)
    vae = AutoencoderKL(**spec["config"]).eval()
    reinit_(vae, seed, half=True)
    vae.save_config(d)
    # Only what txt2img decodes with: the encoder and quant_conv would double the file.
    sd = {k: v for k, v in vae.state_dict().items()
          if k.startswith("decoder.") or k.startswith("post_quant_conv.")}
    save_f16(sd, os.path.join(d, "diffusion_pytorch_model.safetensors"))
    processor = VaeImageProcessor(vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))
    g = torch.Generator().manual_seed(seed + 1)
    io = {}
    for i, shape in enumerate(spec["cases"]):
        latents = torch.randn(shape, generator=g) * 0.8
        z = latents / vae.config.scaling_factor  # the pipeline's one float32 division
        dec = vae.decode(z, return_dict=False)[0]
        pil = processor.postprocess(dec, output_type="pil")
        image = np.stack([np.array(p) for p in pil])
        io[f"latents{i}"] = nhwc(latents)
        io[f"decoded{i}"] = nhwc(dec)
        io[f"image{i}"] = torch.from_numpy(image.astype(np.float16))  # 0..255 exact in F16
        print(f"{name} case {i}: latents {tuple(shape)} -> image {image.shape}, "
              f"range [{dec.min():.3f}, {dec.max():.3f}]")
    # The postprocess alone on crafted values: clamps, and values whose float32 product with 255
    # is exactly k + 0.5 (numpy rounds those half to even: 127.5 -> 128, 100.5 -> 100).
    crafted = [-2.0, -1.0, -0.999, 0.0, 1.0, 1.5, 1e-30, -1e-30] + half_points([100, 128, 254])
    crafted = torch.tensor(crafted, dtype=torch.float32)
    extra = torch.randn(3 * 64 - crafted.numel(), generator=g) * 0.7
    flat = torch.cat([crafted, extra]).reshape(1, 3, 8, 8)
    pil = processor.postprocess(flat, output_type="pil")
    io["post_in"] = nhwc(flat)
    io["post_out"] = torch.from_numpy(np.array(pil[0]).astype(np.float16))[None]
    save_file(io, os.path.join(d, "io.safetensors"))
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump({"cases": [list(s) for s in spec["cases"]],
                   "scaling_factor": vae.config.scaling_factor,
                   "num_parameters_decoder": sum(v.numel() for v in sd.values())}, f, indent=1)


# ---- CLIP text encoder ----------------------------------------------------------------------------

PROMPTS = [
    "a photo of a cat",
    "",
    "A majestic lion, 4k, trending on artstation!!! (masterpiece:1.2) [[blurry]]",
    "caf\u00e9 au lait \u2014 na\u00efve r\u00e9sum\u00e9, 2024-01-31 12:00",
    " ".join(["an astronaut riding a horse on the moon"] * 12),  # > 75 tokens: truncated
]

CLIPS = {
    "clip_a": dict(config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                               num_hidden_layers=3, hidden_act="quick_gelu"),
                   prefix="text_model."),
    "clip_b": dict(config=dict(hidden_size=24, intermediate_size=40, num_attention_heads=2,
                               num_hidden_layers=4, hidden_act="gelu", layer_norm_eps=1e-6),
                   prefix=""),
}


def real_tokenizer(tmp):
    """CLIP ViT-L/14's tokenizer, built from OpenAI's BPE file (docs/reference/sd15-semantics.md section 2)."""
    bpe = os.path.join(ROOT, "src", "text", "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    chars = [chr(b) for b in printable]
    n = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + n))
            n += 1
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408
    with open(os.path.join(tmp, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(tmp, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    ids = tok("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407], ids[:7]
    return tok


def make_clip(name, spec, seed, tok):
    d = fresh_dir(name)
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **spec["config"])
    model = CLIPTextModel(config).eval()
    reinit_(model, seed)
    ids = torch.tensor([tok(p, padding="max_length", max_length=77, truncation=True).input_ids
                        for p in PROMPTS], dtype=torch.int64)
    used = sorted(set(ids.flatten().tolist()))
    table = model.embeddings.token_embedding.weight
    keep = table[used].clone()
    table.zero_()
    table[used] = keep
    config.to_json_file(os.path.join(d, "config.json"))
    sd = {spec["prefix"] + k: v.contiguous().float() for k, v in model.state_dict().items()
          if k != "embeddings.token_embedding.weight"}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})

    out = model(ids, output_hidden_states=True)
    hidden = out.hidden_states
    assert len(hidden) == config.num_hidden_layers + 1
    io = {"token_embedding_rows": keep.contiguous(), "last_hidden_state": out.last_hidden_state}
    # StableDiffusionPipeline.encode_prompt with clip_skip=k: output[-1][-(k+1)], then
    # text_model.final_layer_norm (in transformers 5 the layer norm sits on the model itself).
    for k in (1, 2):
        io[f"clip_skip{k}"] = model.final_layer_norm(out[-1][-(k + 1)])
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(d, "io.safetensors"))
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump({"prompts": PROMPTS, "input_ids": ids.tolist(), "token_embedding_ids": used,
                   "weight_prefix": spec["prefix"],
                   "num_parameters": sum(p.numel() for p in model.parameters())}, f, indent=1)
    print(f"{name}: {len(used)} token rows, |last_hidden_state| {out.last_hidden_state.norm():.4f}")


def main():
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"transformers {transformers.__version__}")
    os.makedirs(OUT, exist_ok=True)
    for i, (name, spec) in enumerate(UNETS.items()):
        make_unet(name, spec, 100 + i)
    for i, (name, spec) in enumerate(VAES.items()):
        make_vae(name, spec, 200 + i)
    with tempfile.TemporaryDirectory() as tmp:
        tok = real_tokenizer(tmp)
        for i, (name, spec) in enumerate(CLIPS.items()):
            make_clip(name, spec, 300 + i, tok)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"total {total / 1e6:.2f} MB in {OUT}")


if __name__ == "__main__":
    main()
