"""The world's sampling scheduler: DDIM's deterministic update on timesteps shifted towards high noise.

Backbone A works on 8x8 latents, so its layout, object count and colours form in the first few steps of
uniform ("trailing") DDIM spacing. A timestep shift spends more of the step budget there, as SD3 shifts
its flow sigmas with resolution: the fraction u = t / T of the way from data to noise becomes

    u' = s * u / (1 + (s - 1) * u)        (s = `timestep_shift`; s = 1 is the unshifted trailing spacing)

for every inference step (the first step stays at t = T - 1). Measured with `promptloop world
backbone-eval --timestep-shift S` (n = 256): on the shipped backbone s = 2.5 left train alignment where it
was (0.867 -> 0.864) and lowered the x0-preview accuracy at 50 % of sampling from 0.888 to 0.762 (on the
one before it, train alignment rose 0.833 -> 0.846), so backbones are saved unshifted.

It is diffusers' `EulerDiscreteScheduler` on the same VP schedule: its deterministic Euler step in sigma
space is DDIM's update (Karras et al. 2022, sec. 3), so at s = 1 it samples what DDIM with trailing
spacing samples (mean |difference| 2e-4 on 64 world images, float32). What this class changes of
diffusers: `set_timesteps` called with a step count only, which passes the shifted timesteps to the
parent's `set_timesteps(timesteps=...)`; and the `timestep_shift` entry it keeps in its config. Explicit
`timesteps` or `sigmas` pass through unchanged. Folders saved with it load in plain diffusers as an
unshifted `EulerDiscreteScheduler` (the extra entry is ignored there). The world keeps DDIM itself where the
shift is 1 (`world.backbone.build_sampling_scheduler`): Euler's latents start at sigma_max (about 2e4 on
this schedule), which overflows in fp16.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from diffusers import EulerDiscreteScheduler


def timestep_shift_of(scheduler: Any) -> float:
    """The timestep shift a scheduler samples with (1.0 for any scheduler without one, e.g. DDIM)."""
    return float(scheduler.config.get("timestep_shift", 1.0))


def check_timestep_shift(shift: float) -> float:
    """`shift` as a float, or a ValueError naming it when it is not a positive number (0, negative, NaN)."""
    shift = float(shift)
    if not shift > 0:
        raise ValueError(f"timestep_shift must be > 0, got {shift}")
    return shift


def shifted_timesteps(num_steps: int, shift: float, num_train_timesteps: int = 1000) -> list[int]:
    """Descending integer timesteps of a `num_steps`-step trailing schedule under timestep shift `shift`."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    shift = check_timestep_shift(shift)
    u = np.arange(num_steps, 0, -1, dtype=np.float64) / num_steps  # trailing spacing: 1, ..., 1/n
    u = shift * u / (1.0 + (shift - 1.0) * u)
    t = np.clip(np.round(u * num_train_timesteps).astype(np.int64) - 1, 0, num_train_timesteps - 1)
    return [int(x) for x in t]


class ShiftedEulerScheduler(EulerDiscreteScheduler):
    """`EulerDiscreteScheduler` (trailing spacing) whose step-count schedule is shifted by `timestep_shift`."""

    @classmethod
    def from_config(cls, config: Any = None, return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        config = dict(config or {})
        shift = check_timestep_shift(kwargs.pop("timestep_shift", config.pop("timestep_shift", 1.0)))
        # a DDIM config (older world backbones) carries entries Euler has no use for: drop them quietly
        allowed = set(inspect.signature(EulerDiscreteScheduler.__init__).parameters) | {"_class_name", "_diffusers_version"}
        config = {k: v for k, v in config.items() if k in allowed}
        config["timestep_spacing"] = "trailing"
        out = super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)
        scheduler = out[0] if return_unused_kwargs else out
        scheduler.register_to_config(timestep_shift=shift)
        return out

    @property
    def timestep_shift(self) -> float:
        return timestep_shift_of(self)

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None,
                      timesteps: list[int] | None = None, sigmas: list[float] | None = None) -> None:
        if timesteps is None and sigmas is None and num_inference_steps is not None:
            timesteps = shifted_timesteps(num_inference_steps, self.timestep_shift, self.config.num_train_timesteps)
            return super().set_timesteps(device=device, timesteps=timesteps)
        return super().set_timesteps(num_inference_steps, device, timesteps, sigmas)
