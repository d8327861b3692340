#!/usr/bin/env python3
"""An SD 1.x diffusers folder (e.g. `sd_mpi make-model --preset sd15`) as one original-LDM
single-file checkpoint, so stable-diffusion.cpp (which reads only single files) runs the very
weights that sd_mpi and diffusers run in bench/cpu/run_e2e.sh.

The key mapping is not repeated here: it is the inverse table of
tools/golden/make_checkpoint_golden.py, which that script proves against diffusers' own
single-file loaders. Tensors keep their file dtype (F16 for the presets). After writing, the
UNet is read back with diffusers' UNet2DConditionModel.from_single_file and compared with the
folder's, tensor by tensor, so a wrong name or shape fails here rather than inside sd.cpp.
  GOLDEN_PY bench/cpu/diffusers_to_ldm.py MODEL_DIR OUT.safetensors
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "golden"))
import make_checkpoint_golden as keys  # noqa: E402  (the proven diffusers → LDM table)
from diffusers import UNet2DConditionModel  # noqa: E402


def component(model_dir, name):
    path = os.path.join(model_dir, name, "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(path):
        path = os.path.join(model_dir, name, "model.safetensors")
    return load_file(path)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: diffusers_to_ldm.py MODEL_DIR OUT.safetensors")
    model_dir, out = sys.argv[1], sys.argv[2]
    unet_cfg = json.load(open(os.path.join(model_dir, "unet", "config.json")))
    vae_cfg = json.load(open(os.path.join(model_dir, "vae", "config.json")))
    if unet_cfg["layers_per_block"] != keys.LAYERS_PER_BLOCK or len(vae_cfg["up_block_types"]) != keys.VAE_BLOCKS:
        sys.exit(f"{model_dir}: not an SD 1.x layout (layers_per_block {unet_cfg['layers_per_block']}, "
                 f"{len(vae_cfg['up_block_types'])} VAE blocks)")
    keys.UNET_UP = tuple(unet_cfg["up_block_types"])  # which up blocks carry attention (upsampler slot)
    ckpt = {}
    for n, t in component(model_dir, "unet").items():
        ckpt["model.diffusion_model." + keys.unet_to_ldm(n)] = t
    for n, t in component(model_dir, "vae").items():
        ldm = keys.vae_to_ldm(n)
        if ".attn_1." in ldm and t.ndim == 2:  # LDM keeps the VAE attention projections as 1×1 convs
            t = t[:, :, None, None]
        ckpt["first_stage_model." + ldm] = t
    for n, t in component(model_dir, "text_encoder").items():
        if n.endswith("position_ids"):
            continue
        n = n if n.startswith("text_model.") else "text_model." + n
        ckpt["cond_stage_model.transformer." + n] = t
    save_file({k: v.contiguous() for k, v in ckpt.items()}, out)
    del ckpt

    ref = component(model_dir, "unet")
    back = UNet2DConditionModel.from_single_file(out, config=model_dir, subfolder="unet", local_files_only=True,
                                                 torch_dtype=next(iter(ref.values())).dtype).state_dict()
    bad = [k for k in ref if k not in back or not torch.equal(ref[k], back[k])]
    if bad or len(back) != len(ref):
        sys.exit(f"{out}: diffusers reads the UNet back differently ({len(bad)} tensors differ, e.g. {bad[:3]})")
    print(f"wrote {out}: {len(load_file(out))} tensors; diffusers reads its UNet back identical")


if __name__ == "__main__":
    main()
