#!/usr/bin/env python3
"""Golden data for LoRA: diffusers' load_lora_weights + fuse_lora(lora_scale=...) on the two tiny
random SD 1.x pipelines of make_pipeline_golden.py (the same weights: its build() with its
recipes, which the C++ test rebuilds from tests/data/golden/pipeline/pipelines.json; this script
checks that the recipes are the ones stored there).

Two small LoRA files, made here from a seeded generator and stored in float16 (a few tens of KB):
  four_level_kohya.safetensors  kohya/A1111 keys (lora_unet_*, lora_te_*, .lora_down/.lora_up,
                                .alpha = 1 for rank 2, so the factor 0.5 is exercised), on attention
                                projections, proj_in (a 1x1 conv in this UNet), ff.net.2,
                                time_emb_proj, a 3x3 resnet conv1, and text q_proj/out_proj/fc1
  two_level_peft.safetensors    diffusers/PEFT keys (unet.*.lora_A/lora_B, text_encoder.*), no
                                alpha (factor 1), on the same kinds of Linear modules
  tiny_kohya.safetensors        kohya keys for `sd_mpi make-model --preset tiny` (the folder whose
                                tokenizer is the argument), for the command-line tests
                                (tests/cli/check_lora.sh): no image, only the file
Before generating, the script checks that fuse_lora changed exactly the weights the file names,
by W + scale * alpha / rank * up @ down (our merge), so the golden is known to test what it says.

SDXL and SD 2.x (make_families below; `--families` makes only this part): the tiny pipelines of
make_sdxl_golden.py and make_sd2_golden.py, kohya (SDXL: LDM-named and diffusers-named UNet keys)
and PEFT files on the UNet and every text encoder, alone and two stacked with their own scales,
written to families.json / families.u8 in the form of runs.json / images.u8 (per run a "family",
a "loras" list of {file, scale} and "lora_weights" per component).
Writes tests/data/golden/lora/{runs.json, images.u8, families.json, families.u8, *.safetensors}:
  runs.json   per run: pipeline, lora file, scale, sampler, steps, guidance, size, prompts,
              negative prompts, seeds, byte offset of its uint8 images (N, H, W, 3) in images.u8
  tiny_sdxl_kohya.safetensors  kohya SDXL keys (LDM-named UNet, lora_te1_/lora_te2_) for `sd_mpi
                                make-model --preset tiny-sdxl` (TINY_SDXL_DIR), for the command-line
                                tests, proved by diffusers' loader on that folder; no image
Run: GOLDEN_PY tools/golden/make_lora_golden.py TOKENIZER_DIR [TINY_SDXL_DIR] [--families]
     (TOKENIZER_DIR as make_pipeline_golden.py)
"""
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import PNDMScheduler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pipeline_golden as pg  # noqa: E402  (PIPELINES, SAMPLERS, SD15_SCHEDULER, PROMPTS, build)

OUT = os.path.join(pg.ROOT, "tests", "data", "golden", "lora")
PIPELINE_JSON = os.path.join(pg.ROOT, "tests", "data", "golden", "pipeline", "pipelines.json")
RANK = 2


def unet_targets(unet):
    """The UNet modules the LoRAs touch: (dotted module name, weight shape)."""
    out = []
    for name, p in unet.named_parameters():
        if not name.endswith(".weight"):
            continue
        m = name[: -len(".weight")]
        linear = any(m.endswith(s) for s in ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn1.to_out.0",
                                            "attn2.to_out.0", "ff.net.2", "proj_in"))
        conv = m.startswith("down_blocks.0.resnets.") and (m.endswith(".conv1") or m.endswith(".time_emb_proj"))
        if linear or conv:
            out.append((m, tuple(p.shape)))
    return out


def text_targets(text_encoder):
    out = []
    for name, p in text_encoder.named_parameters():
        if name.endswith(".weight") and any(s in name for s in ("self_attn.q_proj", "self_attn.out_proj", "mlp.fc1")):
            m = name[: -len(".weight")]
            if not m.startswith("text_model."):
                m = "text_model." + m  # transformers >= 5.6 names; LoRA files keep the text_model level
            out.append((m, tuple(p.shape)))
    return out


def lora_pair(shape, gen):
    """down [r, in, kh, kw] (or [r, in]), up [out, r, 1, 1] (or [out, r]), float16."""
    down_shape = (RANK,) + shape[1:]
    up_shape = (shape[0], RANK) + ((1, 1) if len(shape) == 4 else ())
    down = (torch.randn(down_shape, generator=gen) * 0.3).half()
    up = (torch.randn(up_shape, generator=gen) * 0.3).half()
    return down, up


def make_lora(pipe, style, path, seed):
    gen = torch.Generator().manual_seed(seed)
    tensors, layers = {}, []
    for component, targets in (("unet", unet_targets(pipe.unet)), ("text_encoder", text_targets(pipe.text_encoder))):
        for module, shape in targets:
            down, up = lora_pair(shape, gen)
            if style == "kohya":
                stem = ("lora_unet_" if component == "unet" else "lora_te_") + module.replace(".", "_")
                tensors[stem + ".lora_down.weight"] = down
                tensors[stem + ".lora_up.weight"] = up
                tensors[stem + ".alpha"] = torch.tensor(1.0, dtype=torch.float16)
                alpha = 1.0
            else:
                stem = component + "." + module
                tensors[stem + ".lora_A.weight"] = down
                tensors[stem + ".lora_B.weight"] = up
                alpha = float(RANK)
            layers.append((component, module, down.float(), up.float(), alpha))
    save_file(tensors, path)
    return layers


def check_fused(before, pipe, layers, scale):
    """fuse_lora changed exactly the named weights, each by scale * alpha / rank * up @ down."""
    after = {"unet": dict(pipe.unet.state_dict()), "text_encoder": dict(pipe.text_encoder.state_dict())}
    touched = set()
    for component, module, down, up, alpha in layers:
        key = module + ".weight"
        if key not in after[component] and key.startswith("text_model."):
            key = key[len("text_model."):]
        touched.add((component, key))
        w = before[component][key]
        delta = (up.reshape(up.shape[0], RANK) @ down.reshape(RANK, -1)).reshape(w.shape) * (alpha / RANK * scale)
        err = (after[component][key] - (w + delta)).abs().max().item()
        assert err < 1e-5, f"{component} {key}: fused weight off by {err}"
    for component in after:
        for key, w in before[component].items():
            if (component, key) not in touched:
                assert torch.equal(after[component][key], w), f"{component} {key} changed but no LoRA names it"
    return len(touched)


def make_tiny_lora(tok_dir):
    """A kohya LoRA for the built-in tiny model (its UNet and text encoder, read from its folder)."""
    from safetensors.torch import load_file
    folder = os.path.dirname(os.path.abspath(tok_dir))
    unet = load_file(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors"))
    text = load_file(os.path.join(folder, "text_encoder", "model.safetensors"))
    gen = torch.Generator().manual_seed(77)
    tensors = {}
    for prefix, weights in (("lora_unet_", unet), ("lora_te_", text)):
        for name, w in sorted(weights.items()):
            if not name.endswith(".weight") or not any(s in name for s in ("attn2.to_k", "attn1.to_out.0", "q_proj", "proj_in")):
                continue
            module = name[: -len(".weight")]
            if prefix == "lora_te_" and not module.startswith("text_model."):
                module = "text_model." + module
            down, up = lora_pair(tuple(w.shape), gen)
            stem = prefix + module.replace(".", "_")
            tensors[stem + ".lora_down.weight"], tensors[stem + ".lora_up.weight"] = down, up
            tensors[stem + ".alpha"] = torch.tensor(1.0, dtype=torch.float16)
    save_file(tensors, os.path.join(OUT, "tiny_kohya.safetensors"))
    return len(tensors) // 3


# ---- SDXL and SD 2.x ---------------------------------------------------------------------------
# The tiny pipelines of make_sdxl_golden.py and make_sd2_golden.py (same recipes, checked against
# their pipelines.json). LoRA files, each on the UNet (attention, feed-forward, proj_in/out, every
# resnet part, down/upsamplers, time and added embeddings, conv_in/out) and on every text encoder
# (q/k/v/out projections, fc1/fc2):
#   sdxl_kohya_ldm       kohya's SDXL names: the LDM (sgm) UNet, lora_unet_input_blocks_4_1_…,
#                        lora_unet_middle_block_…, lora_unet_output_blocks_…, lora_te1_/lora_te2_,
#                        alpha 1 at rank 2 (diffusers: _maybe_map_sgm_blocks_to_diffusers)
#   sdxl_kohya_diffusers kohya keys on diffusers' UNet names (lora_unet_down_blocks_1_…), alpha 3
#                        at rank 2 (factor 1.5); no add_embedding (diffusers' kohya converter has no
#                        rule for it)
#   sdxl_peft            diffusers/PEFT keys: unet.*, text_encoder.*, text_encoder_2.* lora_A/lora_B
#   sd2_kohya            kohya keys as kohya writes them for SD 2.x: lora_unet_* on diffusers names,
#                        lora_te_* on the transformers names of the OpenCLIP tower (kohya converts it
#                        to CLIPTextModel, and so does diffusers)
#   sd2_peft             unet.*, text_encoder.*
# Stacked runs load two files as two adapters with their own weights (set_adapters) and fuse both.
FAMILY_PROMPTS = ["a photo of a cat", "an oil painting of a lighthouse at dawn, dramatic sky"]
FAMILY_NEGATIVE = ["blurry, low quality", "cartoon"]
RESNET_TO_LDM = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                 ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
TOP_TO_LDM = {"conv_in": "input_blocks.0.0", "conv_out": "out.2", "time_embedding.linear_1": "time_embed.0",
              "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
              "add_embedding.linear_2": "label_emb.0.2"}


def ldm_unet_module(module, unet_config):
    """A diffusers UNet module name in the LDM/sgm layout kohya trains SDXL on (written out here from
    the UNet's structure, independently of sd_mpi's table, and proved by diffusers' converter)."""
    if module in TOP_TO_LDM:
        return TOP_TO_LDM[module]
    group = unet_config.layers_per_block + 1
    parts = module.split(".")

    def resnet(rest):
        for d, l in RESNET_TO_LDM:
            if rest == d or rest.startswith(d + "."):
                return l + rest[len(d):]
        raise ValueError(module)

    if parts[0] == "down_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * group + group - 1}.0.op"
        block = 1 + b * group + int(parts[3])
        rest = ".".join(parts[4:])
        return f"input_blocks.{block}.0.{resnet(rest)}" if kind == "resnets" else f"input_blocks.{block}.1.{rest}"
    if parts[0] == "mid_block":
        rest = ".".join(parts[3:])
        if parts[1] == "attentions":
            return f"middle_block.1.{rest}"
        return f"middle_block.{0 if parts[2] == '0' else 2}.{resnet(rest)}"
    if parts[0] == "up_blocks":
        b, kind = int(parts[1]), parts[2]
        if kind == "upsamplers":
            with_attention = unet_config.up_block_types[b].startswith("CrossAttn")
            return f"output_blocks.{b * group + group - 1}.{2 if with_attention else 1}.conv"
        block = b * group + int(parts[3])
        rest = ".".join(parts[4:])
        return f"output_blocks.{block}.0.{resnet(rest)}" if kind == "resnets" else f"output_blocks.{block}.1.{rest}"
    raise ValueError(module)


def family_unet_targets(unet, with_add_embedding):
    out = []
    for name, p in unet.named_parameters():
        if not name.endswith(".weight") or p.dim() < 2:
            continue
        m = name[: -len(".weight")]
        attention = any(m.endswith(s) for s in ("attn1.to_q", "attn1.to_v", "attn1.to_out.0", "attn2.to_k",
                                                "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"))
        resnet = ".resnets." in m and any(m.endswith(s) for s in ("conv1", "time_emb_proj", "conv2", "conv_shortcut"))
        sampler = m.endswith("downsamplers.0.conv") or m.endswith("upsamplers.0.conv")
        top = m in ("conv_in", "conv_out", "time_embedding.linear_1") or (with_add_embedding and m == "add_embedding.linear_2")
        if attention or resnet or sampler or top:
            out.append((m, tuple(p.shape)))
    return out


def make_family_lora(pipe, style, path, seed, alpha):
    """Writes one LoRA file for `pipe`; returns its layers (component, module, down, up, alpha)."""
    gen = torch.Generator().manual_seed(seed)
    components = [("unet", family_unet_targets(pipe.unet, style != "kohya_diffusers"))]
    kohya_te = {"text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}
    if getattr(pipe, "text_encoder_2", None) is not None:
        kohya_te["text_encoder"] = "lora_te1_"
    for te in kohya_te:
        if getattr(pipe, te, None) is not None:
            targets = []
            for name, p in getattr(pipe, te).named_parameters():
                if name.endswith(".weight") and any(s in name for s in ("_proj.weight", "fc1.", "fc2.")) \
                        and "text_projection" not in name:
                    m = name[: -len(".weight")]
                    targets.append(((m if m.startswith("text_model.") else "text_model." + m), tuple(p.shape)))
            components.append((te, targets))
    tensors, layers = {}, []
    for component, targets in components:
        for module, shape in targets:
            down, up = lora_pair(shape, gen)
            if style == "peft":
                stem, down_key, up_key = component + "." + module, ".lora_A.weight", ".lora_B.weight"
                a = float(RANK)
            else:
                name = ldm_unet_module(module, pipe.unet.config) if style == "kohya_ldm" and component == "unet" else module
                stem = ("lora_unet_" if component == "unet" else kohya_te[component]) + name.replace(".", "_")
                down_key, up_key, a = ".lora_down.weight", ".lora_up.weight", alpha
                tensors[stem + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
            tensors[stem + down_key], tensors[stem + up_key] = down, up
            layers.append((component, module, down.float(), up.float(), a))
    save_file(tensors, path)
    return layers


def state_of(pipe):
    return {c: {k: v.clone() for k, v in getattr(pipe, c).state_dict().items()}
            for c in ("unet", "text_encoder", "text_encoder_2") if getattr(pipe, c, None) is not None}


def check_fused_stack(before, pipe, stack):
    """The fused weights are W + Σ scale · alpha / rank · up @ down over the stack, nothing else
    changed; returns the touched weights per component."""
    after = state_of(pipe)
    expect = {}
    for layers, scale in stack:
        for component, module, down, up, alpha in layers:
            key = module + ".weight"
            if key not in after[component] and key.startswith("text_model."):
                key = key[len("text_model."):]
            w = expect.get((component, key), before[component][key])
            delta = (up.reshape(up.shape[0], RANK) @ down.reshape(RANK, -1)).reshape(w.shape) * (alpha / RANK * scale)
            expect[(component, key)] = w + delta
    for (component, key), w in expect.items():
        err = (after[component][key] - w).abs().max().item()
        assert err < 1e-5, f"{component} {key}: fused weight off by {err}"
    for component in after:
        for key, w in before[component].items():
            if (component, key) not in expect:
                assert torch.equal(after[component][key], w), f"{component} {key} changed but no LoRA names it"
    counts = {}
    for component, _ in expect:
        counts[component] = counts.get(component, 0) + 1
    return counts


# (family, pipeline, [(lora file, scale), ...], sampler, steps, guidance, width, height)
FAMILY_CASES = [
    ("sdxl", "sdxl", [("sdxl_kohya_ldm", 0.8)], "euler", 4, 5.0, 64, 64),
    ("sdxl", "sdxl", [("sdxl_kohya_diffusers", -0.6)], "euler_a", 4, 6.0, 64, 48),
    ("sdxl", "sdxl", [("sdxl_peft", 1.0)], "dpm++2m", 5, 5.0, 64, 64),
    ("sdxl", "sdxl", [("sdxl_kohya_ldm", 0.7), ("sdxl_peft", -0.5)], "ddim", 4, 5.0, 64, 64),
    ("sd2", "sd2_v", [("sd2_kohya", 0.8)], "ddim", 5, 7.5, 64, 64),
    ("sd2", "sd2_v", [("sd2_peft", 1.0)], "euler", 5, 7.5, 64, 48),
    ("sd2", "sd2_v", [("sd2_kohya", 1.0), ("sd2_peft", -0.7)], "dpm++2m", 6, 7.5, 64, 64),
]
FAMILY_FILES = {  # file → (family, style, seed, kohya alpha)
    "sdxl_kohya_ldm": ("sdxl", "kohya_ldm", 4101, 1.0),
    "sdxl_kohya_diffusers": ("sdxl", "kohya_diffusers", 4102, 3.0),
    "sdxl_peft": ("sdxl", "peft", 4103, None),
    "sd2_kohya": ("sd2", "kohya_diffusers", 4201, 1.0),
    "sd2_peft": ("sd2", "peft", 4202, None),
}


def family_pipe(family, pname, tok_dir):
    """A fresh pipeline of make_sdxl_golden.py / make_sd2_golden.py, its recipes checked."""
    import make_sd2_golden as sd2
    import make_sdxl_golden as xl
    mod = xl if family == "sdxl" else sd2
    sched = mod.PIPELINES[pname]
    pipe, _, recipes = mod.build(tok_dir, sched)
    with open(os.path.join(pg.ROOT, "tests", "data", "golden", family, "pipelines.json")) as f:
        stored = json.load(f)["pipelines"][pname]
    assert recipes == stored["weights"], f"{family} {pname}: recipes differ from its pipelines.json"
    return pipe, mod


def make_families(tok_dir):
    images = bytearray()
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
           "note": "models: tests/data/golden/<family>/pipelines.json (same recipes); loras: files here",
           "runs": []}
    layers = {}
    for ci, (family, pname, stack, sampler, steps, guidance, width, height) in enumerate(FAMILY_CASES):
        pipe, mod = family_pipe(family, pname, tok_dir)
        for name, _ in stack:
            if name not in layers:
                fam, style, seed, alpha = FAMILY_FILES[name]
                layers[name] = make_family_lora(pipe, style, os.path.join(OUT, name + ".safetensors"), seed, alpha)
        before = state_of(pipe)
        names = [f"a{i}" for i in range(len(stack))]
        for (name, _), adapter in zip(stack, names):
            pipe.load_lora_weights(os.path.join(OUT, name + ".safetensors"), adapter_name=adapter)
        pipe.set_adapters(names, adapter_weights=[s for _, s in stack])
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()  # keeps the fused weights, drops PEFT's wrappers
        touched = check_fused_stack(before, pipe, [(layers[n], s) for n, s in stack])
        cls = mod.SAMPLERS[sampler]
        cls = cls[0] if isinstance(cls, tuple) else cls
        pipe.scheduler = cls.from_config(mod.model_scheduler(mod.PIPELINES[pname]).config)
        pipe.set_progress_bar_config(disable=True)
        seeds = [5000 + 29 * ci, 2 ** 32 + 23 + ci]
        with torch.no_grad():
            out = pipe(prompt=FAMILY_PROMPTS, negative_prompt=FAMILY_NEGATIVE, num_inference_steps=steps,
                       guidance_scale=guidance, width=width, height=height,
                       generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pil").images
        arr = np.stack([np.asarray(im, dtype=np.uint8) for im in out])
        run_id = f"{pname}/{ci:02d}_{sampler.replace('+', 'p')}_" + "+".join(f"{n}x{s}" for n, s in stack)
        doc["runs"].append({"id": run_id, "family": family, "pipeline": pname,
                            "loras": [{"file": n + ".safetensors", "scale": s} for n, s in stack],
                            "lora_weights": touched, "sampler": sampler, "steps": steps, "guidance": guidance,
                            "width": width, "height": height, "prompts": FAMILY_PROMPTS,
                            "negative_prompts": FAMILY_NEGATIVE, "seeds": seeds, "images_offset": len(images),
                            "images_shape": list(arr.shape)})
        images += arr.tobytes()
        print(run_id, arr.shape, "weights", touched, "mean", float(arr.mean()), file=sys.stderr)
    with open(os.path.join(OUT, "families.u8"), "wb") as f:
        f.write(images)
    with open(os.path.join(OUT, "families.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def make_tiny_sdxl_lora(folder):
    """A kohya SDXL LoRA (LDM-named UNet keys, lora_te1_/lora_te2_) for `sd_mpi make-model --preset
    tiny-sdxl` (any seed: only the shapes matter), for the command-line tests; diffusers' loader
    proves it on that folder (every weight it names fused as W + scale · alpha / rank · up @ down)."""
    import types
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    gen = torch.Generator().manual_seed(78)
    tensors, layers = {}, []
    kohya = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}
    config = types.SimpleNamespace(layers_per_block=pipe.unet.config.layers_per_block,
                                   up_block_types=pipe.unet.config.up_block_types)
    for component, prefix in kohya.items():
        for name, p in sorted(getattr(pipe, component).named_parameters()):
            if not name.endswith(".weight") or not any(s in name for s in (
                    "attn2.to_k.", "attn1.to_out.0.", "proj_in.", "resnets.0.conv1.", "_proj.", "fc1.", "fc2.")):
                continue
            module = name[: -len(".weight")]
            if component != "unet" and not module.startswith("text_model."):
                module = "text_model." + module
            down, up = lora_pair(tuple(p.shape), gen)
            stem = prefix + (ldm_unet_module(module, config) if component == "unet" else module).replace(".", "_")
            tensors[stem + ".lora_down.weight"], tensors[stem + ".lora_up.weight"] = down, up
            tensors[stem + ".alpha"] = torch.tensor(1.0, dtype=torch.float16)
            layers.append((component, module, down.float(), up.float(), 1.0))
    path = os.path.join(OUT, "tiny_sdxl_kohya.safetensors")
    save_file(tensors, path)
    before = state_of(pipe)
    pipe.load_lora_weights(path)
    pipe.fuse_lora(lora_scale=0.8)
    pipe.unload_lora_weights()  # keeps the fused weights, drops PEFT's wrappers
    touched = check_fused_stack(before, pipe, [(layers, 0.8)])
    return touched


def main():
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else None
    only_families = "--families" in sys.argv[2:]
    tiny_sdxl = [a for a in sys.argv[2:] if not a.startswith("--")]  # `sd_mpi make-model --preset tiny-sdxl` DIR
    if not tok_dir:
        sys.exit("usage: make_lora_golden.py TOKENIZER_DIR  (sd_mpi make-model --preset tiny DIR; then DIR/tokenizer)")
    os.makedirs(OUT, exist_ok=True)
    if tiny_sdxl:
        print("tiny_sdxl_kohya.safetensors:", make_tiny_sdxl_lora(tiny_sdxl[0]), file=sys.stderr)
    make_families(tok_dir)
    if only_families:  # `--families`: the SDXL and SD 2.x part alone
        return
    with open(PIPELINE_JSON) as f:
        stored = json.load(f)["pipelines"]
    images = bytearray()
    doc = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
           "note": "models: tests/data/golden/pipeline/pipelines.json (same recipes)", "runs": []}
    plans = {"four_level": ("kohya", [("ddim", 5, 0.8), ("euler_a", 5, -0.6)]),
             "two_level": ("peft", [("euler", 5, 1.0), ("dpm++2m", 6, 0.5)])}
    for pname, spec in pg.PIPELINES.items():
        style, cases = plans[pname]
        lora_file = f"{pname}_{style}.safetensors"
        layers = None
        for ci, (sampler, steps, scale) in enumerate(cases):
            pipe, configs, recipes = pg.build(pname, spec, tok_dir)
            assert recipes == stored[pname]["weights"], f"{pname}: recipes differ from {PIPELINE_JSON}"
            if layers is None:
                layers = make_lora(pipe, style, os.path.join(OUT, lora_file), seed=1234 + len(pname))
            before = {"unet": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
                      "text_encoder": {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}}
            pipe.load_lora_weights(os.path.join(OUT, lora_file))
            pipe.fuse_lora(lora_scale=scale)
            pipe.unload_lora_weights()  # keeps the fused weights, drops PEFT's wrappers
            touched = check_fused(before, pipe, layers, scale)
            pipe.set_progress_bar_config(disable=True)
            cls, extra = pg.SAMPLERS[sampler]
            pipe.scheduler = cls.from_config(PNDMScheduler.from_config(pg.SD15_SCHEDULER).config, **extra)
            base = spec["unet"]["sample_size"] * 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
            seeds = [7000 + 13 * ci, 2 ** 32 + 5 + ci]
            with torch.no_grad():
                out = pipe(prompt=pg.PROMPTS, negative_prompt=pg.NEGATIVE, num_inference_steps=steps,
                           guidance_scale=7.5, width=base, height=base,
                           generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pil").images
            arr = np.stack([np.asarray(im, dtype=np.uint8) for im in out])
            run_id = f"{pname}/{ci:02d}_{sampler.replace('+', 'p')}_x{scale}"
            doc["runs"].append({"id": run_id, "pipeline": pname, "lora": lora_file, "scale": scale,
                                "lora_weights": touched, "sampler": sampler, "steps": steps, "guidance": 7.5,
                                "width": base, "height": base, "prompts": pg.PROMPTS, "negative_prompts": pg.NEGATIVE,
                                "seeds": seeds, "images_offset": len(images), "images_shape": list(arr.shape)})
            images += arr.tobytes()
            print(run_id, arr.shape, "weights", touched, "mean", float(arr.mean()), file=sys.stderr)
    print("tiny_kohya.safetensors:", make_tiny_lora(tok_dir), "modules", file=sys.stderr)
    with open(os.path.join(OUT, "images.u8"), "wb") as f:
        f.write(images)
    with open(os.path.join(OUT, "runs.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
