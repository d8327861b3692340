#!/usr/bin/env python3
"""The stable-diffusion.cpp peer of bench/cpu/e2e_cpu_bench.cpp: runs its sd-cli (built by
bench/cpu/build_sdcpp.sh) on the same weights (an LDM single file from diffusers_to_ldm.py),
REPS times, and reads the component times from its log, median over the runs. JSON on stdout.

sd.cpp's log gives: model load ("loading tensors completed"), both text-encoder passes
("get_learned_condition"), the denoising loop ("sampling completed"; it runs the cond and uncond
UNet calls one after the other at batch 1, so one step is the same work as our CFG batch 2),
VAE decode ("decode_first_stage") and the whole generation ("generate_image completed in").
Weights are asked for as f32 (--type f32, the closest to the other engines' float32: sd.cpp keeps
its convolution kernels in f16 whatever the type, by design). Peak RSS: the largest of the runs.
  e2e_sdcpp.py SD_CLI CHECKPOINT SIZE STEPS REPS THREADS [SAMPLER]   (SAMPLER: euler, euler_a, dpm++2m)
"""
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile

PROMPT = "a photograph of an astronaut riding a horse"
TIMES = {
    "load_s": r"loading tensors completed, taking ([0-9.]+)s",
    "text_encoder_s": r"get_learned_condition completed, taking ([0-9.]+)s",
    "sampling_s": r"sampling completed, taking ([0-9.]+)s",
    "vae_decode_s": r"decode_first_stage completed, taking ([0-9.]+)s",
    "generation_s": r"generate_image completed in ([0-9.]+)s",
}


def one_run(cli, ckpt, size, steps, threads, sampler, png):
    cmd = [cli, "-m", ckpt, "-p", PROMPT, "--steps", str(steps), "-W", str(size), "-H", str(size),
           "--cfg-scale", "7.5", "--sampling-method", sampler, "-s", "0", "-t", str(threads), "--type", "f32",
           "-o", png]
    run = subprocess.run(cmd, capture_output=True, text=True)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        sys.exit(f"e2e_sdcpp.py: {' '.join(cmd)} exited {run.returncode}:\n{log[-2000:]}")
    found = {}
    for key, pattern in TIMES.items():
        m = re.search(pattern, log)
        if not m:
            sys.exit(f"e2e_sdcpp.py: no '{pattern}' in sd-cli's log:\n{log[-2000:]}")
        found[key] = float(m.group(1))
    return found


def main():
    cli, ckpt = sys.argv[1], sys.argv[2]
    size, steps, reps, threads = (int(a) for a in sys.argv[3:7])
    sampler = sys.argv[7] if len(sys.argv) > 7 else "euler"
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(cli, ckpt, size, steps, threads, sampler, f"{tmp}/out.png") for _ in range(reps)]
    out = {"engine": "stable-diffusion.cpp", "version": "0.4.7 (stable-diffusion-cpp-python sdist; sd.cpp commit 1e23b2e)",
           "size": size, "steps": steps, "reps": reps, "threads": threads, "sampler": sampler,
           "weights": "--type f32 (its convolution kernels stay f16, by its design)"}
    for key in TIMES:
        out[key] = statistics.median(r[key] for r in runs)
    out["unet_step_s"] = out["sampling_s"] / steps
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
