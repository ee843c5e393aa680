"""Train a world's backbone from scratch on CPU (`promptloop world train-backbone --world NAME`).

The world (`BackboneTrainConfig.world`) gives the scenes, renders, captions and component sizes. Four resumable
stages, each with a progress bar and atomic checkpoints in `work_dir` (the autoencoder stages are
`world.train_autoencoder`'s):
1. `vae`: the AutoencoderKL on random renders (MSE + a tiny KL), then the latent scaling factor.
2. `data`: a fixed pool of (train-split scene, caption) pairs: VAE latents and the pipeline's own
   MiniLM token states, cached once (captions: paraphrases, detailed and emphasised variants).
3. `unet`: v-prediction with min-SNR-5 weighting, AdamW with warm-up and cosine decay, EMA of the
   weights, 10% caption dropout for classifier-free guidance. The text binder (`world.text_binder`,
   `text_binder_layers` layers between the cached MiniLM states and the UNet) is trained with it.
4. `decoder`: the VAE decoder alone is trained on (MSE + L1) for longer, its encoder frozen — so the
   latents the UNet learned are unchanged — on slightly noised latents (robustness to the UNet's imperfect
   ones; why: docs/worlds.md, "Backbone A").
The EMA UNet, the VAE and the sampling scheduler (`world.scheduler`, DDIM's update with the world's timestep
shift) are saved to `out_dir` (fp16 safetensors).

`init_from` continues a finished backbone instead (a warm start): its VAE is kept (stages 1 and 4 are
skipped; with `vae_finetune_steps` it is first fine-tuned on this world's renders, encoder and decoder, with a term
keeping its scaled latents near the kept encoder's, so that a backbone of another world can be continued on renders
its VAE never saw), the pool is encoded with it, and its UNet is trained for `unet_steps` more steps on a fresh
warm-up and cosine schedule, the EMA starting at its weights. A backbone without a text binder gets a
new one, which starts as the identity (its UNet's behaviour is unchanged at step 0).

`denoiser` picks the UNet variant (`world.denoisers.DENOISERS`; "a", the world's own, unless the world's
`build_unet` takes a `denoiser`, as v3's does) and `sampler` the scheduler saved with it ("ddim" or "dpm").
`vae_from` keeps another backbone's VAE (as `init_from` does, so the latent space is that backbone's) but trains
a fresh UNet and text binder: how backbone B of v3 is trained on backbone A's latents (issue 31). `init_from` with
a denoiser other than its UNet's architecture is an error.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptloop.world import DEFAULT_WORLD, denoisers, get_world, world_name
from promptloop.world import backbone as bb
from promptloop.world.text_binder import BoundTextEncoder, TextBinder
from promptloop.world.train_autoencoder import (
    atomic_save,
    finetune_vae,
    images_to_tensor,
    load_state,
    train_decoder,
    train_vae,
)


@dataclass
class BackboneTrainConfig:
    world: str = DEFAULT_WORLD  # the embedded world whose scenes and captions it learns (`world.get_world`)
    out_dir: str = ""  # where the finished pipeline is saved ("": the world's shipped backbone folder)
    work_dir: str = "runs/backbone"  # checkpoints and caches (resumable)
    seed: int = 0  # seeds scenes, captions, noise and initialisation
    vae_steps: int = 1200  # AutoencoderKL optimisation steps
    vae_batch: int = 32  # renders per VAE step
    vae_lr: float = 1e-3  # AdamW learning rate of the VAE
    vae_kl: float = 1e-6  # weight of the KL term (keeps latents near N(0, 1) in scale)
    scale_renders: int = 256  # renders the latent scaling factor is measured on, after the VAE stage
    pool_size: int = 24000  # (scene, caption) pairs cached for UNet training
    unet_steps: int = 5000  # UNet optimisation steps
    batch: int = 32  # pairs per UNet step
    lr: float = 5e-4  # peak AdamW learning rate of the UNet
    warmup: int = 150  # linear warm-up steps
    min_lr_frac: float = 0.05  # cosine decays to this fraction of the peak
    ema_decay: float = 0.999  # EMA decay of the UNet weights (the saved model)
    cfg_dropout: float = 0.1  # probability of replacing a caption with "" (for CFG)
    snr_gamma: float = 5.0  # min-SNR loss weighting; 0 disables it
    checkpoint_every: int = 250  # steps between atomic checkpoints
    threads: int = 0  # torch threads (0: leave torch's default)
    max_minutes: float = 0.0  # stop the UNet stage (checkpointed, resumable) after this long; 0: no limit
    stop_at: int = 0  # end the UNet stage after this step and save its EMA weights (0: run all unet_steps)
    decoder_steps: int = 3000  # VAE-decoder-only steps after the UNet stage (encoder frozen); 0 skips the stage
    decoder_lr: float = 5e-4  # peak AdamW learning rate of the decoder stage
    decoder_latent_noise: float = 0.1  # std of the noise added to latents in the decoder stage, relative to their std
    init_from: str = ""  # a backbone folder to continue from: its VAE is kept, its UNet is trained further; "" trains from scratch
    text_binder_layers: int = 2  # trainable transformer layers binding words between MiniLM and the UNet (0: none)
    text_binder_lr_scale: float = 10.0  # the binder's learning rate relative to `lr` (it starts from nothing; the UNet may not)
    binding_loss: float = 0.0  # weight of the binder's auxiliary binding loss (the world's BINDING_LOSS); 0: diffusion loss only
    vae_finetune_steps: int = 0  # with init_from or vae_from: fine-tune the kept VAE on this world's renders first (0: keep it as is)
    vae_anchor: float = 1.0  # weight keeping the fine-tuned encoder's scaled latents near the kept VAE's (the UNet's warm start)
    denoiser: str = "a"  # the UNet variant trained (`world.denoisers.DENOISERS`; "a": backbone A's, the world's own)
    sampler: str = "ddim"  # the sampling scheduler saved with it (`world.denoisers.SAMPLERS`: "ddim" or "dpm")
    vae_from: str = ""  # a backbone folder whose VAE is kept while a fresh UNet is trained (not with init_from); "": none


def _binding_module(cfg: BackboneTrainConfig) -> ModuleType:
    """The world's binding-loss module (its `BINDING_LOSS`: `phrase_labels`, `probe_directions`, `binding_loss`)."""
    return importlib.import_module(get_world(cfg.world).BINDING_LOSS)


def _pool_captions(cfg: BackboneTrainConfig) -> tuple[list, list[str]]:
    """The pool's (scene, caption) pairs: a pure function of cfg.seed and cfg.pool_size."""
    world = get_world(cfg.world)
    rng = random.Random(cfg.seed + 2)
    sampler = world.SceneSampler(cfg.seed + 3, "train")
    scenes = [sampler.sample() for _ in range(cfg.pool_size)]
    return scenes, [world.training_caption(s, rng) for s in scenes]


def build_pool(cfg: BackboneTrainConfig, work: Path, pipe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Stage 2: (latents, MiniLM token states, the "" states, captions) of the pool, cached in work/pool.pt."""
    path = work / "pool.pt"
    if path.exists():
        d = load_state(path)
        captions = d.get("captions")
        if captions is None:  # a pool cached before captions were kept: regenerate them, checked against its record
            captions = _pool_captions(cfg)[1]
            record = (work / "pool_captions.txt").read_text().splitlines() if (work / "pool_captions.txt").exists() else []
            if captions[: len(record)] != record:
                raise ValueError(f"{path} was built from other captions than this code generates; use another --work-dir")
        return d["latents"], d["text"], d["uncond"], captions
    scenes, captions = _pool_captions(cfg)
    lat, txt = [], []
    bs = 256
    for i in tqdm(range(0, cfg.pool_size, bs), desc="data"):
        x = images_to_tensor(np.stack([get_world(cfg.world).render(s) for s in scenes[i : i + bs]]))
        with torch.no_grad():
            lat.append(pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor)
        txt.append(bb.encode_captions(pipe, captions[i : i + bs]).half())
    uncond = bb.encode_captions(pipe, [""])[0]
    latents, text = torch.cat(lat), torch.cat(txt)
    atomic_save({"latents": latents, "text": text, "uncond": uncond, "captions": captions}, path)
    (work / "pool_captions.txt").write_text("\n".join(captions[:200]) + "\n")
    return latents, text, uncond, captions


def build_world_unet(cfg: BackboneTrainConfig) -> torch.nn.Module:
    """A fresh UNet of cfg.denoiser for cfg.world: the world's own `build_unet()` for "a"; another denoiser only
    where the world's `build_unet` takes one (ValueError otherwise)."""
    world = get_world(cfg.world)
    denoisers.check_denoiser(cfg.denoiser)
    if cfg.denoiser == denoisers.DEFAULT_DENOISER:
        return world.build_unet()
    if "denoiser" not in inspect.signature(world.build_unet).parameters:
        raise ValueError(f"world {cfg.world!r} has only its own denoiser (a): denoiser {cfg.denoiser!r} is world "
                         "backdrops' (v3)")
    return world.build_unet(cfg.denoiser)


def _trained_parts(cfg: BackboneTrainConfig, init_unet: torch.nn.Module | None = None, init_binder: torch.nn.Module | None = None
                   ) -> tuple[torch.nn.Module, TextBinder | None, torch.nn.ModuleList]:
    """A fresh (or warm-started) UNet, text binder (None when cfg.text_binder_layers is 0), and both as the
    one module list the optimizer and the EMA see."""
    unet = build_world_unet(cfg)
    if init_unet is not None:
        unet.load_state_dict({k: v.float() for k, v in init_unet.state_dict().items()})
    binder = None
    if cfg.text_binder_layers > 0:
        binder = TextBinder(num_layers=cfg.text_binder_layers, max_tokens=bb.TEXT_MAX_TOKENS)
        if init_binder is not None:
            binder.load_state_dict({k: v.float() for k, v in init_binder.state_dict().items()})
    return unet, binder, torch.nn.ModuleList([unet] if binder is None else [unet, binder])


def train_unet(cfg: BackboneTrainConfig, work: Path, latents, text, uncond, scheduler,
               init_unet: torch.nn.Module | None = None,
               init_binder: torch.nn.Module | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.nn.Module, TextBinder | None]:
    """Stage 3: the UNet and the text binder. With `init_unet` (a warm start), training continues from its
    weights (and `init_binder`'s, else a new identity binder) and the EMA starts at them (no EMA warm-up:
    the starting weights are already a good model). `labels` (the pool's `phrase_labels`) feed the binding
    loss when cfg.binding_loss > 0."""
    from diffusers.training_utils import EMAModel

    ckpt = work / "unet.pt"
    torch.manual_seed(cfg.seed)
    unet, binder, trained = _trained_parts(cfg, init_unet, init_binder)
    ema = EMAModel(trained.parameters(), decay=cfg.ema_decay, use_ema_warmup=init_unet is None, power=0.75)
    lr_scales = [1.0, cfg.text_binder_lr_scale][: len(trained)]  # per part, from cfg (also after a resume)
    opt = torch.optim.AdamW([{"params": list(part.parameters())} for part in trained], lr=cfg.lr, weight_decay=0.01)
    start = 0
    gen = torch.Generator().manual_seed(cfg.seed + 5)
    if ckpt.exists():
        st = load_state(ckpt)
        unet.load_state_dict(st["model"])
        if binder is not None:
            binder.load_state_dict(st["binder"])
        opt.load_state_dict(st["opt"])
        ema.load_state_dict(st["ema"])
        gen.set_state(st["gen"])
        start = st["step"]
    if start >= cfg.unet_steps or (cfg.stop_at and start >= cfg.stop_at):
        ema.copy_to(trained.parameters())
        return unet, binder
    use_binding = binder is not None and cfg.binding_loss > 0
    if use_binding and labels is None:
        raise ValueError("binding_loss > 0 needs the pool's phrase labels")
    binding = _binding_module(cfg) if use_binding else None
    directions = binding.probe_directions(text.shape[-1], cfg.seed) if binding is not None else None
    acp = scheduler.alphas_cumprod.float()
    snr = acp / (1 - acp)
    n = latents.shape[0]
    t0 = time.time()
    bar = tqdm(range(start, cfg.unet_steps), desc="unet", initial=start, total=cfg.unet_steps)
    for step in bar:
        prog = step / cfg.unet_steps
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * prog)))
        for g, scale in zip(opt.param_groups, lr_scales, strict=True):
            g["lr"] = lr * scale
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        x0 = latents[idx]
        cond = text[idx].float()
        drop = torch.rand(cfg.batch, generator=gen) < cfg.cfg_dropout
        cond[drop] = uncond.float()
        aux = None
        if binder is not None:
            cond = binder(cond)
            if use_binding:  # dropped captions (now "") have no objects to bind
                aux = binding.binding_loss(cond[~drop], labels[idx][~drop], directions)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t)
        pred = unet(xt, t, cond).sample
        per = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        if cfg.snr_gamma > 0:  # min-SNR weighting for v-prediction: min(snr, g) / (snr + 1)
            s = snr[t]
            per = per * torch.clamp(s, max=cfg.snr_gamma) / (s + 1)
        loss = per.mean()
        if aux is not None:
            loss = loss + cfg.binding_loss * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        opt.step()
        ema.step(trained.parameters())
        bar.set_postfix(loss=f"{per.mean().item():.4f}", lr=f"{lr:.1e}",
                        **({"bind": f"{aux.item():.3f}"} if aux is not None else {}))
        last = step + 1 == cfg.unet_steps or step + 1 == cfg.stop_at
        out_of_time = cfg.max_minutes > 0 and (time.time() - t0) > cfg.max_minutes * 60
        if (step + 1) % cfg.checkpoint_every == 0 or last or out_of_time:
            state = {"model": unet.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(), "gen": gen.get_state(),
                     "step": step + 1}
            if binder is not None:
                state["binder"] = binder.state_dict()
            atomic_save(state, ckpt)
        if out_of_time and not last:
            raise TimeoutError(f"stopped after {cfg.max_minutes} min at step {step + 1}; rerun to resume")
        if last:
            break
    ema.copy_to(trained.parameters())
    return unet, binder


def export_snapshot(work_dir: str | Path, out_dir: str | Path) -> None:
    """Save the current EMA UNet of an (unfinished) run as a backbone folder, e.g. to evaluate it."""
    from diffusers.training_utils import EMAModel

    work = Path(work_dir)
    run = json.loads((work / "config.json").read_text()) if (work / "config.json").exists() else {}
    init_from, world = run.get("init_from", "") or run.get("vae_from", ""), run.get("world", DEFAULT_WORLD)
    denoiser, sampler = run.get("denoiser", denoisers.DEFAULT_DENOISER), run.get("sampler", denoisers.DEFAULT_SAMPLER)
    if init_from:  # a warm-started run keeps its initial backbone's VAE (fine-tuned where the run did so)
        vae = bb.load_backbone(init_from).vae.float()
        tuned = work / "vae_finetune.pt"
        if tuned.exists() and (tuned_state := load_state(tuned)).get("done"):
            vae.load_state_dict(tuned_state["model"])
    else:
        vae = get_world(world).build_vae()
        vae_state = load_state(work / "vae.pt")
        vae.load_state_dict(vae_state["model"])
        vae.register_to_config(scaling_factor=vae_state["scaling_factor"])
        dec = work / "decoder.pt"
        if dec.exists() and (dec_state := load_state(dec)).get("done"):
            vae.load_state_dict(dec_state["model"])
    st = load_state(work / "unet.pt")
    unet, binder, trained = _trained_parts(BackboneTrainConfig(world=world, text_binder_layers=_binder_layers_of(st),
                                                               denoiser=denoiser))
    unet.load_state_dict(st["model"])
    if binder is not None:
        binder.load_state_dict(st["binder"])
    ema = EMAModel(trained.parameters(), decay=0.999)
    ema.load_state_dict(st["ema"])
    ema.copy_to(trained.parameters())
    tokenizer, text_encoder = bb.load_text_encoder()
    pipe = bb.assemble_pipeline(unet, vae, denoisers.build_sampler(sampler), tokenizer,
                                bb.bind_text_encoder(text_encoder, binder))
    bb.save_backbone(pipe, out_dir, world=world, denoiser=_recorded(denoiser))


def _binder_layers_of(state: dict) -> int:
    """Number of text-binder layers in a UNet-stage checkpoint (0: none)."""
    keys = state.get("binder", {}).keys()
    return len({k.split(".")[1] for k in keys if k.startswith("layers.")})


def check_work_dir(cfg: BackboneTrainConfig, work: Path) -> None:
    """Refuse to resume a work dir written by a run whose data or starting point differ from `cfg`'s."""
    cfg_path = work / "config.json"
    if not cfg_path.exists():
        return
    old = json.loads(cfg_path.read_text())
    keys = ("world", "seed", "vae_steps", "pool_size", "batch", "init_from", "text_binder_layers", "vae_finetune_steps",
            "denoiser", "vae_from")
    defaults = BackboneTrainConfig()  # a work dir written before a field existed holds its default ...
    defaults.text_binder_layers = 0  # ... except the binder: runs before it had none
    stored = {k: old.get(k, getattr(defaults, k)) for k in keys}
    if any(stored[k] != getattr(cfg, k) for k in keys):
        raise ValueError(f"{work} holds a run with another config ({stored}); use another --work-dir")


def train_backbone(cfg: BackboneTrainConfig) -> Path:
    """Run (or resume) all stages and save the pipeline to cfg.out_dir."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Adam's second moments of near-zero gradients decay into subnormal floats, which x86 CPUs process
    # up to 50x slower (measured here: 0.4 s/step became 21 s/step); flush them to zero while training,
    # and restore torch's default (subnormals kept) afterwards: the mode is process-wide.
    torch.set_flush_denormal(True)
    try:
        return _train_backbone(cfg)
    finally:
        torch.set_flush_denormal(False)


def _train_backbone(cfg: BackboneTrainConfig) -> Path:
    cfg.world = world_name(cfg.world)
    if cfg.binding_loss > 0 and getattr(get_world(cfg.world), "BINDING_LOSS", None) is None:
        raise ValueError(f"the binding loss labels a world's captions: world {cfg.world!r} declares none (BINDING_LOSS)")
    denoisers.check_sampler(cfg.sampler)
    if cfg.init_from and cfg.vae_from:
        raise ValueError("init_from keeps its backbone's VAE and UNet, vae_from its VAE only: give one of the two")
    with torch.random.fork_rng(devices=[]):  # the global RNG (the VAE's initialisation) as it was before this UNet
        fresh_unet = build_world_unet(cfg)  # an unknown denoiser, or one the world lacks, fails before anything is written
    if cfg.init_from:
        _check_denoiser_continued(cfg, fresh_unet)  # from its UNet's config, before the backbone loads
    init = bb.load_backbone(cfg.init_from or cfg.vae_from) if cfg.init_from or cfg.vae_from else None  # so does a bad folder
    if cfg.init_from and (binder := bb.text_binder_of(init)) is not None and len(binder.layers) != cfg.text_binder_layers:
        raise ValueError(f"{cfg.init_from} has a {len(binder.layers)}-layer text binder; continue it with "
                         f"text_binder_layers={len(binder.layers)} (--text-binder-layers), not {cfg.text_binder_layers}")
    work = Path(cfg.work_dir)
    check_work_dir(cfg, work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if init is not None:  # warm start or vae_from: the VAE (encoder and fine-tuned decoder) is kept as it is
        tokenizer, text_encoder = init.tokenizer, init.text_encoder
        if isinstance(text_encoder, BoundTextEncoder):  # the pool caches the MiniLM states, before the binder
            text_encoder = text_encoder.encoder
        vae = init.vae.float().eval()
        if cfg.vae_finetune_steps > 0:
            vae = finetune_vae(cfg, work, vae).eval()
    else:
        tokenizer, text_encoder = bb.load_text_encoder()
        vae = train_vae(cfg, work).eval()
    vae.requires_grad_(False)
    scheduler = bb.build_scheduler()
    pipe = bb.assemble_pipeline(fresh_unet, vae, scheduler, tokenizer, text_encoder)
    latents, text, uncond, captions = build_pool(cfg, work, pipe)
    labels = (_binding_module(cfg).phrase_labels(tokenizer, captions, text.shape[1])
              if cfg.binding_loss > 0 and cfg.text_binder_layers else None)
    cont = init if cfg.init_from else None  # vae_from: a fresh UNet and text binder
    unet, binder = train_unet(cfg, work, latents, text, uncond, scheduler, cont.unet if cont is not None else None,
                              bb.text_binder_of(cont) if cont is not None else None, labels)
    if init is None:
        vae = train_decoder(cfg, work, vae).eval()
    pipe = bb.assemble_pipeline(unet.eval(), vae, denoisers.build_sampler(cfg.sampler), tokenizer,
                                bb.bind_text_encoder(text_encoder, binder))
    out = Path(cfg.out_dir or get_world(cfg.world).DEFAULT_BACKBONE)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    bb.save_backbone(pipe, tmp, world=cfg.world, denoiser=_recorded(cfg.denoiser))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _check_denoiser_continued(cfg: BackboneTrainConfig, fresh_unet: torch.nn.Module) -> None:
    """ValueError when the init_from folder's UNet (its unet/config.json) has another architecture than
    cfg.denoiser's; a config that cannot be read is left to `load_backbone` to report."""
    try:
        config = json.loads((Path(cfg.init_from) / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(config, dict) and not denoisers.same_architecture(fresh_unet.config, config):
        found = denoisers.denoiser_of(config)
        what = f"denoiser {found!r}" if found else "a UNet of another architecture"
        raise ValueError(f"{cfg.init_from} holds {what}, not denoiser {cfg.denoiser!r}: continue it with its own "
                         f"denoiser, or train denoiser {cfg.denoiser!r} on its VAE with vae_from (--vae-from)")


def _recorded(denoiser: str) -> str | None:
    """The denoiser model_index.json records: none for the world's own ("a"; its folders stay as before)."""
    return None if denoiser == denoisers.DEFAULT_DENOISER else denoiser
