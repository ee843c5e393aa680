"""Classifier-free guidance in a limited interval of sampling, for the CFG-batch pipelines of the family table.

Kynkäänniemi et al. 2024 ("Applying guidance in a limited interval improves sample and distribution quality in
diffusion models") guide only part of the noise levels. `guidance_interval(pipe, start)` leaves the steps before
the fraction `start` of sampling unguided: there the guided prediction is the conditional one alone.

How: SD 1.x / 2.x, SDXL and SD3 run their denoiser once per step on the batch cat([unconditional, conditional])
(`families.py`) and guide with `uncond + scale * (cond - uncond)`. A forward hook on the denoiser replaces the
unconditional half of its output by the conditional half at the unguided steps, so that the pipeline's own
guidance gives `cond` exactly, whatever its scale (and `guidance_rescale`, which rescales towards `cond`, is then
a no-op). The step is found from the timestep the denoiser is called with, in the scheduler's `timesteps`; the
pipeline's call is otherwise untouched, so it composes with the PromptLoop sampler's hooks and callback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from promptloop.loop.families import table_family
from promptloop.validation import check_limit

CFG_BATCH_FAMILIES = ("sd", "sdxl", "sd3")  # denoiser called on cat([uncond, cond]); FLUX has no CFG batch


def unguided_steps(start: float, num_steps: int) -> int:
    """How many of the first sampling steps a guidance interval starting at fraction `start` leaves unguided."""
    return min(round(start * num_steps), num_steps)


def _step_index(timesteps: Any, timestep: Any) -> int:
    """The index in the scheduler's `timesteps` of the one the denoiser is called with."""
    t = torch.as_tensor(timestep, dtype=torch.float64).reshape(-1)[0]
    return int(torch.argmin((torch.as_tensor(timesteps, dtype=torch.float64) - t).abs()))


@contextmanager
def guidance_interval(pipe: Any, start: float) -> Iterator[None]:
    """Within the block, each call of `pipe` guides only from the fraction `start` of its sampling steps on.

    `start` 0 changes nothing; 1 leaves every step unguided. Raises ValueError for a pipeline whose denoiser is not
    called on a CFG batch."""
    start = check_limit(start, "unit", "guidance_from")
    if not start:
        yield
        return
    spec = table_family(pipe)
    if spec is None or spec.name not in CFG_BATCH_FAMILIES:
        raise ValueError(f"a guidance interval needs a pipeline that guides a CFG batch ({', '.join(CFG_BATCH_FAMILIES)} "
                         f"families); {type(pipe).__name__} is not one")
    denoiser = getattr(pipe, spec.denoiser)

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if not pipe.do_classifier_free_guidance:
            return None
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[1]
        timesteps = pipe.scheduler.timesteps
        if _step_index(timesteps, timestep) >= unguided_steps(start, len(timesteps)):
            return None
        pred = output[0] if isinstance(output, tuple) else output.sample
        _, cond = pred.chunk(2)
        unguided = torch.cat([cond, cond])
        if isinstance(output, tuple):
            return (unguided, *output[1:])
        output.sample = unguided
        return output

    handle = denoiser.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


__all__ = ["CFG_BATCH_FAMILIES", "guidance_interval", "unguided_steps"]
