"""`loop.guidance_interval`: classifier-free guidance only from a fraction of sampling on."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from promptloop.loop.guidance_interval import guidance_interval, unguided_steps
from promptloop.loop.sampler import PromptLoopSampler
from promptloop.testing.pipelines import tiny_flux_pipeline, tiny_sd3_pipeline, tiny_sd_pipeline
from promptloop.validation import InputError

STEPS, SCALE = 6, 5.0


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _record(pipe: Any, denoiser: Any) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    """Hooks recording the denoiser's raw CFG-batch outputs (registered before the interval's hook, so they see
    them unchanged) and the guided predictions the scheduler steps with."""
    raw: list[torch.Tensor] = []
    guided: list[torch.Tensor] = []
    handle = denoiser.register_forward_hook(
        lambda m, a, out: raw.append((out[0] if isinstance(out, tuple) else out.sample).detach().clone()))
    step = pipe.scheduler.step

    def recording_step(model_output: torch.Tensor, *a: Any, **k: Any) -> Any:
        guided.append(model_output.detach().clone())
        return step(model_output, *a, **k)

    pipe.scheduler.step = recording_step
    return raw, guided, handle


@pytest.mark.parametrize("make", [tiny_sd_pipeline, tiny_sd3_pipeline], ids=["sd", "sd3"])
@pytest.mark.parametrize("start", [0.0, 0.34, 0.5])
def test_steps_before_the_start_use_the_conditional_prediction_alone(make: Any, start: float) -> None:
    pipe = make()
    denoiser = pipe.unet if hasattr(pipe, "unet") else pipe.transformer
    raw, guided, handle = _record(pipe, denoiser)
    try:
        with guidance_interval(pipe, start):
            pipe(["a red circle"], num_inference_steps=STEPS, guidance_scale=SCALE, generator=_generator(),
                 output_type="latent")
    finally:
        handle.remove()
        del pipe.scheduler.step
    assert len(raw) == len(guided) == STEPS
    k = unguided_steps(start, STEPS)
    assert k == round(start * STEPS)
    for i, (out, used) in enumerate(zip(raw, guided, strict=True)):
        uncond, cond = out.chunk(2)
        expected = cond if i < k else uncond + SCALE * (cond - uncond)
        torch.testing.assert_close(used, expected, rtol=1e-5, atol=1e-5, msg=f"step {i}, start {start}")
        assert not torch.allclose(uncond, cond)  # the two halves differ: the test can tell them apart
    assert not denoiser._forward_hooks  # the interval's hook is gone after the block


def test_an_interval_starting_at_1_samples_as_no_guidance() -> None:
    pipe = tiny_sd_pipeline()
    kwargs = {"num_inference_steps": STEPS, "output_type": "np"}
    with guidance_interval(pipe, 1.0):
        unguided = pipe(["a red circle"], guidance_scale=SCALE, generator=_generator(), **kwargs).images
    plain = pipe(["a red circle"], guidance_scale=1.0, generator=_generator(), **kwargs).images
    guided = pipe(["a red circle"], guidance_scale=SCALE, generator=_generator(), **kwargs).images
    assert abs(unguided - plain).max() < 1e-4
    assert abs(unguided - guided).max() > 1e-3


def test_it_composes_with_the_promptloop_sampler_and_a_prompt_swap() -> None:
    """Inside the PromptLoop sampler (its own hooks and callback), the interval still leaves the first steps
    unguided, and the rewrite still reaches the denoiser."""
    from promptloop.policy.base import FixedPromptPolicy

    pipe = tiny_sd_pipeline()
    raw, guided, handle = _record(pipe, pipe.unet)
    sampler = PromptLoopSampler(pipe, FixedPromptPolicy(["a blue square"]))
    try:
        with guidance_interval(pipe, 0.5):
            out = sampler(["a red circle"], mode="feedback", refinement_steps=[1], num_inference_steps=STEPS,
                          guidance_scale=SCALE, generator=_generator(), output_type="np")
    finally:
        handle.remove()
        del pipe.scheduler.step
    assert out.trajectories[0].prompt_at(STEPS - 1) == "a blue square"
    for i, (o, used) in enumerate(zip(raw, guided, strict=True)):
        uncond, cond = o.chunk(2)
        torch.testing.assert_close(used, cond if i < 3 else uncond + SCALE * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_refusals() -> None:
    with pytest.raises(InputError, match="guidance_from"), guidance_interval(tiny_sd_pipeline(), 1.5):
        pass
    with pytest.raises(ValueError, match="FluxPipeline is not one"), guidance_interval(tiny_flux_pipeline(), 0.2):
        pass
    with guidance_interval(object(), 0.0):  # 0: nothing to install, any pipeline
        pass
