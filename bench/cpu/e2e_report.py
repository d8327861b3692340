#!/usr/bin/env python3
"""Writes the results of one bench/cpu end-to-end run (run_e2e.sh, run_e2e_sdxl.sh) as
bench/results/cpu/<date>-<name>.md and .json: a time table (each engine, and our speed-up over
each peer), then each engine's GFLOP/s per component against the machine's measured sgemm rates.
Reads one JSON object on stdin:
  {"out": PREFIX, "title": str, "engines": [{engine JSON}, ...] (sd_mpi first),
   "rounds": [[{sd_mpi JSON}, {diffusers JSON}], ...] (optional: ours and diffusers back to back per
   round; with two or more, their times become the rounds' medians and each round's ratios are listed),
   "flops": count_flops.py's JSON, "sgemm_gflops": float, "cpu": str, "commit": str,
   "load_before": str, "load_after": str, "notes": [str, ...]}
"""
import json
import statistics
import sys

LABELS = {"sd_mpi": "sd_mpi", "diffusers": "diffusers", "stable-diffusion.cpp": "sd.cpp"}


TIMED = ["text_encoder_s", "unet_step_s", "vae_decode_s", "generation_s", "generation_2_s", "load_s"]


def merge_rounds(run):
    """Ours and diffusers at each time key's median over the rounds (the other engines as measured);
    returns the markdown lines of the per-round table."""
    rounds = run.get("rounds") or []
    if len(rounds) < 2:
        return []
    for i in range(2):
        merged = dict(rounds[-1][i])
        for key in TIMED + ["text_encoder_2_s", "peak_rss_gib"]:
            values = [r[i][key] for r in rounds if key in r[i]]
            if values:
                merged[key] = statistics.median(values)
        run["engines"][i] = merged
    shown = [("UNet step", "unet_step_s"), ("VAE decode", "vae_decode_s"), ("whole image", "generation_s"),
             ("second image", "generation_2_s")]
    # Runs that carry a speed probe (run_e2e.sh alternates the order and probes before each engine).
    probed = all("machine_sgemm_gflops" in r[0] and "machine_sgemm_gflops" in r[1] for r in rounds)
    heading = ("sd_mpi and diffusers back to back, ours first in odd rounds, diffusers first in even ones"
               if probed else "sd_mpi then diffusers back to back")
    lines = ["", f"## {len(rounds)} rounds, {heading}", "",
             "The table above shows each time's median over these rounds. Speed-up per round: diffusers' time "
             "over ours in the same round."
             + (" Probe: our sgemm rate (2048³, every thread) just before each engine's run, GFLOP/s: how fast "
                "the machine was then." if probed else ""), "",
             "| round | " + " | ".join(f"{n}: ours / diffusers (s), speed-up" for n, _ in shown)
             + (" | probe before ours / diffusers" if probed else "") + " |",
             "|---" * (1 + len(shown) + probed) + "|"]
    ratios = {key: [] for _, key in shown}
    for n, (ours, theirs) in enumerate(rounds, 1):
        cells = []
        for _, key in shown:
            ratios[key].append(theirs[key] / ours[key])
            cells.append(f"{ours[key]:.3f} / {theirs[key]:.3f}, {ratios[key][-1]:.2f}×")
        if probed:
            cells.append(f"{ours['machine_sgemm_gflops']:.0f} / {theirs['machine_sgemm_gflops']:.0f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("| median (range) of the speed-ups | " + " | ".join(
        f"{statistics.median(ratios[key]):.2f}× ({min(ratios[key]):.2f}-{max(ratios[key]):.2f})" for _, key in shown)
        + (" | |" if probed else " |"))
    return lines


def main():
    run = json.load(sys.stdin)
    round_lines = merge_rounds(run)
    engines, flops = run["engines"], run["flops"]
    ours = engines[0]
    peers = engines[1:]
    sdxl = "text_encoder_2_gflop" in flops
    text_gflop = flops["text_encoder_gflop"] + flops.get("text_encoder_2_gflop", 0.0)
    # The whole image: the text encoders once, every UNet call our generation made (Euler: one
    # per step; sd.cpp's steps are the same calls), one VAE decode.
    whole_gflop = text_gflop + ours["unet_calls"] * flops["unet_gflop"] + flops["vae_decode_gflop"]
    rows = [("text encoder (2×77 tokens)" if not sdxl else "text encoder 1, CLIP ViT-L (2×77 tokens)",
             "text_encoder_s", flops["text_encoder_gflop"])]
    if sdxl:
        rows.append(("text encoder 2, OpenCLIP bigG (2×77 tokens)", "text_encoder_2_s", flops["text_encoder_2_gflop"]))
    rows += [("UNet step (CFG, 2 latents)", "unet_step_s", flops["unet_gflop"]),
             ("VAE decode (1 image)", "vae_decode_s", flops["vae_decode_gflop"]),
             (f"whole image ({ours['steps']} {ours['sampler']} steps)", "generation_s", whole_gflop),
             ("whole image, the second of a job", "generation_2_s", whole_gflop),
             ("model load", "load_s", None)]
    names = [LABELS[e["engine"]] for e in engines]
    lines = [f"# {run['title']}", "",
             f"- machine: {run['cpu']}, {ours['threads']} threads (`nproc`); commit {run['commit']}",
             f"- load average (`uptime`) before: {run['load_before']}; after: {run['load_after']}. "
             + run.get("machine_note", "Other engineers were building and training on this machine during the run: "
                                       "the times are noisy."),
             f"- sd_mpi: {ours['backend']}"]
    for e in peers:
        if e["engine"] == "diffusers":
            lines.append(f"- diffusers on torch {e['torch']} (float32, SDPA)")
        else:
            lines.append(f"- stable-diffusion.cpp {e['version']}, sd-cli built for this CPU (GGML_NATIVE), "
                         f"weights {e['weights']}; times from its log, median of {e['reps']} runs")
    lines += [f"- components: warm-up then median of {ours['reps']}; whole image: one generation after the load "
              "(the second of a job: one more, same item; sd.cpp runs one per process); "
              "same weights for every engine; speed-up: their time over ours (above 1: sd_mpi is faster)",
              *[f"- {n}" for n in run.get("notes", [])], "",
              "| stage | " + " | ".join(f"{n} (s)" for n in names) + " | "
              + " | ".join(f"speed-up vs {n}" for n in names[1:]) + " |",
              "|---" * (2 * len(names)) + "|"]
    for label, key, _ in rows:
        a = ours.get(key)
        cells = [f"{e[key]:.3f}" if key in e else "–" for e in engines]
        ratios = [f"{e[key] / a:.2f}×" if key in e and a else "–" for e in peers]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    first = [e["load_s"] + e["generation_s"] for e in engines]
    lines.append("| time to first image (load + whole image) | " + " | ".join(f"{t:.3f}" for t in first) + " | "
                 + " | ".join(f"{t / first[0]:.2f}×" for t in first[1:]) + " |")
    rss = [f"{e['peak_rss_gib']:.2f}" if "peak_rss_gib" in e else "–" for e in engines]
    lines.append("| peak RSS (GiB) | " + " | ".join(rss) + " |" + " |" * len(peers))
    lines += round_lines
    torch_rate = next((e["torch_sgemm_gflops"] for e in peers if "torch_sgemm_gflops" in e), None)
    lines += ["", "## Against the machine's sgemm rate", "",
              f"FLOPs by bench/cpu/count_flops.py (torch's FlopCounterMode on the models built from the folder's "
              f"configs: matrix products, convolutions, attention; 2 FLOP per multiply-add). sgemm rate, "
              f"{ours['threads']} threads, 2048³: ours {run['sgemm_gflops']:.1f} GFLOP/s (cpu_ops_bench, our GEMM path)"
              + (f", PyTorch {torch_rate:.1f} GFLOP/s (torch.mm)" if torch_rate else "") + ".", "",
              "| component | GFLOP per call | " + " | ".join(f"{n} GFLOP/s" for n in names) + " |",
              "|---" * (2 + len(names)) + "|"]
    for label, key, gflop in rows:
        if gflop is None:
            continue
        cells = []
        for e in engines:
            if key not in e:
                cells.append("–")
                continue
            rate = gflop / e[key]
            cells.append(f"{rate:.1f} ({100 * rate / run['sgemm_gflops']:.0f}%)")
        lines.append(f"| {label} | {gflop:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "Percentages are of our measured sgemm rate. Above 100% is possible: Winograd convolutions "
              "(ours) do fewer multiplies than the direct count above."]
    text = "\n".join(lines) + "\n"
    with open(run["out"] + ".md", "w") as f:
        f.write(text)
    with open(run["out"] + ".json", "w") as f:
        json.dump({k: v for k, v in run.items() if k != "out"}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
