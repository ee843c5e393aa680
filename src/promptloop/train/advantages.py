"""Group-relative advantages (GRPO).

For a group of G trajectories of the same query with terminal rewards r_1..r_G, centring is always per
group; the scale (TRL's `scale_rewards`) is one of::

    A_i = (r_i - mean_group(r)) / (std_group(r) + eps)   "group" (GRPO; std with correction 0)
    A_i = (r_i - mean_group(r)) / (std_batch(r) + eps)   "batch" (std of every reward of the batch,
                                                                 all groups and processes together)
    A_i =  r_i - mean_group(r)                           "none"  (Dr. GRPO)

A group whose rewards have (numerically) no spread gets exactly zero advantage in every mode: never NaN,
never a blown-up ratio of float noise. Groups are rows of a (num_groups, G) tensor, or consecutive runs of
G in a flat tensor.
"""

from __future__ import annotations

from typing import Literal

import torch

ZERO_SPREAD = 1e-6  # a group whose reward std is at most this counts as having no spread
ScaleRewards = Literal["group", "batch", "none"]
SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
LEGACY_SCALE_REWARDS = {True: "group", False: "none"}  # the old boolean form of the setting


def scale_mode(scale: str | bool) -> str:
    """'group' / 'batch' / 'none' from a mode name or the old boolean (True -> 'group', False -> 'none')."""
    if isinstance(scale, bool):
        return LEGACY_SCALE_REWARDS[scale]
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale must be one of {', '.join(SCALE_REWARDS)} (or a bool), got {scale!r}")
    return scale


def group_advantages(rewards: torch.Tensor, group_size: int | None = None, *, scale: str | bool = "group",
                     eps: float = 1e-4, batch_std: float | None = None) -> torch.Tensor:
    """Advantages of `rewards` ((num_groups, G), or flat with `group_size`), same shape as the input.

    `scale`: "group", "batch" or "none" (see the module docstring; True / False mean "group" / "none").
    `batch_std`: with scale="batch", the std (correction 0) of the whole batch when `rewards` is only a
    part of it (one process's groups); default: the std of `rewards`. Zero-spread groups
    (std <= ZERO_SPREAD) get 0 everywhere.
    """
    mode = scale_mode(scale)
    r = rewards.detach().float()
    flat = r.ndim == 1
    if flat:
        if group_size is None or group_size < 1 or r.numel() % group_size:
            raise ValueError(f"{r.numel()} rewards do not split into groups of {group_size}")
        r = r.view(-1, group_size)
    elif r.ndim != 2:
        raise ValueError(f"rewards must be 1-D (with group_size) or 2-D (groups, G), got shape {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("non-finite reward in a group; check the reward model")
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, correction=0)
    centred = r - mean
    if mode == "group":
        adv = centred / (std + eps)
    elif mode == "batch":
        b_std = float(r.std(correction=0)) if batch_std is None else float(batch_std)
        adv = centred / (b_std + eps)
    else:
        adv = centred
    adv = torch.where(std <= ZERO_SPREAD, torch.zeros_like(adv), adv)
    return adv.reshape(-1) if flat else adv


def group_stats(rewards: torch.Tensor, group_size: int) -> dict[str, float]:
    """Mean within-group std and the fraction of zero-spread groups (diagnostics)."""
    r = rewards.detach().float().view(-1, group_size)
    std = r.std(dim=1, correction=0)
    return {"reward_group_std": float(std.mean()), "zero_spread_groups": float((std <= ZERO_SPREAD).float().mean())}
