"""Supervised fine-tuning of a world policy on synthetic rewrites: the loop every world's `train_policy` shares.

SFT minimises the negative log-likelihood of target rewrites computed through `VLMPolicy.logprobs` (the very
code path GRPO uses later) at temperature 1, with AdamW, a linear warm-up and a cosine decay to 5 % of the peak
rate, gradients clipped at norm 1. It is plain next-token likelihood: a policy's decoding constraint is detached
for the loop and re-attached after it (every SFT target lies in the constraint's language; each world tests it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from promptloop.policy.base import PolicyInput
from promptloop.policy.vlm import VLMPolicy

BatchFn = Callable[[], tuple[PolicyInput, list[str]]]  # one SFT batch: the policy inputs and their target rewrites


def target_ids(policy: VLMPolicy, targets: list[str]) -> list[torch.Tensor]:
    """The token ids of each target rewrite followed by end-of-turn."""
    eos = policy.tokenizer.eos_token_id
    return [torch.tensor(policy.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]) for t in targets]


def sft_loop(policy: VLMPolicy, next_batch: BatchFn, steps: int, lr: float, warmup: int, progress_bar: bool = True,
             log_every: int = 100, desc: str = "world policy SFT") -> dict[str, Any]:
    """Train `policy.model` in place for `steps` batches of `next_batch()`; returns the final loss (mean of the
    last 50 steps), the loss curve (mean per `log_every` steps) and the wall time."""
    torch.set_flush_denormal(True)  # subnormal Adam moments are very slow on x86 CPUs
    constraint, policy.constraint = policy.constraint, None  # SFT: plain next-token likelihood (module docstring)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0 = time.time()
    losses: list[float] = []
    curve: list[tuple[int, float]] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress_bar)
    try:
        for step in bar:
            inp, targets = next_batch()
            lps = policy.logprobs(inp, target_ids(policy, targets), requires_grad=True, temperature=1.0)
            loss = -torch.cat(lps).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if log_every and (step + 1) % log_every == 0:
                curve.append((step + 1, round(sum(losses[-log_every:]) / log_every, 4)))
                if not progress_bar:
                    print(f"step {step + 1}: loss {curve[-1][1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
    finally:
        policy.constraint = constraint
    return {"final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])), "loss_curve": curve,
            "sft_wall_s": round(time.time() - t0, 1)}


__all__ = ["BatchFn", "sft_loop", "target_ids"]
