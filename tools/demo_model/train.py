"""Trains sd_mpi's built-in demo model (`--model demo`) on the synthetic shapes of dataset.py.

An SD 1.x pipeline at toy scale, built from diffusers' and transformers' own classes so diffusers
loads the result as it loads Stable Diffusion 1.5:

    CLIPTokenizer (the real CLIP BPE vocabulary) -> CLIPTextModel (hidden 32) -> UNet2DConditionModel
    (16x16x4 latents) -> AutoencoderKL (4x: 64x64 RGB)

Two stages on the CPU, each a fixed number of steps (so a rerun gives the same weights):
  1. the VAE is set to an exact codec (constructed_vae_; its decoder fine-tuning is off);
  2. the UNet and the text encoder (at a tenth of the learning rate) learn epsilon prediction on the frozen VAE's latents (DDPM,
     SD's scaled-linear betas, offset noise, min-SNR-5 loss weights, 10% empty captions for guidance), with an
     EMA of their weights, which is what gets saved.
The result is written in fp16 safetensors in the diffusers layout (OUT_DIR), with the losses in
OUT_DIR/../training_log.json. Run it with tools/demo_model/train.sh; RECIPE is the whole recipe.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataset  # noqa: E402

RECIPE = {
    "seed": 1234,
    # One thread: on a busy 2-core machine two PyTorch threads spin-wait on each other and ran
    # these small layers 8x slower than one (measured).
    "threads": 1,
    "vae": {  # 4x: 64x64 RGB <-> 16x16x4 latents
        "block_out_channels": [16, 32, 32],
        "layers_per_block": 1,
        "norm_num_groups": 1,
        "latent_channels": 4,
        "decoder_steps": 0,  # 300 at lr 1e-4 stayed worse than the construction (0.05 vs 0.04) and took 16 min
        "batch": 16,
        "lr": 1e-4,
    },
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
    "unet": {
        "block_out_channels": [32, 48, 64],
        # Cross-attention at 8x8 and 4x4 (SDXL's pattern), not at 16x16 (2.3x the step time). With
        # it at 8x8 only, the UNet drew positions at chance (7 of 48 held-out captions): at 4x4
        # every position the prompt names is one of a few cells (README, probes B to D).
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "attention_head_dim": 4,
        # 2400 (probe H, session 7): drawn with the model's defaults (40 Euler a steps, guidance
        # 2.5), 118 of 144 selection captions right against 108 after 2000 steps (probe D); at
        # 3200 (probe C, 20 PNDM steps) the shapes' colour had fallen.
        "steps": 2400,
        "batch": 32,
        "lr": 1e-3,
        "warmup": 50,
        # The EMA's decay is (1 + step) / (10 + step), capped here; the cap is never reached in
        # 2000 steps (0.9955 at the end), so it changes nothing (probe F, cap 0.999: same weights).
        "ema": 0.998,
        "uncond_fraction": 0.1,
        "min_snr_gamma": 5.0,
        # SD's betas leave 6.8% of the picture in the noisiest training input, and here a picture's
        # mean is its background colour: without offset noise the UNet read the background from
        # that leak, which pure-noise sampling lacks (run 1: 6 of 24 backgrounds right, washed out).
        "offset_noise": 0.3,
        # The text encoder learns at a tenth of the UNet's rate. At the full rate (run 2) background
        # and colour took over its layer-normed output and "left"/"right" moved it 0.49 (of 5.7,
        # 1.84 at initialisation); frozen (0) the UNet could not read even the colours in 2000 steps.
        "text_encoder_lr_scale": 0.1,
        # Layout (where the shapes go, how many) is decided in the noisiest steps, where an epsilon
        # error is sqrt(snr) times the x0 error it stands for: min-SNR weights an x0 error there
        # by snr (0.005 at t = 999), a thousandth of the weight of a clean step's, and the UNet
        # never learned to read the position word (run 3). So an x0 error weighs at least
        # x0_weight_floor at every step.
        "x0_weight_floor": 0.0,
        # Draw t in proportion to its loss weight (and weigh every sample the same): the same
        # objective with less noise than a few heavy samples per batch.
        "timesteps_by_weight": False,
        # Linear heads on the text encoder's output (mean over the 77 positions) learn every
        # attribute of the caption with this weight, so that no word's meaning fades from what the
        # UNet reads (the heads are not saved). With them position came early (probe C: 31 of 48
        # right after 800 steps, against 8 without them in probe B).
        "attribute_loss_weight": 0.1,
    },
}


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [-1, 1]."""
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def build_vae(r):
    from diffusers import AutoencoderKL

    n = len(r["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
        block_out_channels=r["block_out_channels"], layers_per_block=r["layers_per_block"],
        latent_channels=r["latent_channels"], norm_num_groups=r["norm_num_groups"],
        sample_size=dataset.SIZE, mid_block_add_attention=False)  # no attention: an exact codec is built


def build_text_encoder(r):
    from transformers import CLIPTextConfig, CLIPTextModel

    # The ids and quirks of SD 1.5's text_encoder/config.json (bos 0, eos 2, pad 1, quick_gelu).
    cfg = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=r["hidden_size"],
                         layer_norm_eps=1e-5, **r)
    return CLIPTextModel(cfg)


def build_unet(r, cross_dim: int, latent_side: int, latent_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=latent_side, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=r["down_block_types"], up_block_types=r["up_block_types"],
        block_out_channels=r["block_out_channels"], layers_per_block=r["layers_per_block"],
        norm_num_groups=r["norm_num_groups"], attention_head_dim=r["attention_head_dim"],
        cross_attention_dim=cross_dim)


VAE_BIAS = 20.0  # the constant channel pair of constructed_vae_()


@torch.no_grad()
def constructed_vae_(vae) -> None:
    """Sets the VAE to an exact codec: latents = 4x4 mean RGB (channel 3 zero), decoder = nearest
    upsampling. A VAE trained from random weights learned nothing useful in minutes on these flat
    pictures (GroupNorm erases a flat map's level), so the VAE starts here and its decoder is
    then fine-tuned to draw sharp edges.

    Every conv is an identity on the channels it shares, every resnet's second conv is zero (so
    the block is an identity), downsamplers average 2x2. Around the GroupNorms that end encoder
    and decoder, colours travel as +c/-c channel pairs next to a +K/-K pair: the norm's mean is
    then 0 and its std K*sqrt(2/C) (within 0.4% whatever the colours), and since
    silu(a) - silu(-a) = a the output conv reads c back exactly."""
    for m in vae.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight
            w.zero_()
            m.bias.zero_()
            k = w.shape[-1] // 2
            for c in range(min(w.shape[0], w.shape[1])):
                w[c, c, k, k] = 1.0
    for name, m in vae.named_modules():
        if name.endswith("conv2"):
            m.weight.zero_()
            m.bias.zero_()
        if name.endswith("downsamplers.0.conv"):  # pad (0,1,0,1), 3x3 stride 2: taps 0,1 = the 2x2 cell
            m.weight.zero_()
            for c in range(m.weight.shape[0]):
                m.weight[c, c, 0:2, 0:2] = 0.25
    for conv in (vae.encoder.conv_in, vae.decoder.conv_in):
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c, 1, 1] = 1.0
            conv.weight[3 + c, c, 1, 1] = -1.0
        conv.bias[6], conv.bias[7] = VAE_BIAS, -VAE_BIAS
    for conv in (vae.encoder.conv_out, vae.decoder.conv_out):
        s = VAE_BIAS * math.sqrt(2.0 / conv.weight.shape[1])
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c, 1, 1] = s
            conv.weight[c, 3 + c, 1, 1] = -s
    latent = vae.config.latent_channels
    vae.encoder.conv_out.bias[latent:] = -20.0  # log-variance: a near-deterministic posterior


def vae_loss(vae, x):
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    rec = vae.decode(z).sample
    return F.l1_loss(rec, x) + F.mse_loss(rec, x)


def train_vae(vae, rng, r, history):
    """Fine-tunes the decoder of the constructed VAE; keeps it only if it beats the construction
    on pictures it did not train on."""
    constructed_vae_(vae)
    check = to_tensor(dataset.make_batch(np.random.default_rng(99), 64)[1])
    with torch.no_grad():
        before = vae_loss(vae, check).item()
    saved = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=r["lr"], weight_decay=0.0)
    t0 = time.time()
    history.append({"stage": "vae", "step": 0, "rec_loss": round(before, 5), "seconds": 0.0})
    log(f"vae: constructed codec, reconstruction loss {before:.4f}")
    for step in range(1, r["decoder_steps"] + 1):
        loss = vae_loss(vae, to_tensor(dataset.make_batch(rng, r["batch"])[1]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0:
            history.append({"stage": "vae", "step": step, "rec_loss": round(loss.item(), 5),
                            "seconds": round(time.time() - t0, 1)})
            log(f"vae decoder step {step}/{r['decoder_steps']} rec {loss.item():.4f} ({time.time() - t0:.0f}s)")
    with torch.no_grad():
        after = vae_loss(vae, check).item()
    keep = after < before
    if not keep:
        vae.decoder.load_state_dict(saved)
    log(f"vae: held-back loss constructed {before:.4f}, fine-tuned {after:.4f}: keeping the "
        f"{'fine-tuned' if keep else 'constructed'} decoder")
    return {"constructed": before, "fine_tuned": after, "kept": "fine-tuned" if keep else "constructed"}


def save_pipeline(out_dir: str, base: str, vae, te, tokenizer, unet) -> None:
    """Writes the pipeline in the diffusers layout, weights in fp16, with SD 1.5's scheduler config
    (as the base folder has it). The modules given stay as they are (fp16 copies are saved)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler.from_pretrained(os.path.join(base, "scheduler"))
    vae, te, unet = (copy.deepcopy(m).to(torch.float16) for m in (vae, te, unet))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    # The tokenizer as the base folder has it (vocab.json, merges.txt): not the 2 MB tokenizer.json
    # that save_pretrained adds, which says the same again.
    shutil.rmtree(os.path.join(out_dir, "tokenizer"))
    shutil.copytree(os.path.join(base, "tokenizer"), os.path.join(out_dir, "tokenizer"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="model folder to write (diffusers layout)")
    ap.add_argument("--base", required=True, help="a folder `sd_mpi make-model --preset tiny` wrote: its tokenizer/ "
                    "(the standard CLIP one) and scheduler/ (SD 1.5's config) are used")
    ap.add_argument("--check-dir", help="write vae_reconstructions.png here after stage 1")
    ap.add_argument("--vae-steps", type=int, help="override RECIPE (quick trials only)")
    ap.add_argument("--unet-steps", type=int, help="override RECIPE (quick trials only)")
    ap.add_argument("--snapshot-every", type=int, help="also write the EMA weights every this many steps to "
                    "OUT_DIR_stepN (the training is the same with or without)")
    args = ap.parse_args()
    if args.vae_steps is not None:
        RECIPE["vae"]["decoder_steps"] = args.vae_steps
    if args.unet_steps is not None:
        RECIPE["unet"]["steps"] = args.unet_steps

    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    torch.set_num_threads(RECIPE["threads"])
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(RECIPE["seed"])
    rng = np.random.default_rng(RECIPE["seed"])
    history: list[dict] = []
    t_start = time.time()

    # Stage 1: the VAE.
    vae = build_vae(RECIPE["vae"])
    log(f"vae: {sum(p.numel() for p in vae.parameters())} parameters")
    vae_choice = train_vae(vae, rng, RECIPE["vae"], history)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        _, imgs = dataset.make_batch(rng, 256)
        lat = vae.encode(to_tensor(imgs)).latent_dist.mean
        scaling = float(1.0 / lat.std())
        rec = vae.decode(lat).sample
        vae_mae = float((rec - to_tensor(imgs)).abs().mean() * 127.5)
    vae.register_to_config(scaling_factor=round(scaling, 5))
    log(f"vae: scaling_factor {scaling:.5f}, held-back reconstruction error {vae_mae:.2f} levels")
    if args.check_dir:  # originals above reconstructions, for a look while the UNet trains
        from PIL import Image

        pair = np.concatenate([imgs[:8], ((rec[:8].clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()])
        sheet = pair.reshape(2, 8, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(128, 512, 3)
        Image.fromarray(sheet).save(os.path.join(args.check_dir, "vae_reconstructions.png"))

    # Stage 2: the UNet and the text encoder.
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(args.base, "tokenizer"))
    te = build_text_encoder(RECIPE["text_encoder"])
    r = RECIPE["unet"]
    latent_side = dataset.SIZE // 2 ** (len(RECIPE["vae"]["block_out_channels"]) - 1)
    unet = build_unet(r, RECIPE["text_encoder"]["hidden_size"], latent_side, RECIPE["vae"]["latent_channels"])
    log(f"unet: {sum(p.numel() for p in unet.parameters())} parameters, "
        f"text encoder: {sum(p.numel() for p in te.parameters())}")
    noise_sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                num_train_timesteps=1000)
    alphas_cumprod = noise_sched.alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    # min-SNR-gamma on the x0 error, floored (see RECIPE), as a weight of the epsilon error
    t_weight = torch.clamp(torch.clamp(snr, max=r["min_snr_gamma"]), min=r["x0_weight_floor"]) / snr
    t_probs = t_weight / t_weight.sum()
    te_scale = r["text_encoder_lr_scale"]
    if te_scale == 0:  # a fixed random encoder: see RECIPE
        te.requires_grad_(False)
    te_params = list(te.parameters()) if te_scale > 0 else []
    params = list(unet.parameters()) + te_params
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW([{"params": list(unet.parameters()), "scale": 1.0},
                             {"params": te_params, "scale": te_scale}], lr=r["lr"], weight_decay=1e-2)
    token_cache: dict[str, torch.Tensor] = {}

    def tokens(caps):
        for c in caps:
            if c not in token_cache:
                token_cache[c] = tokenizer(c, padding="max_length", max_length=77, truncation=True,
                                           return_tensors="pt").input_ids[0]
        return torch.stack([token_cache[c] for c in caps])

    if r["attribute_loss_weight"] > 0:
        heads = torch.nn.ModuleDict({a: torch.nn.Linear(RECIPE["text_encoder"]["hidden_size"], len(v))
                                     for a, v in dataset.ATTRIBUTE_WORDS.items()})
        opt.add_param_group({"params": list(heads.parameters()), "scale": 1.0})

    def attribute_loss(caps, context):
        """Cross-entropy of the heads' guesses at each attribute of the captions (empty ones skipped)."""
        rows = [i for i, c in enumerate(caps) if c]
        pooled = context[rows].mean(dim=1)
        labels = [dataset.attributes_of(caps[i]) for i in rows]
        return sum(F.cross_entropy(head(pooled), torch.tensor([lab[a] for lab in labels]))
                   for a, head in heads.items()) / len(heads)

    gen = torch.Generator().manual_seed(RECIPE["seed"])
    t0 = time.time()
    running = []
    for step in range(1, r["steps"] + 1):
        lr = r["lr"] * min(1.0, step / r["warmup"]) * (0.55 + 0.45 * math.cos(math.pi * step / r["steps"]))
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        caps, imgs = dataset.make_batch(rng, r["batch"])
        caps = ["" if rng.random() < r["uncond_fraction"] else c for c in caps]
        with torch.no_grad():
            latents = vae.encode(to_tensor(imgs)).latent_dist.mean * scaling
        noise = torch.randn(latents.shape, generator=gen)
        noise = noise + r["offset_noise"] * torch.randn(latents.shape[:2] + (1, 1), generator=gen)
        if r["timesteps_by_weight"]:
            t = torch.multinomial(t_probs, latents.shape[0], replacement=True, generator=gen)
            weight = t_weight.mean()
        else:
            t = torch.randint(0, 1000, (latents.shape[0],), generator=gen)
            weight = t_weight[t]
        noisy = noise_sched.add_noise(latents, noise, t)
        with torch.set_grad_enabled(te_scale > 0):
            context = te(tokens(caps)).last_hidden_state
        pred = unet(noisy, t, context).sample
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        if r["attribute_loss_weight"] > 0:
            loss = loss + r["attribute_loss_weight"] * attribute_loss(caps, context)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(r["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        running.append(loss.item())
        if step % 50 == 0 or step == 1:
            mean = sum(running) / len(running)
            running = []
            history.append({"stage": "unet", "step": step, "loss": round(mean, 5), "lr": round(lr, 6),
                            "seconds": round(time.time() - t0, 1)})
            log(f"unet step {step}/{r['steps']} loss {mean:.4f} lr {lr:.2e} ({time.time() - t0:.0f}s)")

        if args.snapshot_every and step % args.snapshot_every == 0 and step < r["steps"]:
            # The EMA weights as they stand, for a look at how drawing improves; the training
            # itself is unchanged (its weights are put back, no random number is drawn).
            live = [p.detach().clone() for p in params]
            with torch.no_grad():
                for e, p in zip(ema, params):
                    p.copy_(e)
                save_pipeline(f"{args.out_dir}_step{step}", args.base, vae, te, tokenizer, unet)
                for v, p in zip(live, params):
                    p.copy_(v)
            log(f"snapshot {args.out_dir}_step{step}")

    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    save_pipeline(args.out_dir, args.base, vae, te, tokenizer, unet)
    summary = {"recipe": RECIPE, "vae": vae_choice, "vae_scaling_factor": scaling, "vae_reconstruction_mae_levels": vae_mae,
               "torch": torch.__version__, "minutes": round((time.time() - t_start) / 60, 1), "history": history}
    with open(os.path.join(os.path.dirname(os.path.abspath(args.out_dir)), "training_log.json"), "w") as f:
        json.dump(summary, f, indent=1)
    log(f"wrote {args.out_dir} in {summary['minutes']} minutes")


if __name__ == "__main__":
    main()
