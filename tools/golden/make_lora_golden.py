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

Writes tests/data/golden/lora/{runs.json, images.u8, *.safetensors}:
  runs.json   per run: pipeline, lora file, scale, sampler, steps, guidance, size, prompts,
              negative prompts, seeds, byte offset of its uint8 images (N, H, W, 3) in images.u8
Run: GOLDEN_PY tools/golden/make_lora_golden.py TOKENIZER_DIR   (as make_pipeline_golden.py)
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


def main():
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else None
    if not tok_dir:
        sys.exit("usage: make_lora_golden.py TOKENIZER_DIR  (sd_mpi make-model --preset tiny DIR; then DIR/tokenizer)")
    os.makedirs(OUT, exist_ok=True)
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
