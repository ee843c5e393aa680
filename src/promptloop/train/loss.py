"""The token-level GRPO objective (PPO-clipped surrogate minus beta * k3 KL to a reference policy).

Per completion token t of refinement action a (all K actions of a trajectory carry its advantage A)::

    ratio_t = exp(logp_new_t - logp_old_t)
    surr_t  = min(ratio_t * A, clip(ratio_t, 1 - eps_low, 1 + eps_high) * A)
    kl_t    = exp(logp_ref_t - logp_new_t) - (logp_ref_t - logp_new_t) - 1          (k3, >= 0)
    loss_t  = -surr_t + beta * kl_t

and the per-token losses are aggregated by `loss_type` (the names TRL uses):

- ``dapo`` (default): token-level mean over all tokens of the batch, sum_t loss_t / N_tokens;
- ``grpo``: mean over each action's own tokens, then mean over actions (long rewrites weigh less per
  token; the original GRPO paper);
- ``dr_grpo``: sum_t loss_t / (N_actions * L_max), a constant normaliser (Dr. GRPO, no length bias).

Under gradient accumulation or several processes each part is divided by the GLOBAL count
(`normaliser`: tokens, actions or actions * L_max), so summing the parts' gradients gives exactly the
full-batch gradient.

Clip fraction (as TRL): the share of tokens whose gradient the clip removes, i.e. ratio < 1 - eps_low
with A < 0, or ratio > 1 + eps_high with A > 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

LOSS_TYPES = ("dapo", "grpo", "dr_grpo")


def kl_k3(logp_new: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(new || ref) per token: exp(ref - new) - (ref - new) - 1."""
    d = logp_ref - logp_new
    return torch.exp(d) - d - 1


@dataclass
class LossStats:
    """Sums over the tokens of one (micro-)batch; divide by `tokens` for means."""

    tokens: int
    ratio_sum: float
    clipped: float
    kl_sum: float
    surrogate_sum: float
    ratio_min: float
    ratio_max: float


def grpo_token_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_eps: float,
    clip_eps_high: float | None = None,
    beta: float = 0.0,
    logp_ref: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss for flat tensors of tokens (advantage repeated per token). Returns (loss_t, parts)."""
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    logp_old = logp_old.to(logp_new.device, logp_new.dtype)
    advantages = advantages.to(logp_new.device, logp_new.dtype)
    ratio = torch.exp(logp_new - logp_old)
    clipped_ratio = torch.clamp(ratio, 1 - clip_eps, 1 + eps_high)
    surrogate = torch.minimum(ratio * advantages, clipped_ratio * advantages)
    loss = -surrogate
    kl = torch.zeros_like(loss)
    if beta > 0:
        if logp_ref is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        kl = kl_k3(logp_new, logp_ref.to(logp_new.device, logp_new.dtype))
        loss = loss + beta * kl
    is_clipped = ((ratio < 1 - clip_eps) & (advantages < 0)) | ((ratio > 1 + eps_high) & (advantages > 0))
    return loss, {"ratio": ratio.detach(), "clipped": is_clipped, "kl": kl.detach(), "surrogate": surrogate.detach()}


def grpo_loss(
    logp_new: Sequence[torch.Tensor],
    logp_old: Sequence[torch.Tensor],
    advantages: Sequence[float] | torch.Tensor,
    *,
    clip_eps: float,
    clip_eps_high: float | None = None,
    beta: float = 0.0,
    logp_ref: Sequence[torch.Tensor] | None = None,
    normaliser: int | float | None = None,
    loss_type: str = "dapo",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """GRPO loss over a list of actions (per-action 1-D token log-probs and one advantage per action).

    Returns (sum of weighted per-token losses / normaliser, stats). `normaliser` defaults to this batch's
    count for `loss_type` (tokens for "dapo", actions for "grpo", actions * `max_tokens` for "dr_grpo");
    pass the global count under accumulation / several processes.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if loss_type == "dr_grpo" and not max_tokens:
        raise ValueError("loss_type 'dr_grpo' needs max_tokens (the longest completion allowed)")
    if not (len(logp_new) == len(logp_old) == len(advantages)):
        raise ValueError(f"{len(logp_new)} new, {len(logp_old)} old log-prob rows for {len(advantages)} advantages")
    if logp_ref is not None and len(logp_ref) != len(logp_new):
        raise ValueError("one reference log-prob row per action is needed")
    for i, (n, o) in enumerate(zip(logp_new, logp_old, strict=True)):
        if n.shape != o.shape:
            raise ValueError(f"action {i}: {tuple(n.shape)} new log-probs vs {tuple(o.shape)} old ones")
    adv = torch.as_tensor(advantages, dtype=torch.float32).tolist() if not isinstance(advantages, list) \
        else [float(a) for a in advantages]
    tokens = sum(int(n.numel()) for n in logp_new)
    if tokens == 0:
        zero = sum((n.sum() for n in logp_new), torch.zeros(()))
        return zero * 0.0, LossStats(0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0)
    new = torch.cat([n.reshape(-1) for n in logp_new])
    device = new.device
    old = torch.cat([o.reshape(-1).to(device) for o in logp_old])
    ref = torch.cat([r.reshape(-1).to(device) for r in logp_ref]) if logp_ref is not None else None
    adv_tok = torch.cat([torch.full((int(n.numel()),), a, device=device) for n, a in zip(logp_new, adv, strict=True)])
    loss_t, parts = grpo_token_loss(new, old, adv_tok, clip_eps=clip_eps, clip_eps_high=clip_eps_high, beta=beta,
                                    logp_ref=ref)
    if loss_type == "grpo":  # each action's tokens averaged first
        loss_t = loss_t / torch.cat([torch.full((int(n.numel()),), float(max(1, n.numel())), device=device)
                                     for n in logp_new])
        default = len(logp_new)
    else:
        default = tokens if loss_type == "dapo" else len(logp_new) * int(max_tokens or 1)
    norm = float(default if normaliser is None else normaliser)
    stats = LossStats(
        tokens=tokens,
        ratio_sum=float(parts["ratio"].sum()),
        clipped=float(parts["clipped"].float().sum()),
        kl_sum=float(parts["kl"].sum()),
        surrogate_sum=float(parts["surrogate"].sum()),
        ratio_min=float(parts["ratio"].min()),
        ratio_max=float(parts["ratio"].max()),
    )
    return loss_t.sum() / norm, stats
