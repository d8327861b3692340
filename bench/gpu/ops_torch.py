#!/usr/bin/env python3
"""The cases of bench/gpu/ops_bench.cpp run through PyTorch on the same GPU, for comparison.

Each op is written the way diffusers runs it in eager mode (channels-last activations for the
convolutions, F.scaled_dot_product_attention on a [B, heads, N, d] view, separate residual adds),
timed like ops_bench: warm-up, then the median over repeats of CUDA-event time per call. Prints one
JSON line per case with "impl": "torch" and the same "op"/"case"/"dtype" keys, so bench/gpu/window.sh
can put both on one row. TF32 is off, as in sd_mpi.

Usage: ops_torch.py [--dtype fp16|bf16|fp32 ...] [--quick]
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F


def dims(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


class Bench:
    def __init__(self, dtype, quick):
        self.dtype = dtype
        self.quick = quick
        self.gen = torch.Generator(device="cuda").manual_seed(12345)
        self.es = torch.tensor([], dtype=dtype).element_size()
        self.label = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}[dtype]

    def randn(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.gen, device="cuda", dtype=torch.float32).mul_(scale).to(self.dtype)

    def nhwc(self, b, h, w, c, scale=1.0):
        # An NCHW tensor stored channels-last: the same bytes as sd_mpi's NHWC.
        return self.randn(b, c, h, w, scale=scale).contiguous(memory_format=torch.channels_last)

    def time(self, op, name, flops, nbytes, fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        once = start.elapsed_time(stop)
        iters = min(200, max(3, int(2.0 / max(once, 1e-3))))
        per_call = []
        for _ in range(3 if self.quick else 7):
            start.record()
            for _ in range(iters):
                fn()
            stop.record()
            stop.synchronize()
            per_call.append(start.elapsed_time(stop) / iters)
        per_call.sort()
        ms = per_call[len(per_call) // 2]
        print(json.dumps({"bench": "cuda_ops", "impl": "torch", "op": op, "case": name, "dtype": self.label,
                          "ms": round(ms, 5), "tflops": round(flops / (ms * 1e-3) / 1e12, 3),
                          "gbps": round(nbytes / (ms * 1e-3) / 1e9, 1)}), flush=True)


def run_all(b):
    es = b.es
    with torch.no_grad():
        for m, k, n, bias, res in [(8192, 320, 320, False, False), (8192, 320, 2560, True, False),
                                   (8192, 1280, 320, True, True), (154, 768, 320, False, False),
                                   (512, 1280, 10240, True, False), (2048, 640, 640, True, True)]:
            x, w = b.randn(m, k), b.randn(n, k, scale=1 / math.sqrt(k))
            bb, r = b.randn(n, scale=0.1), b.randn(m, n)
            name = dims([m, k]) + "x" + dims([n, k]) + ("+bias" if bias else "") + ("+res" if res else "")
            fn = (lambda x=x, w=w, bb=bb, r=r, bias=bias, res=res:
                  (F.linear(x, w, bb if bias else None) + r) if res else F.linear(x, w, bb if bias else None))
            b.time("linear", name, 2.0 * m * k * n, es * (m * k + n * k + m * n * (2 if res else 1)), fn)

        for shape, k, r, stride, res in [((2, 64, 64, 4), 320, 3, 1, False), ((2, 64, 64, 320), 320, 3, 1, True),
                                         ((2, 64, 64, 320), 320, 3, 2, False), ((2, 32, 32, 640), 640, 3, 1, False),
                                         ((2, 16, 16, 1280), 1280, 3, 1, False), ((2, 8, 8, 2560), 1280, 3, 1, False),
                                         ((2, 64, 64, 640), 320, 1, 1, True), ((1, 64, 64, 4), 512, 3, 1, False),
                                         ((1, 128, 128, 512), 512, 3, 1, False),
                                         ((1, 256, 256, 256), 256, 3, 1, False),
                                         ((1, 512, 512, 128), 128, 3, 1, False), ((1, 512, 512, 128), 3, 3, 1, False)]:
            bn, h, w_, c = shape
            pad = r // 2
            x = b.nhwc(bn, h, w_, c)
            wt = b.randn(k, c, r, r, scale=1 / math.sqrt(c * r * r)).contiguous(memory_format=torch.channels_last)
            bias = b.randn(k, scale=0.1)
            ho, wo = (h + 2 * pad - r) // stride + 1, (w_ + 2 * pad - r) // stride + 1
            rr = b.nhwc(bn, ho, wo, k)
            name = f"{r}x{r}" + ("/2 " if stride > 1 else " ") + dims(shape) + "->" + str(k) + ("+res" if res else "")
            fn = (lambda x=x, wt=wt, bias=bias, rr=rr, stride=stride, pad=pad, res=res:
                  (F.conv2d(x, wt, bias, stride, pad) + rr) if res else F.conv2d(x, wt, bias, stride, pad))
            b.time("conv2d", name, 2.0 * bn * ho * wo * k * c * r * r,
                   es * (bn * h * w_ * c + k * c * r * r + bn * ho * wo * k * (2 if res else 1)), fn)

        for shape, silu in [((2, 64, 64, 320), True), ((2, 16, 16, 2560), True), ((2, 64, 64, 320), False),
                            ((1, 512, 512, 128), True), ((1, 128, 128, 512), True)]:
            bn, h, w_, c = shape
            x = b.nhwc(bn, h, w_, c)
            g, be = b.randn(c, scale=0.1), b.randn(c, scale=0.1)
            fn = (lambda x=x, g=g, be=be, silu=silu:
                  F.silu(F.group_norm(x, 32, g, be, 1e-5)) if silu else F.group_norm(x, 32, g, be, 1e-5))
            b.time("group_norm_silu" if silu else "group_norm", dims(shape) + " g32", 0.0,
                   es * 2.0 * bn * h * w_ * c, fn)

        for shape in [(2, 4096, 320), (2, 1024, 640), (2, 77, 768)]:
            x = b.randn(*shape)
            g, be = b.randn(shape[-1], scale=0.1), b.randn(shape[-1], scale=0.1)
            b.time("layer_norm", dims(shape), 0.0, es * 2.0 * math.prod(shape),
                   lambda x=x, g=g, be=be: F.layer_norm(x, (x.shape[-1],), g, be, 1e-5))

        for bn, nq, nk, heads, d in [(2, 4096, 4096, 8, 40), (2, 4096, 77, 8, 40), (2, 1024, 1024, 8, 80),
                                     (2, 256, 256, 8, 160), (2, 64, 64, 8, 160), (1, 4096, 4096, 1, 512)]:
            c = heads * d
            q, k, v = b.randn(bn, nq, c), b.randn(bn, nk, c), b.randn(bn, nk, c)

            def attn(q=q, k=k, v=v, bn=bn, nq=nq, nk=nk, heads=heads, d=d):
                qh = q.view(bn, nq, heads, d).transpose(1, 2)
                kh = k.view(bn, nk, heads, d).transpose(1, 2)
                vh = v.view(bn, nk, heads, d).transpose(1, 2)
                o = F.scaled_dot_product_attention(qh, kh, vh)
                return o.transpose(1, 2).reshape(bn, nq, heads * d)

            b.time("attention", f"b{bn} q{nq} kv{nk} h{heads} d{d}", 4.0 * bn * heads * nq * nk * d,
                   es * (2.0 * bn * nq * c + 2.0 * bn * nk * c), attn)

        x = b.randn(2, 4096, 2560)

        def geglu(x=x):
            a, g = x.chunk(2, dim=-1)
            return a * F.gelu(g)

        b.time("geglu", dims([2, 4096, 2560]), 0.0, es * 1.5 * 2 * 4096 * 2560, geglu)
        x, y = b.nhwc(2, 64, 64, 320), b.nhwc(2, 64, 64, 320)
        t = b.randn(2, 320)
        n = 2 * 64 * 64 * 320
        b.time("add", dims([2, 64, 64, 320]), 0.0, es * 3.0 * n, lambda: x + y)
        b.time("add_batch_channel", dims([2, 64, 64, 320]), 0.0, es * 2.0 * n, lambda: x + t[:, :, None, None])
        b.time("silu", dims([2, 64, 64, 320]), 0.0, es * 2.0 * n, lambda: F.silu(x))
        x = b.nhwc(2, 32, 32, 640)
        b.time("upsample_nearest", dims([2, 32, 32, 640]) + "->64x64", 0.0, es * 5.0 * 2 * 32 * 32 * 640,
               lambda: F.interpolate(x, scale_factor=2.0, mode="nearest"))
        x, y = b.nhwc(2, 64, 64, 640), b.nhwc(2, 64, 64, 320)
        b.time("concat_channels", dims([2, 64, 64, 640]) + "++320", 0.0, es * 2.0 * 2 * 64 * 64 * 960,
               lambda: torch.cat([x, y], dim=1))
        eps = b.nhwc(2, 64, 64, 4)

        def cfg(eps=eps):
            u, c = eps.chunk(2)
            return u + 7.5 * (c - u)

        b.time("guidance_combine", dims([2, 64, 64, 4]), 0.0, es * 1.5 * 2 * 64 * 64 * 4, cfg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", action="append", choices=["fp16", "bf16", "fp32"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("ops_torch: no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    print(f"ops_torch: torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
    types = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    for name in args.dtype or ["fp16"]:
        run_all(Bench(types[name], args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
