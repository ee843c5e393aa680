"""Tests of promptloop.loop.kv_cache: cached cross-attention key/value projections are exact and invalidate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from promptloop.loop import PromptLoopSampler
from promptloop.loop.kv_cache import (
    CachedLinear,
    cache_cross_attention,
    clear_cross_attention_cache,
    uncache_cross_attention,
)
from promptloop.policy.base import FixedPromptPolicy
from promptloop.testing.pipelines import tiny_call_kwargs, tiny_sd_pipeline, tiny_sdxl_pipeline


def _loop(pipe, family: str) -> np.ndarray:
    kw = {**tiny_call_kwargs(family), "num_inference_steps": 6, "generator": torch.Generator().manual_seed(0),
          "output_type": "np", "mode": "feedback", "refinement_steps": [1, 3]}
    return PromptLoopSampler(pipe, FixedPromptPolicy(["a blue square", "a yellow star"]))(
        ["a red cat", "a green tree"], **kw).images


@pytest.mark.parametrize("family,build", [("sd", tiny_sd_pipeline), ("sdxl", tiny_sdxl_pipeline)])
def test_cached_sampling_is_bit_exact_across_prompt_swaps(family, build) -> None:
    pipe = build(seed=0)
    keys = list(pipe.unet.state_dict())
    plain = _loop(pipe, family)
    n = cache_cross_attention(pipe.unet)
    assert n > 0 and n % 2 == 0  # to_k and to_v of every cross-attention
    assert list(pipe.unet.state_dict()) == keys  # parameter names unchanged (save_pretrained unaffected)
    np.testing.assert_array_equal(_loop(pipe, family), plain)
    np.testing.assert_array_equal(_loop(pipe, family), plain)  # a second call: stale caches are not reused
    uncache_cross_attention(pipe.unet)
    assert not any(isinstance(m, CachedLinear) for m in pipe.unet.modules())
    np.testing.assert_array_equal(_loop(pipe, family), plain)


def _cached_linear() -> CachedLinear:
    lin = nn.Linear(4, 3).eval()
    lin.__class__ = CachedLinear
    lin.clear_cache()
    return lin


def test_cache_hits_only_the_same_unmodified_tensor_and_weights() -> None:
    lin = _cached_linear()
    x = torch.randn(2, 4)
    with torch.no_grad():
        a = lin(x)
        assert lin(x) is a  # same object, unmodified: reused
        assert lin(x.clone()) is not a  # an equal but different tensor: recomputed
        b = lin(x)
        x.mul_(2.0)  # in place: the version counter moves
        c = lin(x)
        assert c is not b and torch.allclose(c, 2 * b - lin.bias)
        lin.weight.add_(1.0)  # an optimiser step on the weights
        d = lin(x)
        assert d is not c and torch.allclose(d, x @ lin.weight.T + lin.bias)
    # with gradients on the cache is bypassed (training needs the graph)
    e = lin(x)
    assert e.requires_grad and e is not d
    clear_cross_attention_cache(nn.Sequential())  # no cross-attention: a no-op
    lin.clear_cache()
    assert lin._cache_input is None


def test_wrapped_projections_are_left_alone() -> None:
    pipe = tiny_sd_pipeline(seed=0)
    attn = next(m for m in pipe.unet.modules() if getattr(m, "is_cross_attention", False))

    class Wrapped(nn.Linear):
        pass

    attn.to_k.__class__ = Wrapped
    n = cache_cross_attention(pipe.unet)
    assert type(attn.to_k) is Wrapped and type(attn.to_v) is CachedLinear
    assert n == sum(isinstance(m, CachedLinear) for m in pipe.unet.modules())
