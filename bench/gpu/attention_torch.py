#!/usr/bin/env python3
"""torch scaled_dot_product_attention on the shapes of bench/gpu/attention_bench.cu, per backend.

    attention_torch.py OUT.json [--ours OURS.json] [--dtype f16|bf16|both] [--replays N]
    attention_torch.py --compare OURS.json TORCH.json

The first form times SDPA with each backend forced through torch.nn.attention.sdpa_kernel (flash,
cuDNN, efficient, math) and torch's own choice ("default"), the same way attention_bench times
ours: fresh random normal inputs in rotating sets covering twice the L2 cache, a CUDA graph of
n calls replayed, the median replay divided by n (eager calls when a backend cannot be captured,
and then the method says so). q, k, v are [B, N, heads*d] viewed as (B, N, heads, d) and
transposed, exactly what diffusers hands SDPA. With --ours the shapes and dtypes come from our
benchmark's JSON, so both sides time the same list.

The second form prints the comparison: our chosen variant against torch's fastest backend per
shape, the ratio, and the attention time of one SD 1.5 UNet step on each side.
"""
import argparse
import json
import math
import sys

# Same list as kShapes in attention_bench.cu: name, B, heads, Nq, Nk, d, causal, per UNet step.
SHAPES = [
    ("sd15_self_64x64_d40", 2, 8, 4096, 4096, 40, False, 5),
    ("sd15_self_32x32_d80", 2, 8, 1024, 1024, 80, False, 5),
    ("sd15_self_16x16_d160", 2, 8, 256, 256, 160, False, 5),
    ("sd15_self_8x8_d160", 2, 8, 64, 64, 160, False, 1),
    ("sd15_cross_64x64_d40", 2, 8, 4096, 77, 40, False, 5),
    ("sd15_cross_32x32_d80", 2, 8, 1024, 77, 80, False, 5),
    ("sd15_cross_16x16_d160", 2, 8, 256, 77, 160, False, 5),
    ("sd15_cross_8x8_d160", 2, 8, 64, 77, 160, False, 1),
    ("sdxl_self_64x64_d64", 2, 10, 4096, 4096, 64, False, 0),
    ("sdxl_self_32x32_d64", 2, 20, 1024, 1024, 64, False, 0),
    ("sdxl_cross_64x64_d64", 2, 10, 4096, 77, 64, False, 0),
    ("sd2_self_96x96_d64", 2, 5, 9216, 9216, 64, False, 0),
    ("vae_mid_d512", 1, 1, 4096, 4096, 512, False, 0),
    ("clip_causal_77_d64", 2, 12, 77, 77, 64, True, 0),
]


def visible_pairs(nq, nk, causal):
    if not causal:
        return nq * nk
    return sum(min(nk, i + 1) for i in range(nq))


def flop(b, h, nq, nk, d, causal):
    return 4.0 * b * h * d * visible_pairs(nq, nk, causal)


def time_backend(torch, F, backend, sets, causal, flops, replays):
    """Median µs per call of SDPA over the rotating sets, with `backend` forced (None: default)."""
    from torch.nn.attention import sdpa_kernel

    def call(i):
        q, k, v = sets[i % len(sets)]
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    ctx = (lambda: sdpa_kernel([backend])) if backend is not None else None
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        if ctx:
            with ctx():
                for i in range(3):
                    call(i)
        else:
            for i in range(3):
                call(i)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def run_eager(n):
        if ctx:
            with ctx():
                for i in range(n):
                    call(i)
        else:
            for i in range(n):
                call(i)

    start.record()
    run_eager(3)
    stop.record()
    torch.cuda.synchronize()
    est_us = max(start.elapsed_time(stop) * 1000.0 / 3, 0.5)
    n = max(len(sets), min(512, int(math.ceil(300.0 / est_us))))

    method = "graph"
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            run_eager(n)
        replay = graph.replay
        replay()
        replay()
    except Exception as e:  # noqa: BLE001 - some backends refuse capture; time eagerly then
        method = "eager (graph capture failed: %s)" % str(e).splitlines()[0][:120]
        torch.cuda.synchronize()
        graph = None

        def replay():
            run_eager(n)

    per_call = []
    for _ in range(replays):
        start.record()
        replay()
        stop.record()
        torch.cuda.synchronize()
        per_call.append(start.elapsed_time(stop) * 1000.0 / n)
    per_call.sort()
    us = per_call[len(per_call) // 2]
    return {"us": us, "tflops": flops / (us * 1e-6) / 1e12,
            "spread": (per_call[-1] - per_call[0]) / us, "method": method, "calls_per_replay": n}


def run_bench(args):
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend

    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    shapes = SHAPES
    dtypes = {"f16": ["f16"], "bf16": ["bf16"], "both": ["f16", "bf16"]}[args.dtype]
    if args.ours:
        ours = json.load(open(args.ours))
        seen, shapes, dtypes = set(), [], []
        for r in ours["results"]:
            if r["dtype"] not in dtypes:
                dtypes.append(r["dtype"])
            if r["shape"] in seen:
                continue
            seen.add(r["shape"])
            shapes.append((r["shape"], r["batch"], r["heads"], r["seq_q"], r["seq_kv"],
                           r["head_dim"], r["causal"], r["per_unet_step"]))
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH),
                ("default", None)]
    print("attention_torch: %s, torch %s, CUDA %s, cuDNN %s" % (
        props.name, torch.__version__, torch.version.cuda, torch.backends.cudnn.version()))
    results = []
    for dt_name in dtypes:
        dtype = torch.float16 if dt_name == "f16" else torch.bfloat16
        for (name, b, h, nq, nk, d, causal, per_step) in shapes:
            fl = flop(b, h, nq, nk, d, causal)
            set_bytes = (2 * b * nq * h * d + 2 * b * nk * h * d) * 2
            n_sets = max(2, min(64, -(-2 * l2 // set_bytes)))
            gen = torch.Generator(device="cuda")
            gen.manual_seed(1234)
            sets = []
            for _ in range(n_sets):
                q = torch.randn(b, nq, h * d, device="cuda", dtype=dtype, generator=gen)
                k = torch.randn(b, nk, h * d, device="cuda", dtype=dtype, generator=gen)
                v = torch.randn(b, nk, h * d, device="cuda", dtype=dtype, generator=gen)
                view = lambda x, n: x.view(b, n, h, d).transpose(1, 2)  # noqa: E731
                sets.append((view(q, nq), view(k, nk), view(v, nk)))
            entry = {"shape": name, "dtype": dt_name, "batch": b, "heads": h, "seq_q": nq,
                     "seq_kv": nk, "head_dim": d, "causal": causal, "per_unet_step": per_step,
                     "flop": fl, "backends": {}}
            for bname, backend in backends:
                if bname == "math" and fl > 60e9:
                    entry["backends"][bname] = {"error": "skipped: math backend on > 60 GFLOP"}
                    continue
                try:
                    entry["backends"][bname] = time_backend(torch, F, backend, sets, causal, fl,
                                                            args.replays)
                except Exception as e:  # noqa: BLE001 - unsupported shape/backend: record why
                    entry["backends"][bname] = {"error": str(e).splitlines()[0][:200]}
                torch.cuda.synchronize()
            timed = [(k, v) for k, v in entry["backends"].items() if "us" in v and k != "default"]
            if timed:
                best = min(timed, key=lambda kv: kv[1]["us"])
                entry["best"] = {"backend": best[0], "us": best[1]["us"],
                                 "tflops": best[1]["tflops"]}
            results.append(entry)
            cols = "  ".join("%s %s" % (k, ("%.1f" % v["tflops"]) if "tflops" in v else "-")
                             for k, v in entry["backends"].items())
            print("  %-24s %-4s %s" % (name, dt_name, cols), flush=True)
    out = {"tool": "attention_torch", "device": props.name, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "replays": args.replays, "results": results}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote %s" % args.out)


def compare(ours_path, torch_path):
    ours = json.load(open(ours_path))
    theirs = json.load(open(torch_path))
    by_key = {(r["shape"], r["dtype"]): r for r in theirs["results"]}
    print("ours: %s | torch %s (cuDNN %s) on %s" % (
        ours["device"], theirs.get("torch"), theirs.get("cudnn"), theirs["device"]))
    if ours["device"] != theirs["device"]:
        print("WARNING: the two files come from different devices; ratios are meaningless")
    print("%-24s %-4s | %-28s %8s | %-9s %8s | %6s" % (
        "shape", "type", "ours (chosen variant)", "TFLOP/s", "torch best", "TFLOP/s", "ratio"))
    steps = {}
    misses = []
    for r in ours["results"]:
        t = by_key.get((r["shape"], r["dtype"]))
        best = t.get("best") if t else None
        ratio = best["us"] / r["chosen"]["us"] if best else float("nan")
        print("%-24s %-4s | %-28s %8.1f | %-9s %8s | %5.2fx" % (
            r["shape"], r["dtype"], r["chosen"]["variant"][:28], r["chosen"]["tflops"],
            best["backend"] if best else "-", ("%.1f" % best["tflops"]) if best else "-", ratio))
        if r["per_unet_step"]:
            s = steps.setdefault(r["dtype"], [0.0, 0.0])
            s[0] += r["per_unet_step"] * r["chosen"]["us"]
            s[1] += r["per_unet_step"] * (best["us"] if best else float("nan"))
            if r["shape"].startswith("sd15_") and not ratio >= 1.3:
                misses.append("%s %s %.2fx" % (r["shape"], r["dtype"], ratio))
    for dt, (ours_us, torch_us) in steps.items():
        print("SD 1.5 UNet step attention (%s): ours %.1f us, torch best per shape %.1f us, "
              "%.2fx" % (dt, ours_us, torch_us, torch_us / ours_us))
    print("target 1.3x torch's best on every SD 1.5 shape: %s" % (
        "met" if not misses else "missed on " + ", ".join(misses)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="JSON file to write")
    ap.add_argument("--ours", help="attention_bench JSON: take its shapes and dtypes")
    ap.add_argument("--dtype", default="both", choices=["f16", "bf16", "both"])
    ap.add_argument("--replays", type=int, default=15)
    ap.add_argument("--compare", nargs=2, metavar=("OURS", "TORCH"))
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return 0
    if not args.out:
        ap.error("give OUT.json, or --compare OURS.json TORCH.json")
    run_bench(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
