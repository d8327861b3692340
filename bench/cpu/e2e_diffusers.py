#!/usr/bin/env python3
"""The peer of bench/cpu/e2e_cpu_bench.cpp: diffusers' StableDiffusionPipeline on the CPU (float32,
PyTorch's SDPA), same model folder, same shapes, same repetitions. JSON on stdout.
  e2e_diffusers.py MODEL_DIR SIZE STEPS REPS THREADS"""
import json
import statistics
import sys
import time

import torch
from diffusers import StableDiffusionPipeline


def median_time(reps, fn):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    model, size, steps, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    tok = pipe.tokenizer
    ids = tok(["", "a photograph of an astronaut riding a horse"], padding="max_length", max_length=77,
              truncation=True, return_tensors="pt").input_ids
    h = size // pipe.vae_scale_factor
    g = torch.Generator().manual_seed(0)
    x = torch.randn((2, 4, h, h), generator=g)
    with torch.no_grad():
        ctx = pipe.text_encoder(ids)[0]
        t = torch.tensor(500)
        text_s = median_time(reps, lambda: pipe.text_encoder(ids)[0])
        unet_s = median_time(reps, lambda: pipe.unet(x, t, encoder_hidden_states=ctx).sample)
        vae_s = median_time(max(1, reps // 2), lambda: pipe.vae.decode(x[:1]).sample)
        t0 = time.perf_counter()
        pipe("a photograph of an astronaut riding a horse", num_inference_steps=steps, guidance_scale=7.5,
             height=size, width=size, generator=[torch.Generator().manual_seed(0)])
        total_s = time.perf_counter() - t0
    print(json.dumps({"engine": "diffusers", "torch": torch.__version__, "size": size, "steps": steps, "reps": reps,
                      "threads": threads, "load_s": load_s, "text_encoder_s": text_s, "unet_step_s": unet_s,
                      "vae_decode_s": vae_s, "generation_s": total_s}))


if __name__ == "__main__":
    main()
