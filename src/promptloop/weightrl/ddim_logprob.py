"""The log-density of one stochastic DDIM step under diffusers' `DDIMScheduler` (what DDPO differentiates).

With eta > 0 a DDIM step (Song et al. 2021, eq. 12 and 16) is a Gaussian,
``x_{t-1} ~ N(mu_theta(x_t, t), sigma_t^2 I)`` with

    mu = sqrt(a_prev) * x0_pred + sqrt(1 - a_prev - sigma_t^2) * eps_pred,
    sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)),

``a`` the scheduler's `alphas_cumprod` (its `final_alpha_cumprod` past the last step) and x0_pred / eps_pred read
from the model output by the scheduler's `prediction_type` (epsilon, sample or v_prediction), x0_pred clipped as
the scheduler clips it. This is `DDIMScheduler.step`'s arithmetic (a test checks the two agree), written here for a
timestep per sample (DDPO trains a shuffled timestep per sample) and with gradients to the model output.

The log-density is averaged over the latent's elements, as ddpo-pytorch does, so its scale does not depend on
the latent's size.
"""

from __future__ import annotations

import math
from typing import Any

import torch

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def check_ddim(scheduler: Any) -> None:
    """TypeError unless `scheduler` is a diffusers DDIMScheduler (the only sampler whose step this densifies), and
    ValueError for dynamic thresholding (a per-sample quantile clip: no closed-form density is written for it)."""
    from diffusers import DDIMScheduler

    if not isinstance(scheduler, DDIMScheduler):
        raise TypeError(f"DDPO samples with DDIM (eta > 0); this pipeline's scheduler is {type(scheduler).__name__}")
    if scheduler.config.thresholding:
        raise ValueError("DDPO's DDIM log-density does not cover dynamic thresholding (scheduler thresholding=True)")


def _per_sample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def ddim_step_with_logprob(scheduler: Any, model_output: torch.Tensor, timesteps: torch.Tensor | int,
                           sample: torch.Tensor, eta: float, prev_sample: torch.Tensor | None = None,
                           generator: torch.Generator | list[torch.Generator] | None = None,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_{t-1}, log p(x_{t-1} | x_t)) of one DDIM step with noise scale `eta` > 0 (module docstring).

    `timesteps`: one timestep for the batch or one per sample (the scheduler's `set_timesteps` must have run).
    `prev_sample` given: its log-density (the sample taken at rollout, detached); else a new one is drawn with
    `generator` (one per sample: the sample's noise does not depend on the batch). Returns the sample (detached)
    and the log-density per sample, shape (B,), differentiable in `model_output`."""
    check_ddim(scheduler)
    if not eta > 0:
        raise ValueError(f"a DDIM step has a density only with eta > 0, got {eta}")
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(...) before stepping")
    device = sample.device
    t = torch.as_tensor(timesteps, device=device, dtype=torch.long).reshape(-1).expand(sample.shape[0])
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(device=device, dtype=torch.float64)
    a_t = alphas[t]
    a_prev = torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)],
                         torch.as_tensor(float(scheduler.final_alpha_cumprod), dtype=torch.float64, device=device))
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std64 = eta * variance.sqrt()
    # the coefficients in float64, the direction's clamped at 0: in float32, 1 - a_prev - sigma^2 rounds below 0 at
    # the first step of a cosine schedule (alphas_cumprod ~ 1e-9 there; diffusers' own step then returns NaN)
    direction = (1 - a_prev - std64**2).clamp(min=0).sqrt()
    sa_t, sb_t = (_per_sample(v, sample) for v in (a_t.sqrt(), (1 - a_t).sqrt()))
    std, sa_prev, direction = (_per_sample(v, sample) for v in (std64, a_prev.sqrt(), direction))
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0, eps = (sample - sb_t * model_output) / sa_t, model_output
    elif kind == "sample":
        x0, eps = model_output, (sample - sa_t * model_output) / sb_t
    elif kind == "v_prediction":
        x0, eps = sa_t * sample - sb_t * model_output, sa_t * model_output + sb_t * sample
    else:
        raise ValueError(f"prediction_type {kind!r} is not one of epsilon, sample, v_prediction")
    if scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)
    mean = sa_prev * x0 + direction * eps
    if prev_sample is None:
        from diffusers.utils.torch_utils import randn_tensor

        noise = randn_tensor(sample.shape, generator=generator, device=device, dtype=sample.dtype)
        prev_sample = mean.detach() + std * noise
    prev_sample = prev_sample.detach()
    log_prob = -((prev_sample - mean) ** 2) / (2 * std**2) - std.log() - LOG_SQRT_2PI
    return prev_sample, log_prob.mean(dim=tuple(range(1, sample.ndim)))


__all__ = ["check_ddim", "ddim_step_with_logprob"]
