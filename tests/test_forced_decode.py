"""Tests of the forced-token decoding loop (`promptloop.policy.forced_decode`): the same completions and log-probs as
transformers' `generate` for a seed, forced tokens at log-prob 0 without a model forward, `logprobs` consistent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.policy.base import PolicyInput, PolicyOutput
from promptloop.policy.constraint import allowed_ids
from promptloop.policy.vlm import VLMPolicy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

ASSET = Path(__file__).resolve().parents[1] / "assets" / "world" / "policy"
QUERIES = ["a red circle left of a blue box", "three shapes: a small green triangle, a pink disc and an amber square",
           "a purple diamond on a gray background", "a yellow square"]


def _inputs(n_each: int = 3) -> PolicyInput:
    rs = np.random.RandomState(0)
    queries = [q for q in QUERIES for _ in range(n_each)]
    previews = [Image.fromarray((rs.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in queries]
    return PolicyInput(queries, list(queries), 0.5, previews)


@pytest.fixture(scope="module")
def tiny_world_policy() -> VLMPolicy:
    from promptloop.world.shapes.train_policy import build_world_policy

    return build_world_policy(seed=0, hidden=32, layers=1, heads=2, vision_hidden=16, vision_layers=1)


def _both(policy: VLMPolicy, inp: PolicyInput, **kw: float) -> tuple[PolicyOutput, PolicyOutput]:
    policy.fast_decoding = False
    try:
        slow = policy.propose(inp, **kw)  # type: ignore[arg-type]
    finally:
        policy.fast_decoding = True
    return slow, policy.propose(inp, **kw)  # type: ignore[arg-type]


def _assert_same(slow: PolicyOutput, fast: PolicyOutput) -> None:
    assert [c.tolist() for c in fast.completion_ids] == [c.tolist() for c in slow.completion_ids]
    assert fast.raw_texts == slow.raw_texts and fast.prompts == slow.prompts and fast.fallback == slow.fallback
    for a, b in zip(fast.logprobs, slow.logprobs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        if len(a):
            assert float((a - b).abs().max()) < 1e-5


@pytest.mark.parametrize(("temperature", "top_p", "seed"), [(1.0, 1.0, 0), (1.0, 1.0, 7), (0.7, 0.9, 3), (0.0, 1.0, 0)])
def test_forced_decoding_samples_what_generate_samples(tiny_world_policy: VLMPolicy, temperature: float, top_p: float,
                                                       seed: int) -> None:
    policy = tiny_world_policy
    inp = _inputs()
    enc = policy.encode(inp)
    assert policy._forced_decoding(enc)  # the LLaVA world policy takes the fast path
    slow, fast = _both(policy, inp, temperature=temperature, top_p=top_p, seed=seed)
    _assert_same(slow, fast)
    # GRPO's scoring pass agrees with the sampled log-probs, forced tokens included
    again = policy.logprobs(inp, fast.completion_ids, temperature=temperature)
    assert all(float((a - b).abs().max()) < 1e-5 for a, b in zip(again, fast.logprobs, strict=True) if len(a))


def test_forced_tokens_have_logprob_zero_and_cost_no_forward(tiny_world_policy: VLMPolicy) -> None:
    policy = tiny_world_policy
    inp = _inputs()
    calls: list[int] = []
    hook = policy.base_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = policy.propose(inp, seed=1)
    finally:
        hook.remove()
    eos, sup = set(policy.eos_token_ids), set(policy.suppressed_token_ids)
    n_forced, most_free = 0, 0
    for q, ids, lps in zip(inp.queries, out.completion_ids, out.logprobs, strict=True):
        toks = ids.tolist()
        free = 0
        for t, tok in enumerate(toks):
            allowed = allowed_ids(policy.constraint, q, toks[:t], policy._vocab_size(), eos, sup)  # type: ignore[arg-type]
            if allowed is not None and len(allowed) == 1:
                assert allowed == [tok] and float(lps[t]) == 0.0
                n_forced += 1
            else:
                free += 1
        most_free = max(most_free, free)
    assert n_forced > 0
    # one prefill, then one forward per free decision of the row with the most of them
    assert len(calls) <= most_free + 1 < max(len(c) for c in out.completion_ids) + 1
    scored = policy.logprobs(inp, out.completion_ids, temperature=1.0)
    assert all(float((a - b).abs().max()) < 1e-5 for a, b in zip(scored, out.logprobs, strict=True) if len(a))


def test_shipped_world_policy_fast_path_matches_generate() -> None:
    policy = VLMPolicy.from_pretrained(ASSET)
    inp = _inputs(2)
    slow, fast = _both(policy, inp, temperature=1.0, seed=0)
    _assert_same(slow, fast)


def test_no_constraint_or_unsupported_model_uses_generate(tiny_world_policy: VLMPolicy) -> None:
    from promptloop.testing.policies import tiny_qwen25vl_policy

    enc = tiny_world_policy.encode(_inputs(1))
    constraint = tiny_world_policy.constraint
    tiny_world_policy.constraint = None
    try:
        assert not tiny_world_policy._forced_decoding(enc)
    finally:
        tiny_world_policy.constraint = constraint
    qwen = tiny_qwen25vl_policy(seed=0)
    qwen.constraint = constraint
    assert not qwen._forced_decoding(qwen.encode(_inputs(1)))  # 3-D RoPE positions: transformers' loop


def test_unseeded_sampling_leaves_the_rng_where_generate_does(tiny_world_policy: VLMPolicy) -> None:
    policy = tiny_world_policy
    inp = _inputs(1)
    after = []
    for fast in (False, True):
        policy.fast_decoding = fast
        torch.manual_seed(11)
        out = policy.propose(inp)  # the global RNG, as the sampler calls it
        after.append(([c.tolist() for c in out.completion_ids], torch.rand(4)))
    policy.fast_decoding = True
    assert after[0][0] == after[1][0]
    assert torch.equal(after[0][1], after[1][1])  # the next call draws the same numbers
