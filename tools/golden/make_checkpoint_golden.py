#!/usr/bin/env python3
"""Golden data for the single-file checkpoint key conversion (src/io/checkpoint_keys.cpp).

Builds a tiny random Stable Diffusion 1.x pipeline (same block structure as SD 1.5: cross-attention
down blocks then a plain one, 2 ResNets per down block, a 4-block VAE, a CLIP text encoder, only
with few channels) and writes it twice:

  tests/data/golden/checkpoint/tiny-sd1/              the diffusers folder (save_pretrained)
  tests/data/golden/checkpoint/tiny-sd1.safetensors   the same weights as an original LDM
                                                      single-file checkpoint, keys mapped by the
                                                      inverse mapping below (ours), plus what real
                                                      checkpoints carry besides: EMA copies,
                                                      schedule buffers, an int64 position_ids
  tests/data/golden/checkpoint/legacy_vae/            the VAE with diffusers' old attention names
                                                      (query/key/value/proj_attn)
  tests/data/golden/checkpoint/python_written.{safetensors,json}
                                                      a few tensors of every dtype we read (and
                                                      one I64) written by the safetensors library,
                                                      with their values: our reader must read them,
                                                      and check_safetensors_file.py checks that the
                                                      library reads what our writer writes

The inverse mapping is proved to be the reference one by diffusers itself: its single-file loaders
(UNet2DConditionModel/AutoencoderKL.from_single_file and StableDiffusionPipeline.from_single_file
for the text encoder) must read every tensor of the checkpoint back identical to the pipeline's,
and AutoencoderKL.from_pretrained must read the legacy VAE identical too. The script fails
otherwise. Deterministic (fixed seed), offline, CPU only.

Usage: GOLDEN_PY tools/golden/make_checkpoint_golden.py [out_dir]
"""
import json
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
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests/data/golden/checkpoint")

LAYERS_PER_BLOCK = 2  # SD 1.x
UNET_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
UNET_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
VAE_BLOCKS = 4  # SD 1.x: the LDM decoder numbers these in reverse


def build_pipeline(tmp):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(4, 8, 8),
        layers_per_block=LAYERS_PER_BLOCK, down_block_types=UNET_DOWN, up_block_types=UNET_UP,
        attention_head_dim=2, cross_attention_dim=8, norm_num_groups=2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(4, 4, 8, 8), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * VAE_BLOCKS, up_block_types=("UpDecoderBlock2D",) * VAE_BLOCKS,
        latent_channels=4, norm_num_groups=2, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=64, hidden_size=8, intermediate_size=16, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
        bos_token_id=0, eos_token_id=2, pad_token_id=1))
    # Random values everywhere (norms and biases too), so no two tensors are alike by accident.
    for module in (unet, vae, text_encoder):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p))
    # A minimal byte-level BPE vocabulary: enough for CLIPTokenizer to load; never used here.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch] = 2 + 2 * i
        vocab[ch + "</w>"] = 3 + 2 * i
    with open(os.path.join(tmp, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tmp, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


# ---- diffusers → LDM names (our inverse of docs/reference/sd15-semantics.md §7.2) --------------------

UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def rename_first(rest, table):
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(name):
    g = LAYERS_PER_BLOCK + 1
    top = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
           "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for new, old in top.items():
        if name.startswith(new):
            return old + name[len(new):]
    p = name.split(".")
    if p[0] == "down_blocks":
        b = int(p[1])
        if p[2] == "downsamplers":  # down_blocks.b.downsamplers.0.conv.*
            return f"input_blocks.{(b + 1) * g}.0.op." + ".".join(p[5:])
        i = 1 + b * g + int(p[3])
        if p[2] == "resnets":
            return f"input_blocks.{i}.0." + rename_first(".".join(p[4:]), UNET_RESNET)
        return f"input_blocks.{i}.1." + ".".join(p[4:])
    if p[0] == "mid_block":
        if p[1] == "attentions":
            return "middle_block.1." + ".".join(p[3:])
        return f"middle_block.{0 if p[2] == '0' else 2}." + rename_first(".".join(p[3:]), UNET_RESNET)
    if p[0] == "up_blocks":
        b = int(p[1])
        if p[2] == "upsamplers":  # after the last resnet (.1) or after its attention (.2)
            slot = 2 if UNET_UP[b].startswith("CrossAttn") else 1
            return f"output_blocks.{b * g + LAYERS_PER_BLOCK}.{slot}.conv." + ".".join(p[5:])
        i = b * g + int(p[3])
        if p[2] == "resnets":
            return f"output_blocks.{i}.0." + rename_first(".".join(p[4:]), UNET_RESNET)
        return f"output_blocks.{i}.1." + ".".join(p[4:])
    raise KeyError(name)


def vae_to_ldm(name):
    for side in ("encoder", "decoder"):
        if name.startswith(side + ".conv_norm_out."):
            return side + ".norm_out." + name[len(side + ".conv_norm_out."):]
    p = name.split(".")
    if p[0] in ("quant_conv", "post_quant_conv") or p[1] in ("conv_in", "conv_out"):
        return name
    side = p[0]
    if p[1] == "mid_block":
        if p[2] == "resnets":
            rest = ".".join(p[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(p[3]) + 1}." + rest
        return f"{side}.mid.attn_1." + rename_first(".".join(p[4:]), VAE_ATTN)
    if p[1] == "down_blocks":
        i = int(p[2])
        if p[3] == "downsamplers":
            return f"encoder.down.{i}.downsample.conv." + ".".join(p[6:])
        return f"encoder.down.{i}.block.{p[4]}." + ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
    if p[1] == "up_blocks":
        k = VAE_BLOCKS - 1 - int(p[2])
        if p[3] == "upsamplers":
            return f"decoder.up.{k}.upsample.conv." + ".".join(p[6:])
        return f"decoder.up.{k}.block.{p[4]}." + ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
    raise KeyError(name)


def to_ldm_checkpoint(pipe):
    ckpt = {}
    for n, t in pipe.unet.state_dict().items():
        ckpt["model.diffusion_model." + unet_to_ldm(n)] = t.clone()
    for n, t in pipe.vae.state_dict().items():
        ldm = vae_to_ldm(n)
        if ".attn_1." in ldm and t.ndim == 2:  # LDM keeps the attention projections as 1×1 convs
            t = t[:, :, None, None]
        ckpt["first_stage_model." + ldm] = t.clone()
    for n, t in pipe.text_encoder.state_dict().items():
        # transformers >= 5.6 names CLIPTextModel's tensors without the `text_model.` level that
        # SD 1.x checkpoints (and diffusers' detection of them) have.
        n = n if n.startswith("text_model.") else "text_model." + n
        ckpt["cond_stage_model.transformer." + n] = t.clone()
    # What real SD 1.x checkpoints carry besides the three models.
    ckpt["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ckpt["betas"] = betas.float()
    ckpt["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    ckpt["model_ema.decay"] = torch.tensor(0.9999)
    ckpt["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
    # A few EMA copies under LDM's dotless names, different from the real weights.
    for n in ("input_blocks.0.0.weight", "out.2.bias", "time_embed.0.weight"):
        ckpt["model_ema.diffusion_model" + n.replace(".", "")] = -ckpt["model.diffusion_model." + n]
    return {k: v.contiguous() for k, v in ckpt.items()}


def legacy_vae_state(vae):
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    out = {}
    for n, t in vae.state_dict().items():
        for new, old in legacy.items():
            tag = ".attentions.0." + new + "."
            if tag in n:
                n = n.replace(tag, ".attentions.0." + old + ".")
        out[n] = t.clone().contiguous()
    return out


def python_written_tensors():
    """Values chosen to catch conversion slips: signs, -0, a subnormal, extremes, a scalar, an
    empty tensor, and an I64 buffer that the reader must list as unsupported."""
    return {
        "f32": torch.tensor([[1.5, -2.25, 3.0], [0.0, -0.0, 1e-30]], dtype=torch.float32),
        "f16": torch.tensor([1.0, -65504.0, 6.103515625e-05, 5.960464477539063e-08, -0.333251953125],
                            dtype=torch.float16),
        "bf16": torch.tensor([[1.0, -3.3895313892515355e38], [1.1754943508222875e-38, 0.333984375]],
                             dtype=torch.bfloat16),
        "nested.name.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8,
        "scalar": torch.tensor(7.25),
        "empty": torch.zeros(0, 5),
        "i64": torch.tensor([1, -2, 3], dtype=torch.int64),
    }


def write_python_written(out):
    tensors = python_written_tensors()
    path = os.path.join(out, "python_written.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "note": "written by safetensors (Python)"})
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    expected = {"__metadata__": {"format": "pt", "note": "written by safetensors (Python)"}}
    for n, t in tensors.items():
        values = t.flatten().tolist() if t.dtype == torch.int64 else t.float().flatten().tolist()
        expected[n] = {"dtype": names[t.dtype], "shape": list(t.shape), "values": values}
    with open(os.path.join(out, "python_written.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


def assert_same(what, ref, got):
    ref_keys, got_keys = set(ref), set(got)
    if ref_keys != got_keys:
        raise SystemExit(f"{what}: key sets differ: missing {sorted(ref_keys - got_keys)[:5]} "
                         f"extra {sorted(got_keys - ref_keys)[:5]}")
    for k in sorted(ref_keys):
        if ref[k].shape != got[k].shape or not torch.equal(ref[k], got[k]):
            raise SystemExit(f"{what}: tensor {k} differs")
    print(f"{what}: {len(ref_keys)} tensors identical")


def main():
    tmp = tempfile.mkdtemp()
    try:
        pipe = build_pipeline(tmp)
        folder = os.path.join(OUT, "tiny-sd1")
        single = os.path.join(OUT, "tiny-sd1.safetensors")
        legacy_dir = os.path.join(OUT, "legacy_vae")
        for p in (folder, legacy_dir):
            shutil.rmtree(p, ignore_errors=True)
        os.makedirs(OUT, exist_ok=True)
        pipe.save_pretrained(folder, safe_serialization=True)
        # save_pretrained writes empty placeholders for the absent safety checker; keep the folder lean.
        save_file(to_ldm_checkpoint(pipe), single, metadata={"format": "pt"})
        os.makedirs(legacy_dir)
        pipe.vae.save_config(legacy_dir)
        save_file(legacy_vae_state(pipe.vae), os.path.join(legacy_dir, "diffusion_pytorch_model.safetensors"),
                  metadata={"format": "pt"})

        # ---- the proof: diffusers' own loaders read the files back identical ---------------------
        ref_unet = pipe.unet.state_dict()
        ref_vae = pipe.vae.state_dict()
        ref_te = {k: v for k, v in pipe.text_encoder.state_dict().items() if "position_ids" not in k}
        unet = UNet2DConditionModel.from_single_file(single, config=folder, subfolder="unet", local_files_only=True)
        assert_same("UNet2DConditionModel.from_single_file", ref_unet, unet.state_dict())
        vae = AutoencoderKL.from_single_file(single, config=folder, subfolder="vae", local_files_only=True)
        assert_same("AutoencoderKL.from_single_file", ref_vae, vae.state_dict())
        full = StableDiffusionPipeline.from_single_file(single, config=folder, local_files_only=True,
                                                        safety_checker=None)
        assert_same("StableDiffusionPipeline.from_single_file unet", ref_unet, full.unet.state_dict())
        assert_same("StableDiffusionPipeline.from_single_file vae", ref_vae, full.vae.state_dict())
        te = {k: v for k, v in full.text_encoder.state_dict().items() if "position_ids" not in k}
        assert_same("StableDiffusionPipeline.from_single_file text_encoder", ref_te, te)
        legacy = AutoencoderKL.from_pretrained(legacy_dir)
        assert_same("AutoencoderKL.from_pretrained (legacy attention names)", ref_vae, legacy.state_dict())
        # And the folder itself, as diffusers writes and reads it.
        back = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        assert_same("StableDiffusionPipeline.from_pretrained unet", ref_unet, back.unet.state_dict())

        write_python_written(OUT)
        n_ckpt = len(load_file(single))
        print(f"wrote {folder}/, {single} ({n_ckpt} keys), {legacy_dir}/")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
