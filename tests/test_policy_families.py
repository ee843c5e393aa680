"""VLM families beyond LLaVA / Qwen2.5-VL as PromptLoop policies, with tiny random configs built offline:
chat template and image placement, and log-probs of sampled completions against a one-pass recomputation."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.policy.base import PolicyInput
from promptloop.policy.testing import tiny_qwen2vl_policy, tiny_qwen3vl_policy
from promptloop.policy.vlm import VLMPolicy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

QUERIES = ["a red circle left of a blue box", "a small green triangle", "a pink disc and an amber square"]
PROMPTS = ["a red circle left of a blue box", "a tiny green triangle on a black background", "a pink disc"]
BUILDERS = {"qwen2vl": tiny_qwen2vl_policy, "qwen3vl": tiny_qwen3vl_policy}


def _previews(n: int) -> list[Image.Image]:
    rs = np.random.RandomState(0)
    return [Image.fromarray((rs.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def policy(request: pytest.FixtureRequest) -> VLMPolicy:
    return BUILDERS[request.param](seed=0)


def test_chat_template_places_the_image_before_the_instruction(policy: VLMPolicy) -> None:
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3))
    texts = policy.render_texts(inp)
    for t, q in zip(texts, QUERIES, strict=True):
        assert t.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
        assert t.endswith("<|im_end|>\n<|im_start|>assistant\n") and q in t
    enc = policy.encode(inp)
    pad = policy.processor.image_token_id
    # 4 merged image tokens per preview (a 4x4 patch grid, merge 2), inside vision_start / vision_end
    assert ((enc["input_ids"] == pad).sum(dim=1) == 4).all()
    assert torch.equal(enc["mm_token_type_ids"].bool(), enc["input_ids"] == pad)
    start = policy.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    for row in enc["input_ids"]:
        s = int((row == start).nonzero()[0])
        assert (row[s + 1 : s + 5] == pad).all()
    no_image = policy.render_texts(PolicyInput(list(QUERIES), list(PROMPTS), 0.4, None))
    assert all("<|image_pad|>" not in t for t in no_image)


@pytest.mark.parametrize("with_preview", [True, False])
def test_logprobs_of_sampled_completions_match_a_recomputation(policy: VLMPolicy, with_preview: bool) -> None:
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3) if with_preview else None)
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        out = policy.propose(inp, temperature=temperature, top_p=top_p, seed=3)
        assert all(len(c) > 0 for c in out.completion_ids)
        again = policy.logprobs(inp, out.completion_ids, temperature=temperature)
        for a, b in zip(again, out.logprobs, strict=True):
            assert a.shape == b.shape and torch.isfinite(a).all() and (a <= 0).all()
            assert float((a - b).abs().max()) < 1e-5
    sampled = {int(t) for c in out.completion_ids for t in c}
    assert not sampled & set(policy.suppressed_token_ids)  # never an image / vision token


def test_lora_trains_and_the_reference_is_the_base(policy: VLMPolicy) -> None:
    import copy

    p = copy.deepcopy(policy)
    p.enable_lora(r=4, alpha=8)
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3))
    out = p.propose(inp, seed=1)
    lp = p.logprobs(inp, out.completion_ids, requires_grad=True)
    torch.cat(lp).sum().backward()
    grads = [q.grad for n, q in p.model.named_parameters() if "lora_" in n and q.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    with p.disabled_adapter() as ref:  # LoRA B starts at zero: the reference equals the base policy exactly
        base = ref.logprobs(inp, out.completion_ids)
    fresh = policy.logprobs(inp, out.completion_ids)
    assert all(torch.equal(a, b) for a, b in zip(base, fresh, strict=True))
