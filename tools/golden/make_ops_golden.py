#!/usr/bin/env python3
"""Golden data for the CPU backend's ops: PyTorch float32 (CPU) outputs on small random inputs.

Writes tests/data/golden/ops/ops.safetensors (inputs and outputs, float32) and ops.json (the
parameters of each case). Activations are stored channels-last (NHWC, [B, N, C]) as the backend
holds them; convolution weights stay in PyTorch's OIHW layout so the test also exercises
upload_weight's permutation. tests/unit/cpu_backend_test.cpp (GoldenOps.*) reads both.

Run: /work/golden-venv/bin/python tools/golden/make_ops_golden.py [out_dir]
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)
torch.set_num_threads(1)

out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "golden", "ops")
os.makedirs(out_dir, exist_ok=True)

tensors = {}
params = {}


def put(name, t):
    tensors[name] = t.detach().to(torch.float32).contiguous()


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous()


# ---- group norm (+SiLU): offset means so the variance needs accurate statistics ---------------
for case, (B, C, H, W, G, eps, silu) in {
    "gn_silu": (2, 64, 7, 9, 32, 1e-5, True),
    "gn_plain": (3, 96, 5, 3, 32, 1e-6, False),
    "gn_vae": (1, 128, 6, 6, 32, 1e-6, True),
}.items():
    x = torch.randn(B, C, H, W) * 2.0 + torch.randn(1, C, 1, 1) * 3.0
    gamma, beta = torch.randn(C) * 0.5 + 1.0, torch.randn(C) * 0.2
    y = F.group_norm(x, G, gamma, beta, eps)
    if silu:
        y = F.silu(y)
    put(case + ".x", nhwc(x)); put(case + ".gamma", gamma); put(case + ".beta", beta); put(case + ".y", nhwc(y))
    params[case] = {"groups": G, "eps": eps, "silu": silu}

# ---- layer norm -------------------------------------------------------------------------------------
x = torch.randn(2, 13, 80) * 1.5 + 0.7
gamma, beta = torch.randn(80) * 0.5 + 1.0, torch.randn(80) * 0.2
put("ln.x", x); put("ln.gamma", gamma); put("ln.beta", beta)
put("ln.y", F.layer_norm(x, (80,), gamma, beta, 1e-5))
params["ln"] = {"eps": 1e-5}

# ---- activations ------------------------------------------------------------------------------------
x = torch.cat([torch.randn(4000) * 3.0, torch.linspace(-12.0, 12.0, 97)])
put("act.x", x)
put("act.silu", F.silu(x))
put("act.gelu", F.gelu(x))
put("act.quick_gelu", x * torch.sigmoid(1.702 * x))  # transformers' QuickGELUActivation

x = torch.randn(2, 5, 48) * 2.0
a, g = x.chunk(2, dim=-1)
put("geglu.x", x); put("geglu.y", a * F.gelu(g))  # diffusers' GEGLU: hidden * gelu(gate)

# ---- convolutions: 3x3 stride 2 pad 1 (downsampler), 3x3 pad 1 + residual, 1x1 ----------------------
x = torch.randn(2, 5, 11, 9)
w, b = torch.randn(7, 5, 3, 3) * 0.3, torch.randn(7)
put("conv_s2.x", nhwc(x)); put("conv_s2.w", w); put("conv_s2.b", b)
put("conv_s2.y", nhwc(F.conv2d(x, w, b, stride=2, padding=1)))
params["conv_s2"] = {"stride": 2, "pad": 1}

x = torch.randn(1, 6, 7, 10)
w, b = torch.randn(9, 6, 3, 3) * 0.3, torch.randn(9)
r = torch.randn(1, 9, 7, 10)
put("conv_res.x", nhwc(x)); put("conv_res.w", w); put("conv_res.b", b); put("conv_res.r", nhwc(r))
put("conv_res.y", nhwc(F.conv2d(x, w, b, stride=1, padding=1) + r))
params["conv_res"] = {"stride": 1, "pad": 1}

x = torch.randn(2, 12, 4, 5)
w, b = torch.randn(8, 12, 1, 1) * 0.3, torch.randn(8)
put("conv_1x1.x", nhwc(x)); put("conv_1x1.w", w); put("conv_1x1.b", b)
put("conv_1x1.y", nhwc(F.conv2d(x, w, b)))
params["conv_1x1"] = {"stride": 1, "pad": 0}

# ---- linear ---------------------------------------------------------------------------------------------
x = torch.randn(2, 7, 24)
w, b, r = torch.randn(10, 24) * 0.3, torch.randn(10), torch.randn(2, 7, 10)
put("linear.x", x); put("linear.w", w); put("linear.b", b); put("linear.r", r)
put("linear.y", F.linear(x, w, b) + r)

# ---- attention: causal self-attention, and cross-attention with Nq != Nk ------------------------------
def sdpa(q, k, v, heads, causal):
    B, Nq, C = q.shape
    Nk, d = k.shape[1], C // heads
    split = lambda t, n: t.view(B, n, heads, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(split(q, Nq), split(k, Nk), split(v, Nk), is_causal=causal)
    return o.transpose(1, 2).reshape(B, Nq, C)


q, k, v = torch.randn(2, 9, 48), torch.randn(2, 9, 48), torch.randn(2, 9, 48)
put("attn_causal.q", q); put("attn_causal.k", k); put("attn_causal.v", v)
put("attn_causal.y", sdpa(q, k, v, 3, True))
params["attn_causal"] = {"heads": 3, "causal": True}

q, k, v = torch.randn(2, 10, 40) * 2.0, torch.randn(2, 6, 40), torch.randn(2, 6, 40)
put("attn_cross.q", q); put("attn_cross.k", k); put("attn_cross.v", v)
put("attn_cross.y", sdpa(q, k, v, 2, False))
params["attn_cross"] = {"heads": 2, "causal": False}

# ---- nearest upsampling with integer and non-integer ratios -------------------------------------------
x = torch.randn(1, 3, 5, 7)
put("up.x", nhwc(x))
for name, size in {"up_2x": (10, 14), "up_frac": (8, 12), "up_odd": (13, 10), "up_down": (3, 4)}.items():
    put(name + ".y", nhwc(F.interpolate(x, size=size, mode="nearest")))
    params[name] = {"out_h": size[0], "out_w": size[1]}

# ---- elementwise: must be bit-exact -----------------------------------------------------------------------
a = torch.randn(1003) * 5.0
b = torch.randn(1003) * 5.0
b[b.abs() < 1e-3] = 0.5
s = 0.18215
put("ew.a", a); put("ew.b", b)
put("ew.add", a + b); put("ew.sub", a - b); put("ew.mul", a * b); put("ew.div", a / b)
put("ew.add_s", a + s); put("ew.sub_s", a - s); put("ew.rsub_s", s - a)
put("ew.mul_s", a * s); put("ew.div_s", a / s)
put("ew.sdiv", torch.div(torch.tensor(s), a))  # true division s / a
put("ew.py_rdiv", s / a)                        # Python's s / a: reciprocal(a) * s
put("ew.clamp", (a / 2 + 0.5).clamp(0, 1))
params["ew"] = {"scalar": s}

x = torch.randn(2, 3, 4, 5)
t = torch.randn(2, 3)
put("abc.x", nhwc(x)); put("abc.t", t); put("abc.y", nhwc(x + t[:, :, None, None]))

save_file(tensors, os.path.join(out_dir, "ops.safetensors"),
          metadata={"generator": "tools/golden/make_ops_golden.py"})  # one key: byte-stable
with open(os.path.join(out_dir, "ops.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": params}, f, indent=1, sort_keys=True)
print("wrote", len(tensors), "tensors to", out_dir)
