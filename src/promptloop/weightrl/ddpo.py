"""DDPO on a world backbone's UNet: the weight-level RL baseline (`promptloop world ddpo`; issue 31).

DDPO (Black et al. 2023) treats each denoising step as an action: with eta > 0 a DDIM step is a Gaussian whose
mean the UNet sets (`weightrl.ddim_logprob`), so the final image's reward trains all the UNet's weights by a
policy gradient over the steps, PPO-clipped. One step of `train_ddpo`:

1. **rollout**: `prompts_per_step` training queries x `images_per_prompt` images, sampled with DDIM at `eta` and
   classifier-free guidance; every step's latent and log-density are kept (no gradients). Each image's noise comes
   from its own generator, seeded by (seed, step, index).
2. **score**: the decoded images by the reward, judged against their query; advantages centred within each
   query's images, scaled (`scale_rewards`, as `train.advantages`), clipped to +-`adv_clip_max`.
3. **update**: each sample trains on a random `timestep_fraction` of its steps; the loss is the PPO-clipped
   surrogate -A * ratio of the per-step likelihood ratio; gradients accumulate over a chunk of the batch, then one
   AdamW step (`updates_per_epoch` chunks per pass, `num_inner_epochs` passes).

Held-out evaluation every `eval_every` steps (and at steps 0 and the end) samples the way the backbone is used
(deterministic DDIM, eta 0) and logs the reward, the world's alignment and the proxy to `metrics.jsonl` under the
GRPO trainer's keys (`eval/NAME/mean`, `.../ci_low`, `.../ci_high`). The run is resumable: `checkpoint.pt` (UNet,
optimizer, step) is written atomically, and each step's queries, noise and update order are functions of
(seed, step), so a resumed run repeats the uninterrupted one. The tuned backbone is saved with `save_backbone`:
the same VAE, text binder and scheduler, the tuned UNet.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from promptloop.train.advantages import group_advantages
from promptloop.weightrl.config import DDPOConfig
from promptloop.weightrl.ddim_logprob import check_ddim, ddim_step_with_logprob

# the settings a resumed run must share with the run it continues (the rest: length, evaluation, threads, output)
TRAJECTORY_FIELDS = ("world", "backbone", "reward", "seed", "prompts_per_step", "images_per_prompt",
                     "num_inference_steps", "guidance", "eta", "scale_rewards", "adv_clip_max", "clip_range",
                     "timestep_fraction", "num_inner_epochs", "updates_per_epoch", "learning_rate", "weight_decay",
                     "max_grad_norm")


@dataclass
class Rollout:
    """One step's sampled trajectories (no gradients)."""

    queries: list[str]
    latents: torch.Tensor  # (T + 1, B, C, h, w): latents[k] is the input of denoising step k, latents[T] the final one
    log_probs: torch.Tensor  # (T, B): log-density of latents[k + 1] given latents[k] at rollout
    timesteps: torch.Tensor  # (T,) the scheduler's timesteps
    text: torch.Tensor  # (B, L, D) the queries' token states
    uncond: torch.Tensor  # (1, L, D) the "" token states (classifier-free guidance)
    images: np.ndarray  # (B, H, W, 3) in [0, 1]


def guided_output(unet: Any, latents: torch.Tensor, timesteps: torch.Tensor, text: torch.Tensor,
                  guidance: float) -> torch.Tensor:
    """The UNet's output at `latents`, classifier-free guided when `guidance` > 1: `text` is then the uncond rows
    followed by the cond rows (2B, L, D), else the cond rows (B, L, D)."""
    if guidance <= 1.0:
        return unet(latents, timesteps, encoder_hidden_states=text).sample
    both = unet(torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), encoder_hidden_states=text).sample
    uncond, cond = both.chunk(2)
    return uncond + guidance * (cond - uncond)


def _cfg_text(uncond: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    return torch.cat([uncond.expand(cond.shape[0], -1, -1), cond]) if guidance > 1.0 else cond


def decode(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """Final latents -> (B, H, W, 3) float images in [0, 1], as the pipeline decodes them."""
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return np.asarray(pipe.image_processor.postprocess(image, output_type="np"), dtype=np.float32)


@torch.no_grad()
def rollout(pipe: Any, queries: list[str], seeds: list[int], *, steps: int, guidance: float, eta: float) -> Rollout:
    """Sample one image per (query, seed) with DDIM at `eta`, keeping every latent and step log-density."""
    check_ddim(pipe.scheduler)
    device = pipe.device
    cond, uncond = pipe.encode_prompt(queries, device, 1, True, negative_prompt=None)
    uncond = uncond[:1]  # every row is the "" prompt's
    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = pipe.scheduler.timesteps
    size = pipe.unet.config.sample_size
    x = pipe.prepare_latents(len(queries), pipe.unet.config.in_channels, size * pipe.vae_scale_factor,
                             size * pipe.vae_scale_factor, cond.dtype, device, gens)
    text = _cfg_text(uncond, cond, guidance)  # one tensor for every step (the UNet caches its text projections)
    latents, log_probs = [x], []
    for t in timesteps:
        tt = t.expand(x.shape[0])
        out = guided_output(pipe.unet, pipe.scheduler.scale_model_input(x, t), tt, text, guidance)
        x, lp = ddim_step_with_logprob(pipe.scheduler, out, tt, x, eta, generator=gens)
        latents.append(x)
        log_probs.append(lp)
    return Rollout(list(queries), torch.stack(latents), torch.stack(log_probs), timesteps.clone(), cond, uncond,
                   decode(pipe, x))


def score(reward: Any, images: np.ndarray, queries: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
    """(the rewards (B,), the mean of each entry of its breakdown over the images where it is informative:
    `RewardOutput.asserted`; an entry informative nowhere in the batch is left out)."""
    out = reward(images, queries)
    means = {}
    for name, values in out.breakdown.items():
        mask = out.asserted.get(name)
        if mask is None:
            means[name] = float(values.double().mean())
        elif mask.any():
            means[name] = float(values.double()[mask].mean())
    return out.scores.detach().double().cpu(), means


def update(pipe: Any, optimizer: torch.optim.Optimizer, ro: Rollout, advantages: torch.Tensor, cfg: DDPOConfig,
           guidance: float, generator: torch.Generator) -> dict[str, float]:
    """The PPO-clipped policy-gradient passes over one rollout (module docstring, stage 3); their statistics."""
    unet, scheduler = pipe.unet, pipe.scheduler
    params = [p for p in unet.parameters() if p.requires_grad]
    n_steps, batch = ro.log_probs.shape
    n_train = max(1, round(n_steps * cfg.timestep_fraction))
    adv = advantages.to(torch.float32).clamp(-cfg.adv_clip_max, cfg.adv_clip_max)
    kl, clipped, losses, norms = [], [], [], []
    on_policy_kl = 0.0
    for _ in range(cfg.num_inner_epochs):
        order = torch.randperm(batch, generator=generator)
        chosen = torch.stack([torch.randperm(n_steps, generator=generator)[:n_train] for _ in range(batch)])
        for chunk in order.tensor_split(cfg.updates_per_epoch):
            optimizer.zero_grad(set_to_none=True)
            terms = len(chunk) * n_train
            for mb in chunk.split(cfg.micro_batch):
                text = _cfg_text(ro.uncond, ro.text[mb], guidance)
                for j in range(n_train):
                    k = chosen[mb, j]  # each sample's own denoising step
                    x, x_next, t = ro.latents[k, mb], ro.latents[k + 1, mb], ro.timesteps[k]
                    out = guided_output(unet, scheduler.scale_model_input(x, t), t, text, guidance)
                    _, lp = ddim_step_with_logprob(scheduler, out, t, x, cfg.eta, prev_sample=x_next)
                    log_ratio = lp - ro.log_probs[k, mb]
                    ratio = log_ratio.exp()
                    a = adv[mb]
                    loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)).sum()
                    (loss / terms).backward()
                    losses.append(float(loss.detach()) / len(mb))
                    kl.append(float(0.5 * (log_ratio.detach() ** 2).mean()))
                    clipped.append(float(((ratio.detach() - 1).abs() > cfg.clip_range).float().mean()))
            if not norms:  # the first chunk of the first pass is exactly on-policy: its ratios are 1 up to rounding
                on_policy_kl = float(np.mean(kl))
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)))
            optimizer.step()
    return {"loss": float(np.mean(losses)), "approx_kl": float(np.mean(kl)), "approx_kl_on_policy": on_policy_kl,
            "clipfrac": float(np.mean(clipped)), "grad_norm": float(np.mean(norms))}


def _ci_row(prefix: str, scores: np.ndarray, seed: int) -> dict[str, float]:
    from promptloop.world.fair import bootstrap_ci

    lo, hi = bootstrap_ci(scores, seed=seed)
    return {f"{prefix}/mean": float(scores.mean()), f"{prefix}/ci_low": lo, f"{prefix}/ci_high": hi}


def evaluate(pipe: Any, rewards: dict[str, Any], queries: list[str], seeds: list[int], *, steps: int,
             guidance: float, seed: int) -> dict[str, float]:
    """Held-out scores of the backbone as used (deterministic DDIM): `eval/NAME/mean` and its CI per reward."""
    from promptloop.world.sampling import sample

    images = sample(pipe, queries, seeds, mode="none", steps=steps, guidance=guidance, progress=False).images
    row: dict[str, float] = {}
    for name, reward in rewards.items():
        row.update(_ci_row(f"eval/{name}", reward(images, queries).scores.double().cpu().numpy(), seed))
    return row


def step_queries(prompts: list[str], cfg: DDPOConfig, step: int) -> tuple[list[str], list[int]]:
    """Step `step`'s queries (each repeated `images_per_prompt` times, consecutively) and one noise seed per image:
    functions of (seed, step) only."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    chosen = rng.sample(prompts, min(cfg.prompts_per_step, len(prompts)))
    queries = [q for q in chosen for _ in range(cfg.images_per_prompt)]
    base = (cfg.seed * 1_000_003 + step) * 10_007
    return queries, [base + i for i in range(len(queries))]


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _keep_rows_until(path: Path, last_step: int) -> None:
    """Drop the metrics rows after `last_step` (written after the checkpoint a run resumes from) and a torn last
    line (`train.logging.read_metrics` skips it)."""
    from promptloop.train.logging import read_metrics

    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in read_metrics(path) if r["step"] <= last_step))


def _check_same_run(work: Path, cfg: DDPOConfig) -> None:
    saved = json.loads((work / "ddpo_config.json").read_text())
    differ = [k for k in TRAJECTORY_FIELDS if saved.get(k) != asdict(cfg)[k]]
    if differ:
        raise ValueError(f"{work} holds a DDPO run with other settings ({', '.join(differ)}); use another work dir "
                         "or the same settings")


def load_pipeline(cfg: DDPOConfig) -> tuple[Any, Path]:
    """The world's backbone (or `cfg.backbone`) to tune, and its folder."""
    from promptloop.eval.compare import world_and_backbone
    from promptloop.world.backbone import load_backbone

    w, folder = world_and_backbone(cfg.world, cfg.backbone or None)
    pipe = load_backbone(folder)
    check_ddim(pipe.scheduler)
    pipe.unet.requires_grad_(True)
    return pipe, folder


def train_ddpo(cfg: DDPOConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume, or extend) DDPO per `cfg`; save the tuned backbone. Returns where it is and the last metrics."""
    from promptloop.eval.compare import heldout_queries
    from promptloop.rewards.registry import get_reward
    from promptloop.world import get_world, task_reward_name
    from promptloop.world.backbone import save_backbone
    from promptloop.world.train_autoencoder import atomic_save, load_state

    cfg.check()
    w = get_world(cfg.world)
    cfg.world = w.NAME
    reward_name = cfg.reward or task_reward_name(w)
    reward = get_reward(reward_name)  # an unknown name fails here, before the backbone loads
    guidance = float(w.GUIDANCE if cfg.guidance is None else cfg.guidance)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else work / "backbone"
    metrics, ckpt = work / "metrics.jsonl", work / "checkpoint.pt"
    pipe, folder = load_pipeline(cfg)
    optimizer = torch.optim.AdamW([p for p in pipe.unet.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    start = 0
    if ckpt.exists():
        _check_same_run(work, cfg)
        state = load_state(ckpt)
        pipe.unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    _keep_rows_until(metrics, start if ckpt.exists() else -1)
    (work / "ddpo_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    index = json.loads((folder / "model_index.json").read_text())
    # the reward tuned on, the world's task reward, its alignment (logged as "alignment") and the proxy, each once
    eval_rewards = {reward_name: reward}
    for key, name in ((task_reward_name(w), task_reward_name(w)), ("alignment", w.ALIGNMENT_REWARD), ("proxy", "proxy")):
        if name != reward_name:
            eval_rewards[key] = get_reward(name)
    eval_q, eval_seeds = heldout_queries(w, cfg.eval_queries, cfg.seed)
    prompts = [it.caption for it in w.prompt_set("train")]

    def run_eval(step: int) -> dict[str, float]:
        row = {"step": step, "kind": "eval"} | evaluate(pipe, eval_rewards, eval_q, eval_seeds,
                                                        steps=cfg.num_inference_steps, guidance=guidance, seed=cfg.seed)
        _append(metrics, row)
        return row

    last_eval = run_eval(0) if start == 0 else {}
    last: dict[str, Any] = {}
    bar = tqdm(range(start, cfg.steps), desc="ddpo", disable=not progress, initial=start, total=cfg.steps)
    for step in bar:
        t0 = time.perf_counter()
        queries, seeds = step_queries(prompts, cfg, step)
        ro = rollout(pipe, queries, seeds, steps=cfg.num_inference_steps, guidance=guidance, eta=cfg.eta)
        rewards, components = score(reward, ro.images, queries)
        adv = group_advantages(rewards.float(), cfg.images_per_prompt, scale=cfg.scale_rewards)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        stats = update(pipe, optimizer, ro, adv, cfg, guidance, gen)
        last = {"step": step + 1, "kind": "train", "reward": float(rewards.mean()), "reward_std": float(rewards.std()),
                **{f"reward/{k}": v for k, v in components.items()}, **stats,
                "seconds": round(time.perf_counter() - t0, 3)}
        _append(metrics, last)
        bar.set_postfix(reward=f"{last['reward']:.3f}")
        done = step + 1
        if cfg.eval_every and done % cfg.eval_every == 0 or done == cfg.steps:
            last_eval = run_eval(done)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 or done == cfg.steps:
            atomic_save({"unet": pipe.unet.state_dict(), "optimizer": optimizer.state_dict(), "step": done}, ckpt)
    save_backbone(pipe, out_dir, world=w.NAME, denoiser=index.get("promptloop_denoiser"))
    return {"backbone": str(out_dir), "metrics": str(metrics), "steps": cfg.steps, "reward": reward_name,
            "last_train": last, "last_eval": last_eval}


__all__ = ["Rollout", "decode", "evaluate", "guided_output", "rollout", "score", "step_queries", "train_ddpo", "update"]
