"""Pipeline loading options of the training config: diffusers' model CPU offload leaves every image of the loop
unchanged (the loop's conditioning hooks, swaps and previews work through accelerate's offload hooks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptloop.loop.sampler import PromptLoopSampler
from promptloop.models import enable_model_offload
from promptloop.policy.base import FixedPromptPolicy
from promptloop.train.components import load_pipeline
from promptloop.train.config import PipelineConfig

torch.set_num_threads(1)


def _images(pipe: object, extra: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    sampler = PromptLoopSampler(pipe, FixedPromptPolicy("a blue square"), num_refinements=2)
    out = sampler(["a red cat", "a green tree"], num_inference_steps=6, generator=torch.Generator().manual_seed(0),
                  output_type="np", record_latents=True, **extra)
    return out.images, [r.preview for t in out.trajectories for r in t.refinements if r.preview_source is not None]


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_model_offload_gives_the_same_images_swaps_and_previews(family: str) -> None:
    plain, extra = load_pipeline(PipelineConfig(name_or_path=f"tiny:{family}"), "cpu")
    offloaded, extra_off = load_pipeline(PipelineConfig(name_or_path=f"tiny:{family}", offload="model"), "cpu")
    assert getattr(offloaded.vae, "_hf_hook", None) is not None  # accelerate's offload hooks are in place
    images, previews = _images(plain, extra)
    images_off, previews_off = _images(offloaded, extra_off)
    np.testing.assert_array_equal(images, images_off)
    assert len(previews) == len(previews_off) > 0
    for a, b in zip(previews, previews_off, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_offload_of_a_pipeline_without_an_offload_sequence_is_one_clear_error() -> None:
    class Bare:
        model_cpu_offload_seq = None

        def enable_model_cpu_offload(self, device: object = None) -> None:
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="has no model CPU offload sequence"):
        enable_model_offload(Bare(), "cpu")
