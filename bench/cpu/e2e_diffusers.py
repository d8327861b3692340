#!/usr/bin/env python3
"""The peer of bench/cpu/e2e_cpu_bench.cpp: diffusers' StableDiffusionPipeline (SD 1.x) or
StableDiffusionXLPipeline (a folder with text_encoder_2) on the CPU (float32, PyTorch's SDPA),
same model folder, same shapes, same repetitions, same order (components standalone, then load,
then one generation whose UNet and VAE phases are timed by wrapping the modules' calls). SDXL's
UNet and VAE rows come from the generation, as in e2e_cpu_bench. JSON on stdout.
  e2e_diffusers.py MODEL_DIR SIZE STEPS REPS THREADS [SAMPLER]   (SAMPLER: pndm | euler)"""
import json
import os
import resource
import statistics
import sys
import time

import torch
from diffusers import EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

PROMPT = "a photograph of an astronaut riding a horse"
SCHEDULERS = {"pndm": PNDMScheduler, "euler": EulerDiscreteScheduler}


def median_time(reps, fn):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class PhaseTimer:
    """Wraps a module's method so a pipeline call accumulates the seconds spent in it."""

    def __init__(self, owner, method):
        self.seconds, self.calls = 0.0, 0
        inner = getattr(owner, method)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            result = inner(*args, **kwargs)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            return result
        setattr(owner, method, timed)


def torch_sgemm_gflops(reps):
    """PyTorch's own float32 matrix-product rate (oneDNN/MKL) on 2048^3: its ceiling, as
    cpu_ops_bench's sgemm rate is ours."""
    n = 2048
    a, b = torch.full((n, n), 0.5), torch.full((n, n), 0.25)
    return 2 * n ** 3 / min(median_time(1, lambda: torch.mm(a, b)) for _ in range(max(1, reps))) / 1e9


def main():
    model, size, steps, reps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    sampler = sys.argv[6] if len(sys.argv) > 6 else "pndm"
    torch.set_num_threads(threads)
    sdxl = os.path.isdir(os.path.join(model, "text_encoder_2"))
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    extra = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
    t0 = time.perf_counter()
    pipe = cls.from_pretrained(model, torch_dtype=torch.float32, **extra)
    load_s = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[sampler].from_config(pipe.scheduler.config)
    out = {"engine": "diffusers", "torch": torch.__version__, "family": "SDXL" if sdxl else "SD 1.x", "size": size,
           "steps": steps, "reps": reps, "threads": threads, "sampler": sampler, "load_s": load_s}
    out["torch_sgemm_gflops"] = torch_sgemm_gflops(reps)
    encoders = [("text_encoder_s", pipe.tokenizer, pipe.text_encoder)]
    if sdxl:
        encoders.append(("text_encoder_2_s", pipe.tokenizer_2, pipe.text_encoder_2))
    h = size // pipe.vae_scale_factor
    with torch.no_grad():
        for key, tok, te in encoders:
            ids = tok(["", PROMPT], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            out[key] = median_time(reps, lambda: te(ids, output_hidden_states=sdxl))
        if not sdxl:
            x = torch.randn((2, 4, h, h), generator=torch.Generator().manual_seed(0))
            ctx = torch.full((2, 77, pipe.text_encoder.config.hidden_size), 0.1)
            out["unet_step_s"] = median_time(reps, lambda: pipe.unet(x, torch.tensor(500), encoder_hidden_states=ctx).sample)
            out["vae_decode_s"] = median_time(max(1, reps // 2), lambda: pipe.vae.decode(x[:1]).sample)
        unet_phase, vae_phase = PhaseTimer(pipe.unet, "forward"), PhaseTimer(pipe.vae, "decode")
        t0 = time.perf_counter()
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
             generator=[torch.Generator().manual_seed(0)])
        out["generation_s"] = time.perf_counter() - t0
        if not sdxl:  # a batch job's later images, as e2e_cpu_bench's second generation
            unet_calls, unet_seconds, vae_seconds = unet_phase.calls, unet_phase.seconds, vae_phase.seconds
            t1 = time.perf_counter()
            pipe(PROMPT, num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
                 generator=[torch.Generator().manual_seed(0)])
            out["generation_2_s"] = time.perf_counter() - t1
            unet_phase.calls, unet_phase.seconds, vae_phase.seconds = unet_calls, unet_seconds, vae_seconds
    out["gen_unet_step_s"] = unet_phase.seconds / max(1, unet_phase.calls)
    out["gen_vae_s"] = vae_phase.seconds
    out["unet_calls"] = unet_phase.calls
    if sdxl:
        out["unet_step_s"], out["vae_decode_s"] = out["gen_unet_step_s"], out["gen_vae_s"]
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
