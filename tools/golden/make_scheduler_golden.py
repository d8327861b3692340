#!/usr/bin/env python3
"""Golden data for the samplers (src/sched/): diffusers' schedulers as StableDiffusionPipeline
drives them, on the CPU in float32.

Writes tests/data/golden/scheduler/:
  configs.json           the scheduler_config.json contents used (by name), written out literally
  tables.json            per (config, sampler, schedule): the step counts tried, and for each the
                         number of UNet calls and init_noise_sigma
  tables.safetensors     <config>/<sampler>[_karras]/<steps>/timesteps (float32; what the UNet
                         gets), .../sigmas (float32, Euler-type and DPM++ only), and
                         ac/<config>/<class> (alphas_cumprod, num_train_timesteps floats)
  trajectories.json      per case: sampler, schedule, config, steps, eta, item seeds, fake-model
                         seed, timesteps, sigmas, init_noise_sigma
  trajectories.safetensors
                         <case>/latents  [calls+1, 2, 8, 8, 4]  initial latents (after
                                          init_noise_sigma), then every prev_sample, NHWC
                         <case>/model_input [2, 2, 8, 8, 4]  scale_model_input at the first and
                                          the last call (Euler-type only)
                         <case>/eps0     [2, 8, 8, 4]  the first fake model output
                         cfg/uncond, cfg/cond, cfg/out  one guidance combine (7.5)
  reference_math.safetensors
                         sqrt_in/sqrt_out, log_in/log_out, exp_in/exp_out: every float32 input
                         (deduplicated) that torch.sqrt / ** 0.5 / torch.log / torch.exp saw while
                         the tables and trajectories above were made, and torch's result. These
                         ops go through MKL's vector math in the wheel, which is not correctly
                         rounded and differs between CPUs (see include/sdmpi/scheduler.h); the
                         tests plug these values in to check everything else bit for bit.

How each scheduler is built (diffusers' from_config rule, as a user swapping the pipeline's
scheduler does): the config's own class is loaded from the json dict, then
`Target.from_config(base.config, **overrides)`, with use_karras_sigmas=True for "karras" and
algorithm_type="dpmsolver++", solver_order=2 for dpm++2m. Keys the json does not state get the
target class's defaults (so Euler / DPM++ from the SD 1.5 json use linspace spacing).

Trajectories follow the pipeline loop: latents = randn_tensor((2, 4, 8, 8), generator=[g0, g1])
* init_noise_sigma (one generator per item); for each t in scheduler.timesteps: x_in =
scale_model_input(latents, t); eps = torch.randn((2, 4, 8, 8), generator=fake_model_generator)
(one draw of the whole batch from a separate generator: the fake UNet); latents = step(eps, t,
latents, eta=..., generator=[g0, g1]) with eta / generator passed when step accepts them, as
prepare_extra_step_kwargs does. NCHW tensors are stored permuted to NHWC (values unchanged).

Run with the pinned environment (tools/golden/requirements.txt):
  python tools/golden/make_scheduler_golden.py [--out tests/data/golden/scheduler]
"""
import argparse
import inspect
import json
import os

import numpy as np
import torch
import diffusers
from diffusers.utils.torch_utils import randn_tensor
from safetensors.numpy import save_file

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, key for key.
SD15 = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

CONFIGS = {
    "sd15": SD15,
    "sd15_leading": {**SD15, "timestep_spacing": "leading"},
    "sd15_trailing": {**SD15, "timestep_spacing": "trailing"},
    "sd15_linspace": {**SD15, "timestep_spacing": "linspace"},
    "sd15_vpred": {**SD15, "prediction_type": "v_prediction"},
    # DDIM's own defaults: linear betas, clip_sample and set_alpha_to_one true, steps_offset 0.
    "ddim_defaults": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1"},
    "zero_snr": {**SD15, "_class_name": "DDIMScheduler", "rescale_betas_zero_snr": True,
                 "timestep_spacing": "trailing"},
    "cosine": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1",
               "beta_schedule": "squaredcos_cap_v2", "clip_sample": False},
    "dpm_sigma_min": {**SD15, "_class_name": "DPMSolverMultistepScheduler",
                      "final_sigmas_type": "sigma_min"},
    "dpm_heun": {**SD15, "_class_name": "DPMSolverMultistepScheduler", "solver_type": "heun"},
    # trained_betas wins over beta_schedule; Python floats, cast to float32 by torch.tensor.
    "trained": {**SD15, "_class_name": "DDIMScheduler", "beta_schedule": "linear",
                "trained_betas": [round(0.0001 + 0.0199 * (i / 999) ** 1.5, 9) for i in range(1000)]},
}

TARGETS = {
    "pndm": diffusers.PNDMScheduler,
    "ddim": diffusers.DDIMScheduler,
    "euler": diffusers.EulerDiscreteScheduler,
    "euler_a": diffusers.EulerAncestralDiscreteScheduler,
    "dpm++2m": diffusers.DPMSolverMultistepScheduler,
    "lcm": diffusers.LCMScheduler,
}
HAS_SIGMAS = {"euler", "euler_a", "dpm++2m"}

STEPS_FULL = list(range(1, 26)) + [50, 51, 61, 100]
STEPS_SD15 = STEPS_FULL + [999, 1000]
STEPS_SHORT = list(range(1, 13)) + [50, 61]

TABLES = (
    [("sd15", s, k, STEPS_SD15) for s, k in [("pndm", False), ("ddim", False), ("euler", False),
                                             ("euler", True), ("euler_a", False), ("dpm++2m", False),
                                             ("dpm++2m", True), ("lcm", False)]]
    + [("sd15_leading", s, k, STEPS_FULL) for s, k in [("euler", False), ("euler", True),
                                                       ("euler_a", False), ("dpm++2m", False),
                                                       ("dpm++2m", True)]]
    + [("sd15_trailing", s, k, STEPS_FULL) for s, k in [("pndm", False), ("ddim", False),
                                                        ("euler", False), ("euler", True),
                                                        ("euler_a", False), ("dpm++2m", False),
                                                        ("dpm++2m", True)]]
    + [("sd15_linspace", s, False, STEPS_FULL) for s in ["pndm", "ddim"]]
    + [("zero_snr", s, False, STEPS_SHORT) for s in ["ddim", "euler", "dpm++2m"]]
    + [("cosine", "ddim", False, STEPS_SHORT), ("cosine", "dpm++2m", True, STEPS_SHORT),
       ("ddim_defaults", "ddim", False, STEPS_SHORT), ("dpm_sigma_min", "dpm++2m", False, STEPS_SHORT),
       ("trained", "ddim", False, [10]), ("trained", "euler", False, [10])]
)

# (case name, sampler, karras, config, steps, eta)
TRAJECTORIES = [
    ("pndm_sd15_10", "pndm", False, "sd15", 10, 0.0),
    ("pndm_sd15_4", "pndm", False, "sd15", 4, 0.0),
    ("pndm_vpred_5", "pndm", False, "sd15_vpred", 5, 0.0),
    ("ddim_sd15_8", "ddim", False, "sd15", 8, 0.0),
    ("ddim_eta_sd15_6", "ddim", False, "sd15", 6, 0.6),
    ("ddim_defaults_5", "ddim", False, "ddim_defaults", 5, 0.0),
    ("ddim_trailing_6", "ddim", False, "sd15_trailing", 6, 0.0),
    ("ddim_linspace_6", "ddim", False, "sd15_linspace", 6, 0.0),
    ("ddim_vpred_5", "ddim", False, "sd15_vpred", 5, 0.0),
    ("ddim_zero_snr_5", "ddim", False, "zero_snr", 5, 0.0),
    ("ddim_trained_5", "ddim", False, "trained", 5, 0.0),
    ("euler_sd15_8", "euler", False, "sd15", 8, 0.0),
    ("euler_leading_6", "euler", False, "sd15_leading", 6, 0.0),
    ("euler_trailing_6", "euler", False, "sd15_trailing", 6, 0.0),
    ("euler_karras_8", "euler", True, "sd15", 8, 0.0),
    ("euler_vpred_5", "euler", False, "sd15_vpred", 5, 0.0),
    ("euler_a_sd15_8", "euler_a", False, "sd15", 8, 0.0),
    ("euler_a_leading_5", "euler_a", False, "sd15_leading", 5, 0.0),
    ("dpm_sd15_8", "dpm++2m", False, "sd15", 8, 0.0),
    ("dpm_sd15_16", "dpm++2m", False, "sd15", 16, 0.0),
    ("dpm_karras_8", "dpm++2m", True, "sd15", 8, 0.0),
    ("dpm_karras_16", "dpm++2m", True, "sd15", 16, 0.0),
    ("dpm_leading_6", "dpm++2m", False, "sd15_leading", 6, 0.0),
    ("dpm_trailing_6", "dpm++2m", False, "sd15_trailing", 6, 0.0),
    ("dpm_vpred_6", "dpm++2m", False, "sd15_vpred", 6, 0.0),
    ("dpm_sigma_min_6", "dpm++2m", False, "dpm_sigma_min", 6, 0.0),
    ("dpm_heun_6", "dpm++2m", False, "dpm_heun", 6, 0.0),
    ("lcm_sd15_4", "lcm", False, "sd15", 4, 0.0),
    ("lcm_sd15_1", "lcm", False, "sd15", 1, 0.0),
]

ITEM_SEEDS = [1234, 2**32 + 99]
FAKE_MODEL_SEED = 777


class ReferenceMath:
    """Records every float32 element torch.sqrt / ** 0.5 / torch.log / torch.exp maps."""

    def __init__(self):
        self.pairs = {"sqrt": [], "log": [], "exp": []}
        self.saved = {}

    def _record(self, kind, x, y):
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and isinstance(y, torch.Tensor):
            self.pairs[kind].append((x.detach().reshape(-1).numpy().copy(), y.detach().reshape(-1).numpy().copy()))

    def install(self):
        rec = self
        orig = {"sqrt": torch.sqrt, "log": torch.log, "exp": torch.exp, "pow": torch.Tensor.__pow__,
                "tsqrt": torch.Tensor.sqrt}
        self.saved = orig

        def wrap(kind, fn):
            def wrapped(x, *a, **k):
                y = fn(x, *a, **k)
                rec._record(kind, x, y)
                return y
            return wrapped

        def pow_(x, e):
            y = orig["pow"](x, e)
            if isinstance(e, float) and e == 0.5:
                rec._record("sqrt", x, y)
            return y

        torch.sqrt, torch.log, torch.exp = wrap("sqrt", orig["sqrt"]), wrap("log", orig["log"]), wrap("exp", orig["exp"])
        torch.Tensor.sqrt = wrap("sqrt", orig["tsqrt"])
        torch.Tensor.__pow__ = pow_

    def uninstall(self):
        o = self.saved
        torch.sqrt, torch.log, torch.exp = o["sqrt"], o["log"], o["exp"]
        torch.Tensor.__pow__, torch.Tensor.sqrt = o["pow"], o["tsqrt"]

    def tensors(self):
        out = {}
        for kind, pairs in self.pairs.items():
            xs = np.concatenate([p[0] for p in pairs]) if pairs else np.zeros(0, np.float32)
            ys = np.concatenate([p[1] for p in pairs]) if pairs else np.zeros(0, np.float32)
            keys, first = np.unique(xs.view(np.uint32), return_index=True)
            # one input, one output: the op is a function of its input
            lookup = dict(zip(keys.tolist(), ys[first].view(np.uint32).tolist()))
            assert all(lookup[k] == v for k, v in zip(xs.view(np.uint32).tolist(), ys.view(np.uint32).tolist()))
            out[kind + "_in"] = xs[first].copy()
            out[kind + "_out"] = ys[first].copy()
        return out


def build(sampler, karras, config_name):
    cfg = dict(CONFIGS[config_name])
    base = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    overrides = {}
    if karras:
        overrides["use_karras_sigmas"] = True
    if sampler == "dpm++2m":
        overrides.update(algorithm_type="dpmsolver++", solver_order=2)
    return TARGETS[sampler].from_config(base.config, **overrides)


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "data", "golden", "scheduler"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)

    math = ReferenceMath()
    math.install()

    with open(os.path.join(args.out, "configs.json"), "w") as f:
        f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in CONFIGS.items()) + "\n}\n")

    # ---- tables ----------------------------------------------------------------------------------
    tensors, tables = {}, []
    for config_name, sampler, karras, steps_list in TABLES:
        group = {"sampler": sampler, "schedule": "karras" if karras else "default", "config": config_name,
                 "prefix": f"{config_name}/{sampler}{'_karras' if karras else ''}", "steps": [],
                 "num_calls": [], "init_noise_sigma": []}
        for steps in steps_list:
            if sampler == "lcm" and steps > 50:
                continue
            s = build(sampler, karras, config_name)
            s.set_timesteps(steps)
            name = f"{group['prefix']}/{steps}"
            tensors[name + "/timesteps"] = s.timesteps.numpy().astype(np.float32)
            if sampler in HAS_SIGMAS:
                tensors[name + "/sigmas"] = s.sigmas.numpy().astype(np.float32)
            group["alphas_cumprod"] = f"ac/{config_name}/{type(s).__name__}"
            tensors.setdefault(group["alphas_cumprod"], s.alphas_cumprod.numpy().astype(np.float32))
            group["steps"].append(steps)
            group["num_calls"].append(len(s.timesteps))
            group["init_noise_sigma"].append(float(s.init_noise_sigma))
        tables.append(group)
    save(tensors, os.path.join(args.out, "tables.safetensors"))
    with open(os.path.join(args.out, "tables.json"), "w") as f:
        f.write('{"tables": [\n' + ",\n".join(json.dumps(t) for t in tables) + "\n]}\n")

    # ---- trajectories --------------------------------------------------------------------------------
    tensors, cases = {}, []
    for name, sampler, karras, config_name, steps, eta in TRAJECTORIES:
        s = build(sampler, karras, config_name)
        s.set_timesteps(steps, device="cpu")
        gens = [torch.Generator("cpu").manual_seed(seed) for seed in ITEM_SEEDS]
        latents = randn_tensor((2, 4, 8, 8), generator=gens, device=torch.device("cpu"), dtype=torch.float32)
        latents = latents * s.init_noise_sigma
        fake_model = torch.Generator("cpu").manual_seed(FAKE_MODEL_SEED)
        accepted = set(inspect.signature(s.step).parameters.keys())
        extra = {}
        if "eta" in accepted:
            extra["eta"] = eta
        if "generator" in accepted:
            extra["generator"] = gens

        history, inputs = [nhwc(latents)], []
        for i, t in enumerate(s.timesteps):
            x_in = s.scale_model_input(latents, t)
            inputs.append(nhwc(x_in))
            eps = torch.randn((2, 4, 8, 8), generator=fake_model)
            if i == 0:
                tensors[name + "/eps0"] = nhwc(eps)
            latents = s.step(eps, t, latents, **extra, return_dict=False)[0]
            history.append(nhwc(latents))
        tensors[name + "/latents"] = np.stack(history)
        if sampler in ("euler", "euler_a"):
            tensors[name + "/model_input"] = np.stack([inputs[0], inputs[-1]])
        cases.append({
            "name": name, "sampler": sampler, "schedule": "karras" if karras else "default",
            "config": config_name, "steps": steps, "eta": eta, "item_seeds": ITEM_SEEDS,
            "fake_model_seed": FAKE_MODEL_SEED, "num_calls": len(s.timesteps),
            "timesteps": [float(v) for v in s.timesteps.to(torch.float32)],
            "sigmas": [float(v) for v in s.sigmas] if sampler in HAS_SIGMAS else [],
            "init_noise_sigma": float(s.init_noise_sigma),
        })

    g = torch.Generator("cpu").manual_seed(4242)
    uncond, cond = torch.randn((2, 4, 8, 8), generator=g), torch.randn((2, 4, 8, 8), generator=g)
    guidance = 7.5
    out = uncond + guidance * (cond - uncond)
    tensors["cfg/uncond"], tensors["cfg/cond"], tensors["cfg/out"] = nhwc(uncond), nhwc(cond), nhwc(out)

    math.uninstall()
    save(tensors, os.path.join(args.out, "trajectories.safetensors"))
    save(math.tensors(), os.path.join(args.out, "reference_math.safetensors"))
    meta = {"torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cfg_guidance": guidance,
            "cases": cases}
    with open(os.path.join(args.out, "trajectories.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


def save(tensors, path):
    save_file(tensors, path)
    os.chmod(path, 0o644)


if __name__ == "__main__":
    main()
