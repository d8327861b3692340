#!/usr/bin/env python3
"""Writes the seeds of tests/fuzz/checkpoint_keys_fuzz.cpp: lists of single-file checkpoint tensors,
one a line, "KEY<TAB>d0,d1,...[<TAB>DTYPE]". The base list is an SD 1.x LDM checkpoint's key set, one key per name pattern,
(CompVis names: model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*) with
toy sizes; the other seeds change the layout (3 ResNets per block, 5 VAE up blocks, inpainting
in_channels 9), the family (SDXL, SD 2.x), the naming (diffusers names, legacy VAE attention, no
text_model. level) or the keys themselves (huge or negative indices, empty parts, bad UTF-8,
unsupported dtypes, repeats). No manifest: the target asserts names or an InputError, no crash.
Run from this folder: python3 make_seeds.py"""
import glob
import os
import re

C = 8  # toy channel count: the mapper looks at names and at a few shapes only


def resnet(p, shortcut=False, ldm_unet=True):
    if ldm_unet:
        keys = [(p + "in_layers.0.weight", [C]), (p + "in_layers.0.bias", [C]), (p + "in_layers.2.weight", [C, C, 3, 3]),
                (p + "in_layers.2.bias", [C]), (p + "emb_layers.1.weight", [C, 4 * C]), (p + "emb_layers.1.bias", [C]),
                (p + "out_layers.0.weight", [C]), (p + "out_layers.0.bias", [C]), (p + "out_layers.3.weight", [C, C, 3, 3]),
                (p + "out_layers.3.bias", [C])]
        if shortcut:
            keys += [(p + "skip_connection.weight", [C, C, 1, 1]), (p + "skip_connection.bias", [C])]
    else:
        keys = [(p + n + "." + wb, [C] if wb == "bias" or n.startswith("norm") else [C, C, 3, 3])
                for n in ("norm1", "conv1", "norm2", "conv2") for wb in ("weight", "bias")]
        if shortcut:
            keys += [(p + "nin_shortcut.weight", [C, C, 1, 1]), (p + "nin_shortcut.bias", [C])]
    return keys


def transformer(p, context=12):
    keys = [(p + "norm.weight", [C]), (p + "norm.bias", [C]), (p + "proj_in.weight", [C, C, 1, 1]), (p + "proj_in.bias", [C]),
            (p + "proj_out.weight", [C, C, 1, 1]), (p + "proj_out.bias", [C])]
    t = p + "transformer_blocks.0."
    for attn, kv in (("attn1", C), ("attn2", context)):
        keys += [(t + attn + ".to_q.weight", [C, C]), (t + attn + ".to_k.weight", [C, kv]), (t + attn + ".to_v.weight", [C, kv]),
                 (t + attn + ".to_out.0.weight", [C, C]), (t + attn + ".to_out.0.bias", [C])]
    keys += [(t + "ff.net.0.proj.weight", [8 * C, C]), (t + "ff.net.0.proj.bias", [8 * C]), (t + "ff.net.2.weight", [C, 4 * C]),
             (t + "ff.net.2.bias", [C])]
    keys += [(t + n + "." + wb, [C]) for n in ("norm1", "norm2", "norm3") for wb in ("weight", "bias")]
    return keys


def unet(layers=2, in_channels=4, context=12):
    u = "model.diffusion_model."
    keys = [(u + "time_embed.0.weight", [4 * C, C]), (u + "time_embed.0.bias", [4 * C]), (u + "time_embed.2.weight", [4 * C, 4 * C]),
            (u + "time_embed.2.bias", [4 * C]), (u + "input_blocks.0.0.weight", [C, in_channels, 3, 3]), (u + "input_blocks.0.0.bias", [C])]
    i = 1
    for level in range(4):
        for _ in range(layers):
            keys += resnet(f"{u}input_blocks.{i}.0.", shortcut=level in (1, 2))
            if level < 3:
                keys += transformer(f"{u}input_blocks.{i}.1.", context)
            i += 1
        if level < 3:
            keys += [(f"{u}input_blocks.{i}.0.op.weight", [C, C, 3, 3]), (f"{u}input_blocks.{i}.0.op.bias", [C])]
            i += 1
    keys += resnet(u + "middle_block.0.") + transformer(u + "middle_block.1.", context) + resnet(u + "middle_block.2.")
    o = 0
    for level in range(4):
        for j in range(layers + 1):
            keys += resnet(f"{u}output_blocks.{o}.0.", shortcut=True)
            if level > 0:
                keys += transformer(f"{u}output_blocks.{o}.1.", context)
            if level < 3 and j == layers:
                n = 2 if level > 0 else 1
                keys += [(f"{u}output_blocks.{o}.{n}.conv.weight", [C, C, 3, 3]), (f"{u}output_blocks.{o}.{n}.conv.bias", [C])]
            o += 1
    keys += [(u + "out.0.weight", [C]), (u + "out.0.bias", [C]), (u + "out.2.weight", [4, C, 3, 3]), (u + "out.2.bias", [4])]
    return keys


def vae(up_blocks=4):
    v = "first_stage_model."
    keys = []
    for part, blocks, per in (("encoder", 4, 2), ("decoder", up_blocks, 3)):
        p = v + part + "."
        keys += [(p + "conv_in.weight", [C, 3 if part == "encoder" else 4, 3, 3]), (p + "conv_in.bias", [C])]
        for b in range(blocks):
            sub = "down" if part == "encoder" else "up"
            for r in range(per):
                keys += resnet(f"{p}{sub}.{b}.block.{r}.", shortcut=(r == 0 and b == 1), ldm_unet=False)
            if (part == "encoder" and b < blocks - 1) or (part == "decoder" and b > 0):
                s = "downsample" if part == "encoder" else "upsample"
                keys += [(f"{p}{sub}.{b}.{s}.conv.weight", [C, C, 3, 3]), (f"{p}{sub}.{b}.{s}.conv.bias", [C])]
        keys += resnet(p + "mid.block_1.", ldm_unet=False) + resnet(p + "mid.block_2.", ldm_unet=False)
        for n in ("q", "k", "v", "proj_out"):
            keys += [(f"{p}mid.attn_1.{n}.weight", [C, C, 1, 1]), (f"{p}mid.attn_1.{n}.bias", [C])]
        keys += [(p + "mid.attn_1.norm.weight", [C]), (p + "mid.attn_1.norm.bias", [C]), (p + "norm_out.weight", [C]),
                 (p + "norm_out.bias", [C]), (p + "conv_out.weight", [8 if part == "encoder" else 3, C, 3, 3]),
                 (p + "conv_out.bias", [8 if part == "encoder" else 3])]
    keys += [(v + "quant_conv.weight", [8, 8, 1, 1]), (v + "quant_conv.bias", [8]), (v + "post_quant_conv.weight", [4, 4, 1, 1]),
             (v + "post_quant_conv.bias", [4])]
    return keys


def text(prefix="cond_stage_model.transformer.text_model."):
    t = prefix
    keys = [(t + "embeddings.token_embedding.weight", [16, C]), (t + "embeddings.position_embedding.weight", [77, C]),
            (t + "final_layer_norm.weight", [C]), (t + "final_layer_norm.bias", [C])]
    for layer in range(2):
        p = f"{t}encoder.layers.{layer}."
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys += [(f"{p}self_attn.{n}.weight", [C, C]), (f"{p}self_attn.{n}.bias", [C])]
        keys += [(p + "mlp.fc1.weight", [4 * C, C]), (p + "mlp.fc1.bias", [4 * C]), (p + "mlp.fc2.weight", [C, 4 * C]),
                 (p + "mlp.fc2.bias", [C])]
        keys += [(p + n + "." + wb, [C]) for n in ("layer_norm1", "layer_norm2") for wb in ("weight", "bias")]
    return keys


def line(key, shape, dtype=None):
    return key + "\t" + ",".join(map(str, shape)) + ("\t" + dtype if dtype else "")


def compact(keys):
    """One key per name pattern (digits as #), plus what layout detection reads (the downsamplers'
    input-block numbers, the decoder's up-block numbers): the mapper's rules all get exercised while
    a seed stays a few KB, so the fuzzer runs hundreds of inputs a second instead of a few."""
    seen, out = set(), []
    for k, s in keys:
        pattern = re.sub(r"\d+", "#", k)
        if pattern not in seen or ".0.op." in k or "decoder.up." in k and k.endswith("block.0.conv1.weight"):
            seen.add(pattern)
            out.append((k, s))
    return out


SD15 = compact(unet() + vae() + text())
U = "model.diffusion_model."
seeds = {
    "sd15": SD15,
    "sd15_ema_and_buffers": SD15[:40] + [("model_ema.decay", []), ("model_ema.diffusion_modelinput_blocks00weight", [C, 4, 3, 3]),
                                         ("alphas_cumprod", [1000]), ("betas", [1000]), ("logvar", [1000])],
    "unet_3_layers": compact(unet(layers=3)) + vae()[:20],
    "vae_5_up_blocks": unet()[:12] + compact(vae(up_blocks=5)),
    "inpainting": compact(unet(in_channels=9))[:30] + vae()[:10] + text()[:10],
    "in_channels_zero": [(U + "input_blocks.0.0.weight", [C, 0, 3, 3])] + unet()[6:20],
    "text_no_text_model_level": unet()[:10] + compact(text("cond_stage_model.transformer.")),
    "vae_only": compact(vae()),
    "sdxl": unet()[:10] + [("conditioner.embedders.1.model.ln_final.weight", [C])],
    # An OpenCLIP embedder 0 and no embedder 1: the SDXL refiner, whose only text encoder is text_encoder_2.
    "sdxl_refiner": unet()[:10] + [("conditioner.embedders.0.model.ln_final.weight", [C]),
                                   ("conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight", [3 * C, C])],
    "sd2_openclip": unet()[:10] + [("cond_stage_model.model.token_embedding.weight", [16, C])],
    "sd2_cross_attention_1024": compact(unet(context=1024))[:60],
    "diffusers_names": [("down_blocks.0.resnets.0.conv1.weight", [C, C, 3, 3]), ("decoder.up_blocks.0.resnets.0.conv1.weight", [C, C, 3, 3]),
                        ("text_model.encoder.layers.0.mlp.fc1.weight", [4 * C, C])],
    "legacy_vae_attention": unet()[:6] + [("first_stage_model.decoder.mid.attn_1.q.weight", [C, C, 1]),
                                          ("first_stage_model.decoder.mid.attn_1.k.weight", [C, C]),
                                          ("first_stage_model.decoder.mid.attn_1.v.weight", [C, C, 1, 1, 1]),
                                          ("vae.decoder.mid_block.attentions.0.query.weight", [C, C]),
                                          ("decoder.mid_block.attentions.0.proj_attn.weight", [C, C, 1, 1])],
    "odd_indices": unet()[:6] + [(U + "input_blocks.99999999999999999999.0.in_layers.0.weight", [C]),
                                 (U + "input_blocks.-1.0.in_layers.0.weight", [C]), (U + "input_blocks..0.op.weight", [C]),
                                 (U + "output_blocks.2147483648.1.conv.weight", [C]), (U + "input_blocks.3.0.op.", [C]),
                                 ("first_stage_model.decoder.up.4294967296.block.0.conv1.weight", [C]),
                                 ("first_stage_model.decoder.up.-3.upsample.conv.weight", [C]), (U, [1]), ("", [1]),
                                 (U + "middle_block.3.weight", [C]), (U + "input_blocks.1.1.transformer_blocks.99.attn1.to_q.weight", [C, C])],
    "unsupported_dtypes": [(k, s, d) for (k, s), d in zip(unet()[:24], ["F64", "I64", "BOOL", "U8", "F8_E4M3", "XX", "BF16", "F32"] * 3)],
}
repeats = [line(k, s) for k, s in unet()[:12]]
for old in glob.glob("*.keys"):
    os.remove(old)
for name, keys in sorted(seeds.items()):
    with open(name + ".keys", "w", encoding="utf-8") as f:
        f.write("".join(line(*k) + "\n" for k in keys))
with open("repeated_keys.keys", "w") as f:
    f.write("\n".join(repeats + repeats[:4] + ["model.diffusion_model.input_blocks.0.0.weight\t8,4,3,3\tF32"]) + "\n")
with open("bad_utf8.keys", "wb") as f:
    f.write(b"model.diffusion_model.input_blocks.0.0.weight\t8,4,3,3\nmodel.diffusion_model.\xff\xfe.weight\t8\n"
            b"first_stage_model.decoder.mid.attn_1.q.\xc0\xafweight\t8,8,1,1\n\xed\xa0\x80\t1\n")
