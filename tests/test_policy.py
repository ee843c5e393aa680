"""Tests of promptloop.policy (VLMPolicy over tiny random LLaVA / Qwen2.5-VL) and the world policy data."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.policy.base import (
    FixedPromptPolicy,
    NullPolicy,
    PolicyInput,
    PolicyOutput,
    RefinementPolicy,
    StagedPolicy,
)
from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.sanitize import Sanitizer, clean_text, split_completion
from promptloop.policy.vlm import VLMPolicy
from promptloop.testing.policies import tiny_llava_policy, tiny_qwen25vl_policy
from promptloop.world.shapes import grammar
from promptloop.world.shapes.copy_constraint import CopyEditConstraint
from promptloop.world.shapes.policy_data import (
    TEXT_WINDOW,
    Edits,
    apply_edits,
    build_world_tokenizer,
    caption_keeps_query,
    keeps_query_facts,
    make_example,
    minilm_length,
)
from promptloop.world.shapes.scene import SceneSampler

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

QUERIES = ["a red circle left of a blue box", "a small green triangle", "a pink disc and an amber square"]
PROMPTS = ["a red circle left of a blue box", "a tiny green triangle on a black background", "a pink disc"]
ASSET = Path(__file__).resolve().parents[1] / "assets" / "world" / "policy"


def _previews(n: int, size: int = 32) -> list[Image.Image]:
    rs = np.random.RandomState(0)
    return [Image.fromarray((rs.rand(size, size, 3) * 255).astype(np.uint8)) for _ in range(n)]


def _inputs(with_preview: bool, progress: float = 0.4) -> PolicyInput:
    return PolicyInput(list(QUERIES), list(PROMPTS), progress, _previews(3) if with_preview else None)


@pytest.fixture(scope="module")
def llava() -> VLMPolicy:
    return tiny_llava_policy(seed=0)


@pytest.fixture(scope="module")
def qwen() -> VLMPolicy:
    return tiny_qwen25vl_policy(seed=0)


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [len(x) for x in a] == [len(x) for x in b]
    return max((float((x - y).abs().max()) for x, y in zip(a, b, strict=True) if len(x)), default=0.0)


# ----------------------------------------------------------------------------- log-probs


@pytest.mark.parametrize("family", ["llava", "qwen"])
@pytest.mark.parametrize("with_preview", [True, False])
def test_logprobs_match_generation(request: pytest.FixtureRequest, family: str, with_preview: bool) -> None:
    policy: VLMPolicy = request.getfixturevalue(family)
    inp = _inputs(with_preview)
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        out = policy.propose(inp, temperature=temperature, top_p=top_p, seed=3)
        assert all(len(c) > 0 for c in out.completion_ids)
        again = policy.logprobs(inp, out.completion_ids, temperature=temperature)
        assert _max_diff(again, out.logprobs) < 1e-5
        assert all(torch.isfinite(x).all() and (x <= 0).all() for x in out.logprobs)


def test_logprobs_grad_and_uneven_lengths(llava: VLMPolicy) -> None:
    inp = _inputs(True)
    comps = [torch.tensor([10, 11]), torch.tensor([12]), torch.tensor([13, 14, 15, llava.eos_token_ids[0]])]
    lp = llava.logprobs(inp, comps, requires_grad=True, temperature=1.0)
    assert [len(x) for x in lp] == [2, 1, 4]
    torch.cat(lp).sum().backward()
    grads = [p.grad for p in llava.model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    llava.model.zero_grad(set_to_none=True)
    # each sample's log-probs do not depend on the rest of the batch (padding is masked)
    alone = llava.logprobs(PolicyInput(QUERIES[1:2], PROMPTS[1:2], 0.4, _previews(3)[1:2]), comps[1:2])
    assert float((alone[0] - lp[1].detach()).abs().max()) < 1e-5


def test_suppressed_tokens_never_sampled(llava: VLMPolicy, qwen: VLMPolicy) -> None:
    for policy in (llava, qwen):
        out = policy.propose(_inputs(True), seed=0)
        sampled = {int(t) for c in out.completion_ids for t in c}
        assert not sampled & set(policy.suppressed_token_ids)
        image_id = policy.tokenizer.convert_tokens_to_ids("<image>" if policy is llava else "<|image_pad|>")
        assert image_id in policy.suppressed_token_ids


# ----------------------------------------------------------------------------- propose


@pytest.mark.parametrize("family", ["llava", "qwen"])
def test_propose_batched(request: pytest.FixtureRequest, family: str) -> None:
    policy: VLMPolicy = request.getfixturevalue(family)
    assert isinstance(policy, RefinementPolicy)
    for with_preview in (True, False):
        out = policy.propose(_inputs(with_preview, progress=0.25), seed=1)
        assert isinstance(out, PolicyOutput)
        assert len(out.prompts) == len(out.completion_ids) == len(out.logprobs) == len(out.fallback) == 3
        assert len(out.raw_texts) == len(out.fallback_reasons) == 3
        for c, lp, prompt, fb, cur in zip(out.completion_ids, out.logprobs, out.prompts, out.fallback, PROMPTS,
                                          strict=True):
            assert c.dtype == torch.long and c.ndim == 1 and lp.shape == c.shape
            assert len(c) <= policy.max_new_tokens
            assert isinstance(prompt, str) and prompt
            if fb:
                assert prompt == cur
    # the seed makes sampling reproducible
    a = policy.propose(_inputs(True), seed=5)
    b = policy.propose(_inputs(True), seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.completion_ids, b.completion_ids, strict=True))


def test_instruction_states_query_prompt_progress(llava: VLMPolicy) -> None:
    for template in (InstructionTemplate(), InstructionTemplate.compact()):
        with_img = template.render("a red circle", "a red, red circle", 0.4, True)
        without = template.render("a red circle", "a red, red circle", 0.4, False)
        for text in (with_img, without):
            assert "a red circle" in text and "a red, red circle" in text and "40" in text
        assert "estimate of the final image" in with_img and "estimate" not in without
    texts = llava.render_texts(_inputs(True))
    assert all("<image>" in t for t in texts)
    assert not any("<image>" in t for t in llava.render_texts(_inputs(False)))


# ----------------------------------------------------------------------------- sanitation


def test_sanitizer_rules() -> None:
    s = Sanitizer(max_prompt_tokens=6, validator=grammar.parse)
    assert s("a red circle", "cur") == ("a red circle", False, None)
    assert s("  \n ", "cur") == ("cur", True, "empty")
    assert s("123 , . 45", "cur") == ("cur", True, "garbage")
    assert s("a red circle and a blue box on a black background", "cur") == ("cur", True, "overlong")
    assert s("a purple elephant", "cur") == ("cur", True, "invalid")
    assert clean_text('Prompt: "a red circle ."\nmore') == "a red circle."
    counted = Sanitizer(max_prompt_tokens=3, prompt_length_fn=lambda t: len(t) // 4)
    assert counted("a red circle", "cur")[1] is False and counted("a red circle left of a box", "cur")[2] == "overlong"
    broken = Sanitizer(max_prompt_tokens=3, prompt_length_fn=lambda t: 1 // 0)
    assert broken("a red circle", "cur")[2] == "overlong"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("", "empty"), ("   ", "empty"), ("12 34 , . ! 7", "garbage"), (", , , :", "garbage"),
     ("a red circle " * 12, "overlong"), ("a red elephant", "invalid")],
)
def test_propose_falls_back(llava: VLMPolicy, monkeypatch: pytest.MonkeyPatch, raw: str, reason: str) -> None:
    monkeypatch.setattr(llava, "decode", lambda ids: raw)
    monkeypatch.setattr(llava, "validator", grammar.parse)
    monkeypatch.setattr(llava, "max_prompt_tokens", 20)
    out = llava.propose(_inputs(True), seed=0)
    assert out.prompts == PROMPTS
    assert out.fallback == [True] * 3 and out.fallback_reasons == [reason] * 3
    assert out.raw_texts == [raw] * 3
    assert all(len(c) > 0 for c in out.completion_ids)  # GRPO still sees what was sampled


def test_propose_never_crashes_on_decode_error(llava: VLMPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(ids: torch.Tensor) -> str:
        raise UnicodeDecodeError("utf-8", b"", 0, 1, "bad")

    monkeypatch.setattr(llava, "decode", boom)
    out = llava.propose(_inputs(False), seed=0)
    assert out.prompts == PROMPTS and all(out.fallback)


def test_propose_accepts_valid_output(llava: VLMPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llava, "decode", lambda ids: "a vivid red circle left of a blue box")
    monkeypatch.setattr(llava, "validator", grammar.parse)
    out = llava.propose(_inputs(True), seed=0)
    assert out.prompts == ["a vivid red circle left of a blue box"] * 3 and not any(out.fallback)


def test_completion_with_negative_prompt_parses() -> None:
    san = Sanitizer(max_prompt_tokens=12)
    assert split_completion("a red cube\nNegative: blurry") == ("a red cube\n", "blurry")
    got = san.parse_completion("a red cube left of a ball\nnegative prompt: blurry, extra objects", "old")
    assert (got.prompt, got.fallback, got.negative, got.negative_fallback) == (
        "a red cube left of a ball", False, "blurry, extra objects", False)
    assert san.parse_completion("a red cube", "old").negative is None  # no negative line: keep the one in force
    bad = san.parse_completion("a red cube\nNegative: 12 , 34", "old")
    assert bad.negative is None and bad.negative_fallback and not bad.fallback
    long = san.parse_completion("a red cube\nNegative: " + "dark " * 20, "old")
    assert long.negative is None and long.negative_fallback
    only = san.parse_completion("Negative: blurry", "old")  # no prompt line: the prompt falls back
    assert only.prompt == "old" and only.fallback and only.reason == "empty" and only.negative == "blurry"


def test_propose_emits_negative_prompts_with_a_negative_note(llava: VLMPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from promptloop.policy.instruction import DEFAULT_NEGATIVE_NOTE

    monkeypatch.setattr(llava, "decode", lambda ids: "a vivid red circle\nNegative: blurry")
    out = llava.propose(_inputs(True), seed=0)
    assert out.negative_prompts is None  # without the note the policy takes only the prompt action
    monkeypatch.setattr(llava, "instruction", replace(llava.instruction, negative_note=DEFAULT_NEGATIVE_NOTE))
    inputs = _inputs(True)
    inputs.current_negative_prompts = ["dark", "", "gray"]
    assert "Current negative prompt: dark" in llava.render_texts(inputs)[0]
    assert "Current negative prompt: none" in llava.render_texts(inputs)[1]
    out = llava.propose(inputs, seed=0)
    assert out.prompts == ["a vivid red circle"] * 3 and out.negative_prompts == ["blurry"] * 3


# ----------------------------------------------------------------------------- LoRA and persistence


def _perturb_lora(policy: VLMPolicy) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("builder", [tiny_llava_policy, tiny_qwen25vl_policy])
def test_lora_round_trip_and_reference(tmp_path: Path, builder: Callable[..., VLMPolicy]) -> None:
    builder(seed=1).save_pretrained(tmp_path / "base")
    policy = VLMPolicy.from_pretrained(tmp_path / "base")
    inp = _inputs(True)
    comps = policy.propose(inp, seed=2).completion_ids
    base_lp = policy.logprobs(inp, comps)
    policy.enable_lora(r=4, alpha=8)
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision" in n or "visual" in n for n in trainable)
    _perturb_lora(policy)
    lora_lp = policy.logprobs(inp, comps)
    assert _max_diff(lora_lp, base_lp) > 1e-3
    with policy.disabled_adapter() as ref:
        assert _max_diff(ref.logprobs(inp, comps), base_lp) < 1e-6
    assert _max_diff(policy.logprobs(inp, comps), lora_lp) < 1e-6  # the adapter is back on
    policy.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    for loaded in (VLMPolicy.from_pretrained(tmp_path / "adapter"),
                   VLMPolicy.from_pretrained(tmp_path / "base", adapter_path=tmp_path / "adapter")):
        assert loaded.has_lora
        assert _max_diff(loaded.logprobs(inp, comps), lora_lp) < 1e-6
        with loaded.disabled_adapter():
            assert _max_diff(loaded.logprobs(inp, comps), base_lp) < 1e-6
    # a reloaded full model generates the same completions with the same log-probs
    reloaded = VLMPolicy.from_pretrained(tmp_path / "base")
    a, b = reloaded.propose(inp, seed=4), builder(seed=1).propose(inp, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.completion_ids, b.completion_ids, strict=True))
    assert _max_diff(a.logprobs, b.logprobs) < 1e-6


def test_policy_config_round_trip(tmp_path: Path) -> None:
    policy = tiny_llava_policy(seed=0, max_prompt_tokens=17, temperature=0.8, validator=grammar.parse)
    policy.save_pretrained(tmp_path / "p")
    loaded = VLMPolicy.from_pretrained(tmp_path / "p")
    assert loaded.max_prompt_tokens == 17 and loaded.temperature == 0.8
    assert loaded.validator is grammar.parse
    assert loaded.instruction == policy.instruction
    assert loaded.dtype == torch.float32


def test_torch_dtype_and_to_as_transformers_and_diffusers_take_them(tmp_path: Path) -> None:
    """`from_pretrained(torch_dtype=...)` is `dtype=...`; `.to(...)` moves or casts the model and returns the policy."""
    tiny_llava_policy(seed=0).save_pretrained(tmp_path / "p")
    policy = VLMPolicy.from_pretrained(tmp_path / "p", torch_dtype=torch.bfloat16)
    assert policy.dtype == torch.bfloat16
    assert VLMPolicy.from_pretrained(tmp_path / "p", dtype=torch.bfloat16, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(TypeError, match="pass one of them"):
        VLMPolicy.from_pretrained(tmp_path / "p", dtype=torch.float16, torch_dtype=torch.bfloat16)
    assert policy.to("cpu") is policy and policy.device == torch.device("cpu")
    assert policy.to(torch.float32) is policy and policy.dtype == torch.float32
    assert policy.to("cpu", torch.float16).dtype == torch.float16
    assert policy.to(device="cpu", dtype=torch.float32).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())
    tiny = VLMPolicy.from_pretrained("tiny:llava", torch_dtype=torch.bfloat16, temperature=0.5)
    assert tiny.dtype == torch.bfloat16 and tiny.temperature == 0.5
    with pytest.raises(ValueError, match="unknown tiny policy"):
        VLMPolicy.from_pretrained("tiny:bogus")
    staged = StagedPolicy(NullPolicy(), policy)
    assert staged.to(torch.bfloat16) is staged and policy.dtype == torch.bfloat16
    assert NullPolicy().to("cpu") is not None and FixedPromptPolicy("x").to("cpu").prompts == "x"


# ----------------------------------------------------------------------------- world tokenizer and data


def test_world_tokenizer_round_trip() -> None:
    tok = build_world_tokenizer()
    rng = random.Random(0)
    sampler = SceneSampler(0, "any")
    for _ in range(300):
        text, query = grammar.caption_scene(sampler.sample(), rng, emphasis=0.3)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        decoded = tok.decode(ids)
        assert grammar.parse(decoded).canonical() == query.canonical()
        assert clean_text(decoded) == text
    for special in ("<image>", "<|user|>", "<|assistant|>", "</s>", "<pad>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


def test_sft_targets_parse_and_keep_query() -> None:
    rng = random.Random(0)
    errors = set()
    for split in ("train", "heldout"):
        sampler = SceneSampler(1, split)  # type: ignore[arg-type]
        for _ in range(300):
            ex = make_example(sampler.sample(), rng)
            errors.add(ex.error)
            assert caption_keeps_query(ex.target, ex.query) == (True, True), ex.target
            assert caption_keeps_query(ex.current_prompt, ex.query) == (True, True)
            assert grammar.parse(ex.query_text).canonical() == ex.query.canonical()
            assert ex.preview is not None and ex.preview.size == (32, 32)
            # a near-copy: the query's own words in order (or the current prompt kept), within the window
            if ex.target != ex.current_prompt:
                words = [("a" if w == "an" else w) for w in ex.target.replace(",", " ,").split()]
                it = iter(words)
                assert all(("a" if w == "an" else w) in it for w in ex.query_text.replace(",", " ,").split()), (
                    ex.query_text, ex.target)
            if minilm_length(ex.query_text) <= TEXT_WINDOW:
                assert minilm_length(ex.target) <= TEXT_WINDOW
    assert {"none", "leak", "colour", "shape", "missing"} <= errors


def test_apply_edits_keeps_words_and_facts() -> None:
    from promptloop.world.backbone import TEXT_MAX_TOKENS

    assert TEXT_WINDOW == TEXT_MAX_TOKENS
    text = "an amber circle left of a box in blue, and a tiny green triangle"
    edits = Edits({"orange": "repeat", "blue": "repeat", "green": "vivid"}, {"orange": "small", "green": "big"},
                  {"blue": (2, 0), "green": (None, 2)}, ("dark", False))
    out = apply_edits(text, edits)
    assert out == ("a small amber, amber circle left of a box in bright blue in the top right, and a tiny vivid green "
                   "triangle at the bottom on a dark background")
    q = grammar.parse(text)
    assert caption_keeps_query(out, q) == (True, True)
    assert apply_edits(text, Edits({}, {}, {})) == text
    assert apply_edits("a red circle", Edits({}, {}, {}, ("grey", True))) == "grey background with a red circle"


def test_world_policy_cli_parser() -> None:
    from promptloop.cli import build_parser
    from promptloop.cli_world import cmd_world_train_policy

    parser = build_parser()
    args = parser.parse_args(["world", "train-policy", "--out", "/tmp/x", "--steps", "5", "--seed", "2", "--json"])
    assert (args.out, args.steps, args.seed, args.json, args.func) == ("/tmp/x", 5, 2, True, cmd_world_train_policy)
    assert parser.parse_args(["world", "train-policy"]).steps is None  # reproduce_world_policy: the recipe's steps
    with pytest.raises(SystemExit):
        parser.parse_args(["world", "train-policy", "--steps", "0"])


def test_keeps_query_facts() -> None:
    q = grammar.parse("a small red circle left of a blue box on a black background")
    assert keeps_query_facts(q, grammar.parse("a blue square to the right of a tiny vivid red disc on a dark background"))
    assert not keeps_query_facts(q, grammar.parse("a blue square right of a large red disc on a dark background"))
    assert not keeps_query_facts(q, grammar.parse("a small red circle left of a blue box"))
    assert not keeps_query_facts(q, grammar.parse("a small red circle right of a blue box on a black background"))
    assert not keeps_query_facts(q, grammar.parse("a small red circle on a black background"))


@pytest.mark.skipif(not (ASSET / "model.safetensors").exists(), reason="world policy not trained")
def test_shipped_world_policy_loads_and_rewrites() -> None:
    policy = VLMPolicy.from_pretrained(ASSET)
    assert policy.dtype == torch.float32 and policy.validator is grammar.parse
    assert isinstance(policy.constraint, CopyEditConstraint)
    _shipped_quality_check(policy)


def _shipped_quality_check(policy: VLMPolicy) -> None:
    """Raw samples at T = 1 on fixed queries with corrupted previews parse, keep every fact and differ."""
    from promptloop.world.shapes.policy_data import corrupt, degrade, render_objects
    from promptloop.world.shapes.scene import Scene, SceneObject

    assert policy.prompt_length_fn is minilm_length and policy.max_prompt_tokens == TEXT_WINDOW
    rng = random.Random(0)
    scenes = [
        Scene((SceneObject("triangle", "red", "large", (0, 1)), SceneObject("square", "blue", "small", (2, 1))), "gray"),
        Scene((SceneObject("circle", "pink", "small", (1, 0)), SceneObject("diamond", "yellow", "large", (0, 2)),
               SceneObject("square", "green", "large", (2, 2))), "black"),
    ]
    texts = ["a red triangle to the left of a small blue box on a gray background",
             "a small pink circle above a yellow diamond, and a green square"]
    for scene, text in zip(scenes, texts, strict=True):
        query = grammar.parse(text)
        objs, bg, _, _ = corrupt(scene, query, rng)
        preview = degrade(render_objects(objs, bg), rng)
        out = policy.propose(PolicyInput([text] * 8, [text] * 8, 0.4, [preview] * 8), temperature=1.0, seed=0)
        good = sum(caption_keeps_query(r, query) == (True, True) for r in out.raw_texts)
        assert good >= 7, out.raw_texts  # raw samples at T = 1 parse and keep every fact of the query
        assert len(set(out.raw_texts)) >= 2, out.raw_texts  # and they differ


# ----------------------------------------------------------------------------- world decoding constraint


@pytest.fixture(scope="module")
def tiny_world_policy() -> VLMPolicy:
    from promptloop.world.shapes.train_policy import build_world_policy

    return build_world_policy(seed=0, hidden=32, layers=1, heads=2, vision_hidden=16, vision_layers=1)


def _words_in_order(query: str, text: str) -> bool:
    norm = ["a" if w == "an" else w for w in text.replace(",", " ,").replace(":", " :").split()]
    it = iter(norm)
    return all(("a" if w == "an" else w) in it for w in query.replace(",", " ,").replace(":", " :").split())


def test_copy_constraint_accepts_every_sft_target() -> None:
    tok = build_world_tokenizer()
    constraint = CopyEditConstraint(tok)
    rng = random.Random(0)
    for split in ("train", "heldout"):
        sampler = SceneSampler(2, split)  # type: ignore[arg-type]
        for _ in range(400):
            ex = make_example(sampler.sample(), rng)
            ids = tok(ex.target, add_special_tokens=False)["input_ids"]
            assert constraint.accepts(ex.query_text, ids + [tok.eos_token_id]), (ex.query_text, ex.target)


def test_copy_constraint_rejects_drops_swaps_and_loops() -> None:
    tok = build_world_tokenizer()
    c = CopyEditConstraint(tok)
    q = "a red circle left of a blue box"

    def ok(text: str) -> bool:
        return c.accepts(q, tok(text, add_special_tokens=False)["input_ids"])

    assert ok(q) and ok("a bright red circle in the top left left of a small blue, blue box on a dark background")
    assert ok("black background with " + q) and not ok("black background with " + q + " on a dark background")
    assert not ok("a blue circle left of a red box")  # colours swapped
    assert not ok("a red circle left of a box")  # a word dropped
    assert not ok("a red circle left of a blue square")  # a synonym is not a copy
    assert not ok("a bright bright red circle left of a blue box")  # an edit kind twice in a gap
    assert not ok("a red circle left of a blue box on a dark background on a gray background")  # two backgrounds
    ids = tok(q, add_special_tokens=False)["input_ids"]
    assert tok.eos_token_id not in c.allowed(q, ids[:-1])  # no end before the whole query is copied
    assert tok.eos_token_id in c.allowed(q, ids)
    assert c.allowed(q, tok("a green", add_special_tokens=False)["input_ids"]) is None  # outside: unrestricted
    bg = "a red circle on a white background"
    assert not c.accepts(bg, tok(bg + " on a dark background", add_special_tokens=False)["input_ids"])


def test_constrained_sampling_copies_query_and_logprobs_match(tiny_world_policy: VLMPolicy) -> None:
    policy = tiny_world_policy
    queries = ["a red circle left of a blue box", "three shapes: a small green triangle, a pink disc and an amber square",
               "a purple diamond on a gray background"]
    inp = PolicyInput([q for q in queries for _ in range(4)], [q for q in queries for _ in range(4)], 0.5,
                      _previews(12))
    out = policy.propose(inp, temperature=1.0, seed=0)
    eos = policy.tokenizer.eos_token_id
    ended = 0
    for q, ids, raw in zip(inp.queries, out.completion_ids, out.raw_texts, strict=True):
        if int(ids[-1]) == eos:  # a random model may run out of tokens; finished rewrites are in the language
            ended += 1
            assert policy.constraint.accepts(q, ids.tolist()), raw
            assert _words_in_order(q, raw), (q, raw)
    assert ended >= 6
    again = policy.logprobs(inp, out.completion_ids, temperature=1.0)
    assert _max_diff(again, out.logprobs) < 1e-5
    assert all(torch.isfinite(x).all() for x in again)
    # the constraint is part of the distribution: the same completions score higher under it
    unconstrained = policy.constraint
    policy.constraint = None
    try:
        raw_lp = policy.logprobs(inp, out.completion_ids, temperature=1.0)
    finally:
        policy.constraint = unconstrained
    assert all(float(a.sum()) >= float(b.sum()) - 1e-6 for a, b in zip(again, raw_lp, strict=True))


def test_constraint_saved_and_restored(tiny_world_policy: VLMPolicy, tmp_path: Path) -> None:
    tiny_world_policy.save_pretrained(tmp_path / "p")
    loaded = VLMPolicy.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.constraint, CopyEditConstraint)
    assert VLMPolicy.from_pretrained(tmp_path / "p", constraint=None).constraint is None


def test_world_policy_sft_runs_and_saves_a_constrained_policy(tmp_path: Path) -> None:
    from promptloop.world.shapes.train_policy import evaluate_world_policy, train_world_policy

    summary = train_world_policy(tmp_path / "p", steps=2, batch_size=2, hidden=32, layers=1, heads=2, vision_hidden=16,
                                 vision_layers=1, progress_bar=False, log_every=0)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    loaded = VLMPolicy.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.constraint, CopyEditConstraint) and loaded.validator is grammar.parse
    ev = evaluate_world_policy(loaded, n=2, seed=0, samples_per_query=2)
    assert set(ev) >= {"valid", "keeps", "distinct"} and 0.0 <= ev["keeps"] <= ev["valid"] <= 1.0
