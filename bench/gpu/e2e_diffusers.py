#!/usr/bin/env python3
"""diffusers' StableDiffusionPipeline measured the way bench/gpu/e2e_bench measures ours.

Same model folder (sd_mpi make-model --preset sd15), same prompt and per-item seeds (item i of a
batch: seed 1000 + i, a CPU torch.Generator each, as our pipeline reproduces), same size, steps,
guidance and batch sizes; fp16 with PyTorch's SDPA attention (AttnProcessor2_0), eager (no
torch.compile). Per batch size, after a warm-up call of the same batch with a few steps:

  seconds_per_batch         host clock around pipe(...), synchronised before and after
  text_encoder_s            CUDA events around each text-encoder forward (positive + negative)
  denoise_s                 CUDA events from the first UNet call to the last step's end
  unet_step_ms_gpu_median   median gap between consecutive callback_on_step_end events
  vae_decode_s_per_image    CUDA events around vae.decode, per image
  memory                    torch.cuda.max_memory_allocated/reserved since the batch's warm-up,
                            and the device's used memory (cudaMemGetInfo) minus that before loading

With --steps below --report-steps, projected_* fields scale the denoising loop to --report-steps
by its measured time per UNet call. One JSON line per batch size on stdout.

  e2e_diffusers.py --model DIR [--batch N]... [--steps 50] [--report-steps 50] [--warmup-steps 2]
                   [--size 512] [--guidance 7.5] [--precision fp16] [--images DIR] [--budget-seconds S]
  e2e_diffusers.py --compare OURS.jsonl THEIRS.jsonl [--images DIR] [--json OUT.json]
      prints ours against theirs (ratios), and how far our images are from theirs when both were
      saved in DIR (sd_mpi_b<B>.rgb, diffusers_b<B>.rgb: raw uint8 B x H x W x 3).

--device cpu --precision fp32 runs the same measurement on the CPU (a smoke test of this script
with a tiny model; no timing value).
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
SEED_BASE = 1000


class Stamps:
    """CUDA events on the current stream (host clock on the CPU); elapsed in milliseconds."""

    def __init__(self, torch, cuda):
        self.torch, self.cuda = torch, cuda

    def now(self):
        if self.cuda:
            e = self.torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b):
        return a.elapsed_time(b) if self.cuda else (b - a) * 1000.0


def unet_calls_for(pipe, steps):
    sched = pipe.scheduler.__class__.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    return len(sched.timesteps)


def run(args):
    import numpy as np
    import torch
    import diffusers
    import transformers
    from diffusers import StableDiffusionPipeline

    cuda = args.device.startswith("cuda")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.precision]
    common = {"bench": "e2e", "impl": "diffusers", "precision": args.precision, "width": args.size, "height": args.size,
              "guidance": args.guidance, "torch": torch.__version__, "diffusers": diffusers.__version__,
              "transformers": transformers.__version__}
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        torch.cuda.init()
        common["device"] = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info()
        used_before = total - free
    else:
        common["device"] = "cpu"
        used_before = 0
    deadline = time.monotonic() + args.budget_seconds if args.budget_seconds else None

    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe = pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0
        pipe.unet.set_attn_processor(AttnProcessor2_0())
        pipe.vae.set_attn_processor(AttnProcessor2_0())
    except (ImportError, AttributeError, ValueError) as e:  # keep the default (SDPA in diffusers 0.42)
        print(f"e2e_diffusers: could not set AttnProcessor2_0 ({e}); default processors", file=sys.stderr)
    common["attention"] = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    common["sampler"] = pipe.scheduler.__class__.__name__
    if cuda:
        torch.cuda.synchronize()
    load_s = time.perf_counter() - t0
    print(f"e2e_diffusers: {common['device']}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"model loaded in {load_s:.1f} s", file=sys.stderr)

    # Component timing: events around the text encoder's and the UNet's forwards and vae.decode.
    stamps = Stamps(torch, cuda)
    rec = {"text": [], "unet": [], "vae": [], "step": []}
    pipe.text_encoder.register_forward_pre_hook(lambda m, a: rec["text"].append([stamps.now(), None]))
    pipe.text_encoder.register_forward_hook(lambda m, a, o: rec["text"][-1].__setitem__(1, stamps.now()))
    pipe.unet.register_forward_pre_hook(lambda m, a: rec["unet"].append([stamps.now(), None]))
    pipe.unet.register_forward_hook(lambda m, a, o: rec["unet"][-1].__setitem__(1, stamps.now()))
    original_decode = pipe.vae.decode

    def timed_decode(*a, **k):
        start = stamps.now()
        out = original_decode(*a, **k)
        rec["vae"].append([start, stamps.now()])
        return out

    pipe.vae.decode = timed_decode

    def on_step_end(p, i, t, kwargs):
        rec["step"].append(stamps.now())
        return kwargs

    def generate(batch, steps):
        for v in rec.values():
            v.clear()
        gens = [torch.Generator("cpu").manual_seed(SEED_BASE + i) for i in range(batch)]
        out = pipe(prompt=[PROMPT] * batch, height=args.size, width=args.size, num_inference_steps=steps,
                   guidance_scale=args.guidance, generator=gens, output_type="np",
                   callback_on_step_end=on_step_end)
        finite = int(sum(1 for im in out.images if np.isfinite(im).all()))
        images = (out.images * 255).round().clip(0, 255).astype("uint8")  # what output_type="pil" does
        if cuda:
            torch.cuda.synchronize()
        return images, finite

    results = []
    for k, batch in enumerate(args.batch):
        r = dict(common, batch=batch, load_s=load_s)
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            tw = time.perf_counter()
            generate(batch, args.warmup_steps)
            r["warmup_s"] = time.perf_counter() - tw
            gaps = [stamps.ms(a, b) for a, b in zip(rec["step"], rec["step"][1:])]
            steps = args.steps
            if deadline and gaps:
                # Fit the timed run into the budget (later batch sizes keep 15 s each for their warm-up).
                left = deadline - time.monotonic() - 15 * (len(args.batch) - k - 1) - 10
                per_call = statistics.median(gaps) / 1000.0
                fit = int(left * 0.8 / max(per_call, 1e-6)) - 1
                if fit < steps:
                    steps = max(5, fit)
                    print(f"e2e_diffusers: batch {batch}: {steps} steps to fit the budget", file=sys.stderr)
            r["steps"] = steps
            totals, text_s, denoise_s, vae_s, step_gaps, calls = [], [], [], [], [], []
            for _ in range(args.repeats):
                if cuda:
                    torch.cuda.synchronize()
                t1 = time.perf_counter()
                images, finite = generate(batch, steps)
                totals.append(time.perf_counter() - t1)
                text_s.append(sum(stamps.ms(a, b) for a, b in rec["text"]) / 1000.0)
                denoise_s.append(stamps.ms(rec["unet"][0][0], rec["step"][-1]) / 1000.0)
                vae_s.append(sum(stamps.ms(a, b) for a, b in rec["vae"]) / 1000.0)
                step_gaps += [stamps.ms(a, b) for a, b in zip(rec["step"], rec["step"][1:])]
                calls.append(len(rec["unet"]))
            total = statistics.median(totals)
            denoise = statistics.median(denoise_s)
            n_calls = calls[0]
            r.update(unet_calls=n_calls, seconds_per_batch=total, seconds_per_image=total / batch,
                     images_per_second=batch / total, text_encoder_s=statistics.median(text_s), denoise_s=denoise,
                     unet_step_ms_host=1000.0 * denoise / max(n_calls, 1),
                     unet_step_ms_gpu_median=statistics.median(step_gaps) if step_gaps else 0.0,
                     vae_decode_s_per_image=statistics.median(vae_s) / batch, repeats=args.repeats,
                     images_ok=finite)
            r["other_s"] = total - r["text_encoder_s"] - denoise - r["vae_decode_s_per_image"] * batch
            if args.report_steps != steps:
                report_calls = unet_calls_for(pipe, args.report_steps)
                projected = total - denoise + denoise / max(n_calls, 1) * report_calls
                r.update(report_steps=args.report_steps, report_unet_calls=report_calls,
                         projected_seconds_per_image=projected / batch, projected_images_per_second=batch / projected)
            if cuda:
                free, total_mem = torch.cuda.mem_get_info()
                r["memory"] = {"max_allocated_bytes": torch.cuda.max_memory_allocated(),
                               "max_reserved_bytes": torch.cuda.max_memory_reserved(),
                               "device_used_bytes": total_mem - free,
                               "device_used_by_run_bytes": max(0, total_mem - free - used_before)}
            if args.images:
                images.tofile(os.path.join(args.images, f"diffusers_b{batch}.rgb"))
        except Exception as e:  # one batch size failing must not lose the others
            traceback.print_exc()
            r["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(r), flush=True)
        results.append(r)
    return 1 if any("error" in r for r in results) else 0


# ---- comparison --------------------------------------------------------------------------------------

def read_jsonl(path):
    rows = []
    if path and os.path.exists(path):
        for line in open(path, errors="replace"):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def image_difference(images_dir, batch, size):
    import numpy as np
    a_path = os.path.join(images_dir, f"sd_mpi_b{batch}.rgb")
    b_path = os.path.join(images_dir, f"diffusers_b{batch}.rgb")
    if not (os.path.exists(a_path) and os.path.exists(b_path)):
        return None
    a = np.fromfile(a_path, dtype=np.uint8).astype(np.int16)
    b = np.fromfile(b_path, dtype=np.uint8).astype(np.int16)
    if a.size != b.size or a.size != batch * size * size * 3:
        return {"error": f"sizes differ: {a.size} and {b.size} bytes"}
    d = np.abs(a - b)
    return {"mean_abs_levels": float(d.mean()), "max_abs_levels": int(d.max()),
            "within_1_level": float((d <= 1).mean()), "within_8_levels": float((d <= 8).mean())}


def compare(args):
    ours_rows, theirs_rows = read_jsonl(args.compare[0]), read_jsonl(args.compare[1])
    ours = {r.get("batch"): r for r in ours_rows if r.get("bench") == "e2e"}
    theirs = {r.get("batch"): r for r in theirs_rows if r.get("bench") == "e2e"}
    # Failures before any batch (no device, no model, an import error) carry no batch.
    errors = {name: r["error"] for name, rs in (("sd_mpi", ours_rows), ("diffusers", theirs_rows))
              for r in rs if "error" in r and not isinstance(r.get("batch"), int)}
    batches = sorted(b for b in set(ours) | set(theirs) if isinstance(b, int))
    rows = []
    keys = [("seconds_per_image", "s/image", ".3f"), ("images_per_second", "images/s", ".2f"),
            ("projected_seconds_per_image", "s/image@report", ".3f"), ("text_encoder_s", "text s", ".4f"),
            ("unet_step_ms_gpu_median", "UNet step ms", ".2f"), ("vae_decode_s_per_image", "VAE s/image", ".4f")]
    for b in batches:
        o, t = ours.get(b, {}), theirs.get(b, {})
        row = {"batch": b, "sd_mpi": o, "diffusers": t}
        for k, _, _ in keys:
            if isinstance(o.get(k), (int, float)) and isinstance(t.get(k), (int, float)) and o[k] > 0:
                # > 1: ours faster (for times: theirs / ours; for rates: ours / theirs)
                row[k + "_speedup"] = (o[k] / t[k]) if k == "images_per_second" else (t[k] / o[k])
        size = o.get("width") or t.get("width") or 512
        if args.images:
            row["image_difference"] = image_difference(args.images, b, size)
        rows.append(row)

    def cell(r, k, spec):
        v = r.get(k)
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    precisions = sorted({str(r[s].get("precision")) for r in rows for s in ("sd_mpi", "diffusers") if r[s]})
    lines = [f"end to end: sd_mpi vs diffusers (same GPU, same weights, {'/'.join(precisions) or '?'}, CFG); "
             "speedup > 1: sd_mpi faster"]
    lines += [f"  {name}: error: {text[:300]}" for name, text in errors.items()]
    if not rows and not errors:
        lines.append("  no results from either side")
    for row in rows:
        o, t = row["sd_mpi"], row["diffusers"]
        size = f"{o.get('width') or t.get('width') or '?'}x{o.get('height') or t.get('height') or '?'}"
        report = o.get("report_steps") or t.get("report_steps")
        lines.append(f"batch {row['batch']} ({size}; steps measured: sd_mpi {o.get('steps', '-')}, diffusers "
                     f"{t.get('steps', '-')}" + (f"; s/image@report = projected to {report} steps" if report else "")
                     + ")")
        for name, side in (("  sd_mpi", o), ("  diffusers", t)):
            if "error" in side:
                lines.append(f"{name:<12} error: {side['error'][:160]}")
        lines.append(f"  {'metric':<16} {'sd_mpi':>10} {'diffusers':>10} {'speedup':>8}")
        for k, label, spec in keys:
            if k in o or k in t:
                lines.append(f"  {label:<16} {cell(o, k, spec):>10} {cell(t, k, spec):>10} "
                             f"{cell(row, k + '_speedup', '.2f'):>8}")
        mo, mt = o.get("memory", {}), t.get("memory", {})
        if mo or mt:
            gib = 1024.0 ** 3
            ours_mem = mo.get("device_used_by_run_bytes")
            theirs_mem = mt.get("device_used_by_run_bytes")
            lines.append(f"  {'GPU mem GiB':<16} {cell({'v': ours_mem / gib} if ours_mem else {}, 'v', '.2f'):>10} "
                         f"{cell({'v': theirs_mem / gib} if theirs_mem else {}, 'v', '.2f'):>10}   (device used by the run)")
        diff = row.get("image_difference")
        if diff and "error" not in diff:
            lines.append(f"  images: mean |Δ| {diff['mean_abs_levels']:.2f} levels, max {diff['max_abs_levels']}, "
                         f"{100 * diff['within_1_level']:.1f}% within 1 level (information, not a test)")
    text = "\n".join(lines)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"format": "sd_mpi-e2e", "rows": rows, "errors": errors, "table": text}, f, indent=1)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--report-steps", type=int, default=50)
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--budget-seconds", type=float, default=0)
    ap.add_argument("--images")
    ap.add_argument("--compare", nargs=2, metavar=("OURS", "THEIRS"))
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.compare:
        return compare(args)
    if not args.model:
        ap.error("--model DIR is required")
    args.batch = args.batch or [1, 8]
    try:
        return run(args)
    except Exception as e:  # import or load failure: still one line saying why
        traceback.print_exc()
        print(json.dumps({"bench": "e2e", "impl": "diffusers", "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
