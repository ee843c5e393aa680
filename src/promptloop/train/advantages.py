"""Group-relative advantages (GRPO).

For a group of G trajectories of the same query with terminal rewards r_1..r_G::

    A_i = (r_i - mean(r)) / (std(r) + eps)      (scale=True; std with correction 0)
    A_i =  r_i - mean(r)                         (scale=False, "Dr. GRPO")

A group whose rewards have (numerically) no spread gets exactly zero advantage: never NaN, never a
blown-up ratio of float noise. Groups are rows of a (num_groups, G) tensor, or consecutive runs of G in a
flat tensor.
"""

from __future__ import annotations

import torch

ZERO_SPREAD = 1e-6  # a group whose reward std is at most this counts as having no spread


def group_advantages(rewards: torch.Tensor, group_size: int | None = None, *, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """Advantages of `rewards` ((num_groups, G), or flat with `group_size`), same shape as the input.

    Zero-spread groups (std <= ZERO_SPREAD) get 0 everywhere.
    """
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
    adv = centred / (std + eps) if scale else centred
    adv = torch.where(std <= ZERO_SPREAD, torch.zeros_like(adv), adv)
    return adv.reshape(-1) if flat else adv


def group_stats(rewards: torch.Tensor, group_size: int) -> dict[str, float]:
    """Mean within-group std and the fraction of zero-spread groups (diagnostics)."""
    r = rewards.detach().float().view(-1, group_size)
    std = r.std(dim=1, correction=0)
    return {"reward_group_std": float(std.mean()), "zero_spread_groups": float((std <= ZERO_SPREAD).float().mean())}
