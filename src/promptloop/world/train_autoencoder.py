"""The autoencoder stages of backbone training (`world.train_backbone`), with the checkpoint helpers all stages use.

- `train_vae` (stage 1): the AutoencoderKL on random renders of the world (MSE + a tiny KL), then the latent
  scaling factor.
- `finetune_vae` (a warm start's stage 1): a kept VAE fine-tuned on this world's renders, encoder and decoder, with
  a term keeping its scaled latents near the kept encoder's.
- `train_decoder` (stage 4): the VAE decoder alone trained on (MSE + L1) for longer, its encoder frozen, on
  slightly noised latents (robustness to the UNet's imperfect ones).
Each stage resumes from its atomic checkpoint in the work folder.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptloop.world import get_world

if TYPE_CHECKING:
    from promptloop.world.train_backbone import BackboneTrainConfig


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to `path` whole: written beside it, then moved into place."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    """A stage checkpoint (tensors only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) images in [0, 1] -> (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()


def _autoencoder_step_lr(opt: torch.optim.Optimizer, peak: float, step: int, total: int) -> None:
    """Set the learning rate of the VAE stages: 50 warm-up steps, then cosine decay to 10% of `peak`."""
    lr = peak * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))
    for g in opt.param_groups:
        g["lr"] = lr


def render_batch(world: Any, sampler: Any, n: int) -> torch.Tensor:
    """`n` renders of the world's scenes from `sampler`, as a VAE input batch."""
    return images_to_tensor(np.stack([world.render(sampler.sample()) for _ in range(n)]))


def resume(state: dict | None, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore model and optimizer from a stage checkpoint; the step to continue from (0 without one)."""
    if not state:
        return 0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    return int(state["step"])


def train_vae(cfg: BackboneTrainConfig, work: Path) -> torch.nn.Module:
    ckpt = work / "vae.pt"
    world = get_world(cfg.world)
    vae = world.build_vae()
    state = load_state(ckpt) if ckpt.exists() else None
    if state and state.get("done"):
        vae.load_state_dict(state["model"])
        vae.register_to_config(scaling_factor=state["scaling_factor"])  # config, not a tensor: restore it
        return vae
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = resume(state, vae, opt)
    sampler = world.SceneSampler(cfg.seed + 1000 + start, "any")
    bar = tqdm(range(start, cfg.vae_steps), desc="vae", initial=start, total=cfg.vae_steps)
    for step in bar:
        _autoencoder_step_lr(opt, cfg.vae_lr, step, cfg.vae_steps)
        x = render_batch(world, sampler, cfg.vae_batch)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec, x) + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.5f}")
        if (step + 1) % cfg.checkpoint_every == 0:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, ckpt)
    # latent scale so that scaled latents have unit variance
    with torch.no_grad():
        x = render_batch(world, world.SceneSampler(cfg.seed + 7, "any"), cfg.scale_renders)
        z = vae.encode(x).latent_dist.mean
        vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    atomic_save({"model": vae.state_dict(), "done": True, "scaling_factor": vae.config.scaling_factor}, ckpt)
    return vae


def finetune_vae(cfg: BackboneTrainConfig, work: Path, vae: torch.nn.Module) -> torch.nn.Module:
    """Warm start, stage 1': fine-tune a kept VAE on this world's renders (MSE + a tiny KL + `vae_anchor` times the
    squared distance of its scaled latent means from the kept encoder's); the latent scale is kept. Resumable."""
    ckpt = work / "vae_finetune.pt"
    state = load_state(ckpt) if ckpt.exists() else None
    if state and state.get("done"):
        vae.load_state_dict(state["model"])
        return vae
    world = get_world(cfg.world)
    anchor = copy.deepcopy(vae).eval().requires_grad_(False)
    vae.train().requires_grad_(True)
    torch.manual_seed(cfg.seed + 11)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr / 2, weight_decay=0.0)
    start = resume(state, vae, opt)
    sampler = world.SceneSampler(cfg.seed + 1100 + start, "any")
    scale = vae.config.scaling_factor
    bar = tqdm(range(start, cfg.vae_finetune_steps), desc="vae-finetune", initial=start, total=cfg.vae_finetune_steps)
    for step in bar:
        _autoencoder_step_lr(opt, cfg.vae_lr / 2, step, cfg.vae_finetune_steps)
        x = render_batch(world, sampler, cfg.vae_batch)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        with torch.no_grad():
            ref = anchor.encode(x).latent_dist.mean
        drift = F.mse_loss(post.mean * scale, ref * scale)
        loss = F.mse_loss(rec, x) + cfg.vae_kl * post.kl().mean() + cfg.vae_anchor * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.5f}", drift=f"{drift.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1}, ckpt)
    vae.eval()
    atomic_save({"model": vae.state_dict(), "done": True}, ckpt)
    return vae


def train_decoder(cfg: BackboneTrainConfig, work: Path, vae: torch.nn.Module) -> torch.nn.Module:
    """Stage 4: fine-tune the VAE decoder (post_quant_conv + decoder) with the encoder frozen."""
    ckpt = work / "decoder.pt"
    state = load_state(ckpt) if ckpt.exists() else None
    if state and state.get("done"):
        vae.load_state_dict(state["model"])
        return vae
    if cfg.decoder_steps <= 0:
        return vae
    torch.manual_seed(cfg.seed + 11)
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    start = resume(state, vae, opt)
    if state:
        torch.set_rng_state(state["torch_rng"])
    world = get_world(cfg.world)
    sampler = world.SceneSampler(cfg.seed + 77 + start, "any")
    bar = tqdm(range(start, cfg.decoder_steps), desc="decoder", initial=start, total=cfg.decoder_steps)
    for step in bar:
        _autoencoder_step_lr(opt, cfg.decoder_lr, step, cfg.decoder_steps)
        x = render_batch(world, sampler, cfg.vae_batch)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
            z = z + cfg.decoder_latent_noise * z.std() * torch.randn_like(z)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.decoder_steps:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                          "torch_rng": torch.get_rng_state()}, ckpt)
    vae.requires_grad_(False)
    atomic_save({"model": vae.state_dict(), "done": True}, ckpt)
    return vae


__all__ = ["atomic_save", "finetune_vae", "images_to_tensor", "load_state", "render_batch", "resume", "train_decoder",
           "train_vae"]
