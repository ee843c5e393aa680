"""`DDPOConfig`: DDPO (Black et al. 2023, "Training Diffusion Models with Reinforcement Learning") on a world
backbone's UNet, CPU-sized by default (`promptloop world ddpo`)."""

from __future__ import annotations

from dataclasses import dataclass

from promptloop.validation import check_limit
from promptloop.world import DEFAULT_WORLD

SCALE_MODES = ("group", "batch", "none")
FIELD_LIMITS: dict[str, str] = {  # numeric field -> its kind in `validation.LIMITS` (the one table of ranges)
    "seed": "seed", "steps": "train_steps", "prompts_per_step": "count", "images_per_prompt": "count",
    "num_inference_steps": "sampling_steps", "guidance": "guidance", "eta": "unit", "adv_clip_max": "clip",
    "clip_range": "clip", "timestep_fraction": "unit", "num_inner_epochs": "iterations",
    "updates_per_epoch": "iterations", "micro_batch": "batch", "learning_rate": "learning_rate",
    "weight_decay": "weight_decay", "max_grad_norm": "grad_norm", "eval_every": "train_steps0",
    "eval_queries": "count", "checkpoint_every": "train_steps0", "threads": "threads",
}


@dataclass
class DDPOConfig:
    world: str = DEFAULT_WORLD  # the embedded world: its backbone is tuned, its training queries are the prompts
    backbone: str = ""  # the backbone folder to tune ("": the world's shipped backbone A)
    reward: str = ""  # registered reward name the UNet is tuned on ("": the world's task reward)
    work_dir: str = "runs/ddpo"  # checkpoint, metrics.jsonl and the tuned backbone (rerun to resume)
    out_dir: str = ""  # where the tuned backbone is saved ("": WORK_DIR/backbone)
    seed: int = 0  # seeds the queries drawn, the sampling noise and the update order of every step
    steps: int = 100  # DDPO steps: one rollout batch, its rewards, then the update
    prompts_per_step: int = 8  # training queries drawn per step
    images_per_prompt: int = 4  # images per query; advantages are centred within each query's images
    num_inference_steps: int = 20  # denoising steps of a rollout (the backbone's DDIM schedule)
    guidance: float | None = None  # classifier-free guidance scale (None: the world's)
    eta: float = 1.0  # DDIM's eta at rollout (> 0: each step is a Gaussian, the policy; 1: DDPM's noise level)
    scale_rewards: str = "batch"  # std dividing the query-centred rewards: group, batch or none (train.advantages)
    adv_clip_max: float = 5.0  # advantages clipped to [-adv_clip_max, adv_clip_max]
    clip_range: float = 1e-4  # PPO clip of the per-step likelihood ratio (DDPO's value)
    timestep_fraction: float = 1.0  # share of each trajectory's denoising steps trained on (drawn per sample)
    num_inner_epochs: int = 1  # passes over each rollout batch (the first is on-policy)
    updates_per_epoch: int = 1  # optimizer steps per pass (the batch split into this many chunks)
    micro_batch: int = 16  # samples per forward/backward pass (gradient accumulation; memory only)
    learning_rate: float = 1e-4  # AdamW learning rate of the UNet (all its weights)
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping norm
    eval_every: int = 10  # held-out evaluation every N steps and at the end (0: at the start and end only)
    eval_queries: int = 64  # held-out queries per evaluation (eval.compare's heldout set, one seed each)
    checkpoint_every: int = 10  # steps between atomic checkpoints (and at the end)
    threads: int = 0  # torch CPU threads (0: leave torch's default)

    def check(self) -> DDPOConfig:
        """Every number finite and in its range (`validation.LIMITS`), the choices known; ValueError naming the
        field otherwise. Returns self."""
        for name, kind in FIELD_LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                check_limit(value, kind, name)
        if not self.eta > 0:
            raise ValueError(f"eta: DDPO samples its rollouts stochastically, so it must be > 0, got {self.eta}")
        if not self.timestep_fraction > 0:
            raise ValueError(f"timestep_fraction must be > 0, got {self.timestep_fraction}")
        if self.images_per_prompt < 2:
            raise ValueError(f"images_per_prompt must be >= 2 (advantages are centred within a query's images), "
                             f"got {self.images_per_prompt}")
        if self.scale_rewards not in SCALE_MODES:
            raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_MODES)}, got {self.scale_rewards!r}")
        if self.updates_per_epoch > self.prompts_per_step * self.images_per_prompt:
            raise ValueError(f"updates_per_epoch {self.updates_per_epoch} is more than the "
                             f"{self.prompts_per_step * self.images_per_prompt} samples of a step")
        return self


__all__ = ["DDPOConfig"]
