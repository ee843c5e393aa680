"""The world backbones' denoiser and sampler variants, each one entry (issue 31: backbone B of world v3).

A denoiser is a `UNet2DConditionModel` on the worlds' 8x8x8 latents (in/out channels 8) cross-attending to the
384-wide MiniLM + text-binder states; `DENOISERS` maps its name to the model's keyword arguments:

- `a`: backbone A (6,834,376 parameters, measured): two levels (8x8 -> 4x4), widths 64 and 128, two ResNet +
  cross-attention layers per block, 4 attention heads, 32 norm groups.
- `b`: backbone B (6,411,112 parameters, measured): three levels (8x8 -> 4x4 -> 2x2, the most an 8x8 latent takes),
  widths 64, 96 and 128, one layer per block, 8 attention heads, 16 norm groups: shallower per level, one level
  deeper, of about A's size (one 32-row forward pass on one thread: 0.12 s against A's 0.17 s).

A sampler is the scheduler a backbone folder is saved with (`scheduler/`); `SAMPLERS` maps its name to its
builder. Both are on the world's VP cosine schedule (1000 steps, `squaredcos_cap_v2`) with v-prediction and
trailing spacing, so one trained UNet samples with either:

- `ddim`: `world.backbone.build_sampling_scheduler()` (DDIM, or DDIM's update on shifted timesteps).
- `dpm`: `DPMSolverMultistepScheduler` (DPM-Solver++, second order, first order at the last steps).

`load_backbone` loads the scheduler classes in `SCHEDULER_CLASSES` only. This module imports neither torch nor
diffusers at import time (the CLI's parser reads the names).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

_COMMON = {"sample_size": 8, "in_channels": 8, "out_channels": 8, "cross_attention_dim": 384}

DENOISERS: dict[str, dict[str, Any]] = {
    "a": {**_COMMON, "block_out_channels": (64, 128), "layers_per_block": 2,
          "down_block_types": ("CrossAttnDownBlock2D",) * 2, "up_block_types": ("CrossAttnUpBlock2D",) * 2,
          "attention_head_dim": 4, "norm_num_groups": 32},
    "b": {**_COMMON, "block_out_channels": (64, 96, 128), "layers_per_block": 1,
          "down_block_types": ("CrossAttnDownBlock2D",) * 3, "up_block_types": ("CrossAttnUpBlock2D",) * 3,
          "attention_head_dim": 8, "norm_num_groups": 16},
}
DEFAULT_DENOISER = "a"


def _ddim() -> Any:
    from promptloop.world.backbone import build_sampling_scheduler

    return build_sampling_scheduler()


def _dpm() -> Any:
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        algorithm_type="dpmsolver++",
        solver_order=2,
    )


SAMPLERS: dict[str, Callable[[], Any]] = {"ddim": _ddim, "dpm": _dpm}
DEFAULT_SAMPLER = "ddim"
# the scheduler classes a backbone folder's scheduler/scheduler_config.json may name
SCHEDULER_CLASSES = ("DDIMScheduler", "ShiftedEulerScheduler", "DPMSolverMultistepScheduler")


def check_denoiser(name: str) -> str:
    """`name` when it is a denoiser of `DENOISERS`, else a ValueError listing them."""
    if name not in DENOISERS:
        raise ValueError(f"unknown denoiser {name!r}; expected one of {sorted(DENOISERS)}")
    return name


def check_sampler(name: str) -> str:
    """`name` when it is a sampler of `SAMPLERS`, else a ValueError listing them."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return name


def build_denoiser(name: str = DEFAULT_DENOISER) -> Any:
    """A freshly initialised UNet of denoiser `name`."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**DENOISERS[check_denoiser(name)])


def build_sampler(name: str = DEFAULT_SAMPLER) -> Any:
    """The sampling scheduler of sampler `name`."""
    return SAMPLERS[check_sampler(name)]()


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples -> lists, as a config read from JSON has them


def denoiser_of(config: Mapping[str, Any]) -> str | None:
    """The name of the denoiser whose keyword arguments a UNet config has (None: none of `DENOISERS`)."""
    for name, kwargs in DENOISERS.items():
        if all(_plain(config.get(k)) == _plain(v) for k, v in kwargs.items()):
            return name
    return None


def same_architecture(config: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two UNet configs describe the same architecture (their entries other than `_...` metadata, where
    both have them)."""
    keys = [k for k in config if not k.startswith("_") and k in other]
    return all(_plain(config[k]) == _plain(other[k]) for k in keys)
