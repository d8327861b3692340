#!/usr/bin/env python3
"""Golden data for the OpenCLIP and SDXL parts of the single-file key conversion
(src/io/checkpoint_keys.cpp, docs/reference/sdxl-semantics.md §6).

Builds two tiny random pipelines with few channels and a 64-token vocabulary, like
make_checkpoint_golden.py's SD 1.x one, and writes each twice, as a diffusers folder and as an
original single-file checkpoint whose keys come from the inverse mapping below (ours):

  tests/data/golden/checkpoint/tiny-sdxl/ + tiny-sdxl.safetensors
      SDXL's layout: UNet with DownBlock2D first, transformer depth [1, 2], "text_time" added
      conditioning (LDM's label_emb.0.{0,2}); conditioner.embedders.0.transformer.* (CLIP) and
      conditioner.embedders.1.model.* (an OpenCLIP tower: in_proj q/k/v stacked, text_projection
      stored [hidden, projection], i.e. transposed); logit_scale as real files carry it.
  tests/data/golden/checkpoint/tiny-sdxl-refiner/ + tiny-sdxl-refiner.safetensors
      the SDXL refiner's layout: a four-level UNet (DownBlock2D, CrossAttn x2, DownBlock2D), 5 x
      addition_time_embed_dim + pooled, no first text encoder: conditioner.embedders.0.model.* is the
      OpenCLIP tower alone (text_encoder_2), as stable-diffusion-xl-refiner-1.0's file holds it.
  tests/data/golden/checkpoint/tiny-sd2.safetensors (+ its folder tiny-sd2/)
      SD 2.x's layout: cond_stage_model.model.* (OpenCLIP, exact GELU), linear projections,
      upcast_attention; attn_mask and logit_scale as real files carry them.

The inverse mapping is proved to be the reference one by diffusers itself: its single-file loaders
(UNet2DConditionModel/AutoencoderKL.from_single_file, StableDiffusionXLPipeline/
StableDiffusionPipeline.from_single_file for the text encoders) must read every tensor back
identical to the pipeline's; the script fails otherwise. Deterministic, offline, CPU only.

Usage: GOLDEN_PY tools/golden/make_checkpoint_xl_golden.py [out_dir]
"""
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_checkpoint_golden as sd1  # noqa: E402  (the UNet/VAE inverse mapping, the tokenizer stub)

REPO = os.path.dirname(os.path.dirname(HERE))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests/data/golden/checkpoint")

XL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D")
XL_UP = ("CrossAttnUpBlock2D", "UpBlock2D")
SD2_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD2_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def text_config(hidden_act, hidden_size=8, **kw):
    return CLIPTextConfig(vocab_size=64, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_attention_heads=2,
                          num_hidden_layers=2, max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1, **kw)


def vae():
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(4, 4, 8, 8), layers_per_block=2,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=4, norm_num_groups=2, sample_size=32, scaling_factor=0.13025)


def randomize(*modules):
    for module in modules:
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p))


def scheduler():
    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                  timestep_spacing="leading")


def build_xl(tmp):
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(4, 8), layers_per_block=2,
        down_block_types=XL_DOWN, up_block_types=XL_UP, transformer_layers_per_block=(1, 2), attention_head_dim=(2, 2),
        use_linear_projection=True, cross_attention_dim=8 + 12, norm_num_groups=2, addition_embed_type="text_time",
        addition_time_embed_dim=4, projection_class_embeddings_input_dim=8 + 6 * 4)
    text = CLIPTextModel(text_config("quick_gelu"))
    # Wider than encoder 1, as in SDXL (768 vs 1280): diffusers tells the embedders apart by width.
    text2 = CLIPTextModelWithProjection(text_config("gelu", hidden_size=12, projection_dim=8))
    v = vae()
    randomize(unet, v, text, text2)
    tok = sd1.build_pipeline(tmp).tokenizer  # the stub vocabulary; never used here
    return StableDiffusionXLPipeline(vae=v, text_encoder=text, text_encoder_2=text2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=scheduler(), add_watermarker=False)


REFINER_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
REFINER_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


def build_refiner(tmp):
    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(4, 8, 8, 8), layers_per_block=2,
        down_block_types=REFINER_DOWN, up_block_types=REFINER_UP, transformer_layers_per_block=2,
        attention_head_dim=(2, 2, 2, 2), use_linear_projection=True, cross_attention_dim=12, norm_num_groups=2,
        addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=8 + 5 * 4)
    text2 = CLIPTextModelWithProjection(text_config("gelu", hidden_size=12, projection_dim=8))
    v = vae()
    randomize(unet, v, text2)
    tok = sd1.build_pipeline(tmp).tokenizer
    return StableDiffusionXLImg2ImgPipeline(vae=v, text_encoder=None, text_encoder_2=text2, tokenizer=None,
                                            tokenizer_2=tok, unet=unet, scheduler=scheduler(),
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
                                            add_watermarker=False)


def build_sd2(tmp):
    torch.manual_seed(2)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(4, 8, 8), layers_per_block=2,
        down_block_types=SD2_DOWN, up_block_types=SD2_UP, attention_head_dim=(2, 2, 2), use_linear_projection=True,
        cross_attention_dim=8, norm_num_groups=2, upcast_attention=True)
    text = CLIPTextModel(text_config("gelu"))
    v = vae()
    randomize(unet, v, text)
    tok = sd1.build_pipeline(tmp).tokenizer
    return StableDiffusionPipeline(vae=v, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


# ---- transformers' CLIP names → open_clip's (our inverse of the OpenCLIP rows of the table) ------

OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def hf_name(n):
    return n if n.startswith("text_model.") or n.startswith("text_projection") else "text_model." + n


def to_open_clip(state, prefix):
    """A CLIPTextModel(WithProjection) state dict as open_clip names it under `prefix`."""
    state = {hf_name(k): v for k, v in state.items() if "position_ids" not in k}
    out = {}
    layers = sorted({int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")})
    for i in layers:
        base = f"text_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):  # q, k, v stacked: open_clip's nn.MultiheadAttention in_proj
            out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(
                [state[base + f"self_attn.{p}_proj.{kind}"] for p in "qkv"], 0)
        for hf, oc in OPEN_CLIP_LAYER.items():
            for kind in ("weight", "bias"):
                out[f"{prefix}transformer.resblocks.{i}.{oc}.{kind}"] = state[base + f"{hf}.{kind}"]
    out[prefix + "token_embedding.weight"] = state["text_model.embeddings.token_embedding.weight"]
    out[prefix + "positional_embedding"] = state["text_model.embeddings.position_embedding.weight"]
    for kind in ("weight", "bias"):
        out[prefix + f"ln_final.{kind}"] = state[f"text_model.final_layer_norm.{kind}"]
    if "text_projection.weight" in state:  # open_clip multiplies x @ text_projection
        out[prefix + "text_projection"] = state["text_projection.weight"].T
    out[prefix + "logit_scale"] = torch.tensor(4.6052)
    return out


def unet_and_vae_to_ldm(pipe, up_types):
    saved, sd1.UNET_UP = sd1.UNET_UP, up_types  # the upsampler slot depends on the up block's type
    try:
        return _unet_and_vae_to_ldm(pipe)
    finally:
        sd1.UNET_UP = saved


def _unet_and_vae_to_ldm(pipe):
    ckpt = {}
    for n, t in pipe.unet.state_dict().items():
        if n.startswith("add_embedding."):  # SDXL: LDM's label_emb.0.{0,2}
            ldm = n.replace("add_embedding.linear_1.", "label_emb.0.0.").replace("add_embedding.linear_2.", "label_emb.0.2.")
        else:
            ldm = sd1.unet_to_ldm(n)
        ckpt["model.diffusion_model." + ldm] = t.clone()
    for n, t in pipe.vae.state_dict().items():
        ldm = sd1.vae_to_ldm(n)
        if ".attn_1." in ldm and t.ndim == 2:
            t = t[:, :, None, None]
        ckpt["first_stage_model." + ldm] = t.clone()
    return ckpt


def xl_checkpoint(pipe):
    ckpt = unet_and_vae_to_ldm(pipe, XL_UP)
    for n, t in pipe.text_encoder.state_dict().items():
        if "position_ids" not in n:
            ckpt["conditioner.embedders.0.transformer." + hf_name(n)] = t.clone()
    ckpt.update(to_open_clip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in ckpt.items()}


def refiner_checkpoint(pipe):
    ckpt = unet_and_vae_to_ldm(pipe, REFINER_UP)
    ckpt.update(to_open_clip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.0.model."))
    return {k: v.contiguous() for k, v in ckpt.items()}


def sd2_checkpoint(pipe):
    ckpt = unet_and_vae_to_ldm(pipe, SD2_UP)
    ckpt.update(to_open_clip(pipe.text_encoder.state_dict(), "cond_stage_model.model."))
    ckpt["cond_stage_model.model.attn_mask"] = torch.full((77, 77), float("-inf")).triu(1)
    return {k: v.contiguous() for k, v in ckpt.items()}


def text_state(model):
    return {hf_name(k): v for k, v in model.state_dict().items() if "position_ids" not in k}


def main():
    tmp = tempfile.mkdtemp()
    try:
        os.makedirs(OUT, exist_ok=True)
        for name, build, to_ckpt, cls in (("tiny-sdxl", build_xl, xl_checkpoint, StableDiffusionXLPipeline),
                                          ("tiny-sd2", build_sd2, sd2_checkpoint, StableDiffusionPipeline),
                                          ("tiny-sdxl-refiner", build_refiner, refiner_checkpoint,
                                           StableDiffusionXLImg2ImgPipeline)):
            pipe = build(tmp)
            folder, single = os.path.join(OUT, name), os.path.join(OUT, name + ".safetensors")
            shutil.rmtree(folder, ignore_errors=True)
            pipe.save_pretrained(folder, safe_serialization=True)
            save_file(to_ckpt(pipe), single, metadata={"format": "pt"})

            # ---- the proof: diffusers' own loaders read the file back identical ------------------
            unet = UNet2DConditionModel.from_single_file(single, config=folder, subfolder="unet", local_files_only=True)
            sd1.assert_same(f"{name} UNet2DConditionModel.from_single_file", pipe.unet.state_dict(), unet.state_dict())
            v = AutoencoderKL.from_single_file(single, config=folder, subfolder="vae", local_files_only=True)
            sd1.assert_same(f"{name} AutoencoderKL.from_single_file", pipe.vae.state_dict(), v.state_dict())
            kw = {"safety_checker": None} if cls is StableDiffusionPipeline else {}
            full = cls.from_single_file(single, config=folder, local_files_only=True, **kw)
            if pipe.text_encoder is not None:
                sd1.assert_same(f"{name} {cls.__name__}.from_single_file text_encoder", text_state(pipe.text_encoder),
                                text_state(full.text_encoder))
            else:
                assert full.text_encoder is None, f"{name}: from_single_file made a text_encoder"
            if cls is not StableDiffusionPipeline:
                sd1.assert_same(f"{name} {cls.__name__}.from_single_file text_encoder_2",
                                text_state(pipe.text_encoder_2), text_state(full.text_encoder_2))
            print(f"wrote {folder}/, {single} ({len(load_file(single))} keys)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
