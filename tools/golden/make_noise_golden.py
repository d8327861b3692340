#!/usr/bin/env python3
"""Golden data for TorchGenerator (src/sched/noise.cpp): torch.randn with a seeded CPU generator.

Writes tests/data/golden/noise/:
  noise.safetensors   every drawn tensor, flattened in torch's memory order (F32; F16 for the
                      float16 cases)
  noise.json          the cases: for each, the seed and the list of randn calls made on ONE
                      generator in order (size, dtype, tensor name), plus the environment

Cases:
  single_<seed>_<n>   one randn(n) right after manual_seed, for seeds 0, 1, 42, 2**31-1, 2**32+7
                      (only the low 32 bits of a seed matter) and n = 1, 15 (scalar double path
                      with its cached second normal), 16, 17 (the 16-block kernel and its tail
                      rule), 4*64*64 and 4*64*96 (SD 1.5 latents at 512x512 and 512x768)
  twice_0             two consecutive randn(4, 64, 64) calls on one generator (stream position;
                      the first call equals single_0_16384 and is not stored again)
  cache_<seed>        randn(1), randn(4*64*64) (not stored), randn(1), randn(17), randn(1): the
                      cached double normal survives the vectorised call, which neither reads nor
                      writes it
  mixed_<seed>        randn(15), randn(33), randn(7), randn(16)
  half_<seed>         float16 draws: randn(16), randn(17), randn(5), randn(4*8*8) on one generator

Run with the pinned environment (tools/golden/requirements.txt):
  python tools/golden/make_noise_golden.py [--out tests/data/golden/noise]
"""
import argparse
import json
import os
import platform

import numpy as np
import torch
from safetensors.numpy import save_file

SEEDS = [0, 1, 42, 2**31 - 1, 2**32 + 7]
SIZES = [1, 15, 16, 17, 4 * 64 * 64, 4 * 64 * 96]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "..", "tests", "data", "golden", "noise")
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    tensors = {}
    cases = []

    def run_case(name, seed, calls, unstored=()):
        g = torch.Generator("cpu").manual_seed(seed)
        entries = []
        for i, (n, dtype) in enumerate(calls):
            t = torch.randn(n, generator=g, dtype=dtype)
            key = None if i in unstored else f"{name}.{i}"
            if key is None:
                entries.append({"n": n, "dtype": "F32", "tensor": None})
                continue
            if dtype == torch.float16:
                tensors[key] = t.numpy().astype(np.float16)
            else:
                tensors[key] = t.numpy().astype(np.float32)
            entries.append({"n": n, "dtype": "F16" if dtype == torch.float16 else "F32", "tensor": key})
        cases.append({"name": name, "seed": seed, "calls": entries})

    f32, f16 = torch.float32, torch.float16
    for seed in SEEDS:
        for n in SIZES:
            run_case(f"single_{seed}_{n}", seed, [(n, f32)])
    run_case("twice_0", 0, [(4 * 64 * 64, f32), (4 * 64 * 64, f32)], unstored=(0,))
    for seed in [0, 42]:
        run_case(f"cache_{seed}", seed, [(1, f32), (4 * 64 * 64, f32), (1, f32), (17, f32), (1, f32)],
                 unstored=(1,))
        run_case(f"mixed_{seed}", seed, [(15, f32), (33, f32), (7, f32), (16, f32)])
        run_case(f"half_{seed}", seed, [(16, f16), (17, f16), (5, f16), (4 * 8 * 8, f16)])

    path = os.path.join(args.out, "noise.safetensors")
    save_file(tensors, path)
    os.chmod(path, 0o644)
    meta = {
        "generator": "torch.Generator('cpu').manual_seed(seed); torch.randn(n, generator=g, dtype=...)",
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cases": cases,
    }
    with open(os.path.join(args.out, "noise.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
