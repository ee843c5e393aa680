"""The Tweedie estimate x0_hat at a sampling step, for any diffusers scheduler.

Most schedulers return it from `step()` (`pred_original_sample`; LCM/TCD-style: `denoised`). Flow
matching (FlowMatchEulerDiscrete: SD3, FLUX), DPMSolverMultistep, UniPC and PNDM do not; for those it
is computed from the model output the step received:

- flow matching:      x0 = x_t - sigma_t * v
- DDPM-type (VP):     alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), then by `prediction_type`:
    epsilon:          x0 = (x_t - sigma_t * eps) / alpha_t
    v_prediction:     x0 = alpha_t * x_t - sigma_t * v
    sample:           x0 = model_output
  where (alpha_t, sigma_t) come from the scheduler's own sigma at the current step when it keeps one
  (DPMSolver, UniPC: `_sigma_to_alpha_sigma_t(sigmas[step_index])`, which also covers their Karras or
  flow-sigma variants) and from `alphas_cumprod[t]` otherwise (PNDM, DDIM, DDPM).

`StepRecorder` wraps `scheduler.step` for the duration of a sampling call and keeps what is needed
to produce x0 for the latest step, without changing the step's result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch


def is_flow_matching(scheduler: Any) -> bool:
    """True for rectified-flow schedulers (x_t = (1 - sigma) x0 + sigma * noise, model predicts v)."""
    config = scheduler.config
    return (
        type(scheduler).__name__.startswith("FlowMatch")
        or config.get("prediction_type") == "flow_prediction"
        or bool(config.get("use_flow_sigmas", False))
    )


def current_step_index(scheduler: Any, timestep: Any) -> int | None:
    """The index into `scheduler.sigmas` that `step(.., timestep, ..)` is about to use, or None if the scheduler
    does not index by step (PNDM, DDIM, DDPM). Initialises the index exactly as `step` itself would."""
    if not hasattr(scheduler, "step_index") or not hasattr(scheduler, "sigmas"):
        return None
    if scheduler.step_index is None and hasattr(scheduler, "_init_step_index"):
        scheduler._init_step_index(timestep)
    return scheduler.step_index


def _bcast(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, device=like.device, dtype=torch.float32)
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim)) if t.ndim else t


def predict_x0(
    scheduler: Any,
    model_output: torch.Tensor,
    timestep: torch.Tensor | float | int,
    sample: torch.Tensor,
    step_index: int | None = None,
) -> torch.Tensor:
    """Compute x0_hat from the model output at (timestep, sample) with the scheduler's parametrisation.

    `step_index` is the index into `scheduler.sigmas` for sigma-indexed schedulers (see
    `current_step_index`); it must be given for flow matching and is used for DPMSolver/UniPC when given.
    Computed in float32, returned in `sample`'s dtype.
    """
    x = sample.float()
    out = model_output.float()
    if is_flow_matching(scheduler) and not hasattr(scheduler, "_sigma_to_alpha_sigma_t"):
        if step_index is None:
            step_index = current_step_index(scheduler, timestep)
        sigma = _bcast(scheduler.sigmas[step_index], x)
        return (x - sigma * out).to(sample.dtype)

    if step_index is not None and hasattr(scheduler, "sigmas") and hasattr(scheduler, "_sigma_to_alpha_sigma_t"):
        alpha_t, sigma_t = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[step_index])
    else:
        alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None:
            raise ValueError(f"cannot compute x0 for {type(scheduler).__name__}: no sigmas and no alphas_cumprod")
        abar = alphas_cumprod[int(torch.as_tensor(timestep).round().long())].float()
        alpha_t, sigma_t = abar.sqrt(), (1 - abar).sqrt()
    alpha_t, sigma_t = _bcast(alpha_t, x), _bcast(sigma_t, x)

    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if prediction_type == "epsilon":
        x0 = (x - sigma_t * out) / alpha_t
    elif prediction_type == "v_prediction":
        x0 = alpha_t * x - sigma_t * out
    elif prediction_type == "sample":
        x0 = out
    elif prediction_type == "flow_prediction":
        x0 = x - sigma_t * out
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r} for {type(scheduler).__name__}")
    return x0.to(sample.dtype)


@dataclass
class _LastStep:
    model_output: torch.Tensor
    timestep: Any
    sample: torch.Tensor
    step_index: int | None
    x0: torch.Tensor | None  # from the step's own output, when it has one


class StepRecorder:
    """Context manager: wraps `scheduler.step` to remember the latest step and expose its x0 estimate.

    The wrapped step calls the original once with the same arguments (`return_dict=True`) and returns
    exactly what the caller asked for (an output object or its tuple), and keeps the original's signature,
    so sampling is unchanged.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.last: _LastStep | None = None
        self._had_instance_step = False
        self._saved: Any = None

    def __enter__(self) -> StepRecorder:
        scheduler = self.scheduler
        self._had_instance_step = "step" in vars(scheduler)
        self._saved = vars(scheduler).get("step")
        original = scheduler.step

        # functools.wraps keeps the original signature visible to `inspect.signature`: pipelines pass `eta`
        # and `generator` only to a step whose signature names them (prepare_extra_step_kwargs), so a bare
        # (*args, **kwargs) wrapper would silently make DDIM(eta > 0) and ancestral samplers deterministic
        # and unseeded.
        @functools.wraps(original)
        def step(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return_dict = kwargs.pop("return_dict", True)
            index = current_step_index(scheduler, timestep)
            output = original(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            x0 = getattr(output, "pred_original_sample", None)
            if x0 is None:
                x0 = getattr(output, "denoised", None)
            self.last = _LastStep(model_output, timestep, sample, index, x0)
            return output if return_dict else output.to_tuple()

        scheduler.step = step
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._had_instance_step:
            self.scheduler.step = self._saved
        else:
            del self.scheduler.step

    def x0(self) -> torch.Tensor:
        """x0_hat of the latest step: the step's own output where it has one, else computed."""
        if self.last is None:
            raise RuntimeError("no scheduler step has run yet")
        last = self.last
        if last.x0 is None:
            last.x0 = predict_x0(self.scheduler, last.model_output, last.timestep, last.sample, last.step_index)
        return last.x0
