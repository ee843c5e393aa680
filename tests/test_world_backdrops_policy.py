"""World v3's refinement policy: its language (random colour fills), its decoding constraint, saving and loading,
the `world:v3` references, and GRPO on a tiny v3 backbone through the trainer with the world's task reward."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

# a percentile-bootstrap interval holds the sample mean up to float rounding when the per-query values are (nearly)
# all equal, as the tiny random models' often are
TOL = 1e-6


@pytest.fixture(scope="module")
def tiny_policy():
    from promptloop.world.backdrops.train_policy import build_backdrops_policy

    torch.set_num_threads(1)
    return build_backdrops_policy(seed=0, hidden=32, layers=1, heads=2, vision_hidden=32, vision_layers=1)


def test_every_sft_target_is_in_the_constraints_language_and_keeps_the_query(tiny_policy) -> None:
    from promptloop.world.backdrops.grammar import parse
    from promptloop.world.backdrops.policy_data import in_vocabulary, keeps_query_facts, make_example, world_words
    from promptloop.world.backdrops.scene import SceneSampler

    tok, constraint, words = tiny_policy.tokenizer, tiny_policy.constraint, set(world_words())
    rng, sampler = random.Random(0), SceneSampler(0)
    filled = 0
    for _ in range(300):
        ex = make_example(sampler.sample(), rng)
        assert in_vocabulary(ex.target, words) and in_vocabulary(ex.current_prompt, words)
        ids = tok(ex.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        for t in range(len(ids)):
            assert ids[t] in constraint.allowed(ex.query_text, ids[:t]), (ex.query_text, ex.target, t)
        assert tok.decode(ids[:-1]) == ex.target
        assert keeps_query_facts(ex.query, parse(ex.target)) and keeps_query_facts(ex.query, parse(ex.current_prompt))
        filled += sum(o.colour is not None for o in parse(ex.target).objects) - sum(
            o.colour is not None for o in ex.query.objects)
    assert filled > 100  # the targets do fill open colours


def test_sft_colours_are_drawn_independently_of_the_backdrop() -> None:
    """The SFT targets' colours are the same for the same random draws whatever the preview shows."""
    from promptloop.world.backdrops.policy_data import make_example
    from promptloop.world.backdrops.scene import Backdrop, Scene, SceneSampler

    scene = SceneSampler(3).sample()
    dark = Scene(scene.objects, Backdrop(0.15))
    light = Scene(scene.objects, Backdrop(0.85))
    for seed in range(20):
        a, b = make_example(dark, random.Random(seed)), make_example(light, random.Random(seed))
        assert a.target == b.target and a.current_prompt == b.current_prompt
        assert a.preview is not None and b.preview is not None


def test_constraint_allows_only_the_query_words_and_colours_before_open_shapes(tiny_policy) -> None:
    from promptloop.world.backdrops.scene import COLOURS

    tok, c = tiny_policy.tokenizer, tiny_policy.constraint
    vocab = tok.get_vocab()
    query = "a circle left of a red square"
    ids = tok(query, add_special_tokens=False)["input_ids"]
    assert sorted(c.allowed(query, [])) == sorted([vocab["a"], vocab["an"]])
    after_article = set(c.allowed(query, ids[:1]))
    assert after_article == {vocab["circle"], *(vocab[k] for k in COLOURS)}  # open: a colour or the shape
    assert set(c.allowed(query, [ids[0], vocab["blue"]])) == {vocab["circle"]}  # one colour, then the shape
    named = ids.index(vocab["red"])
    assert set(c.allowed(query, ids[:named])) == {vocab["red"]}  # a named colour is copied, never replaced
    assert list(c.allowed(query, ids)) == [tok.eos_token_id]


def test_constrained_random_policy_rewrites_always_parse_and_keep_the_query(tiny_policy) -> None:
    """Even with random weights, every sampled rewrite is a colour fill of the query (the constraint's guarantee)."""
    from promptloop.policy.base import PolicyInput
    from promptloop.world.backdrops.grammar import parse
    from promptloop.world.backdrops.policy_data import keeps_query_facts
    from promptloop.world.backdrops.prompts import sample_prompts

    items = sample_prompts("heldout", 12, seed=0)
    queries = [it.caption for it in items]
    out = tiny_policy.propose(PolicyInput(queries, queries, 0.15, None), seed=0)
    assert not any(out.fallback)
    for q, raw, prompt in zip(queries, out.raw_texts, out.prompts, strict=True):
        assert raw == prompt and keeps_query_facts(parse(q), parse(raw))


def test_saved_policy_loads_with_its_constraint_and_evaluation_runs(tiny_policy, tmp_path: Path) -> None:
    from promptloop.policy.vlm import VLMPolicy
    from promptloop.world.backdrops.colour_constraint import ColourFillConstraint
    from promptloop.world.backdrops.train_policy import evaluate_backdrops_policy

    tiny_policy.save_pretrained(tmp_path / "policy")
    loaded = VLMPolicy.from_pretrained(tmp_path / "policy")
    assert isinstance(loaded.constraint, ColourFillConstraint)
    ev = evaluate_backdrops_policy(loaded, n=8, samples_per_query=2)
    assert ev["valid"] == 1.0 and ev["keeps"] == 1.0 and 0.0 <= ev["filled"] <= 1.0
    assert ev["luminance_gap_ci"][0] <= ev["luminance_gap"] <= ev["luminance_gap_ci"][1]


def test_world_name_references_name_the_worlds_shipped_models() -> None:
    from promptloop.models import parse_model_ref, world_backbone_folder, world_policy_path
    from promptloop.world import get_world

    v3 = get_world("v3")
    for text in ("world:v3", "world:backdrops"):
        ref = parse_model_ref(text)
        assert ref.kind == "world" and ref.world == "backdrops" and ref.value is None
        assert world_backbone_folder(ref) == v3.DEFAULT_BACKBONE and world_policy_path(ref) == v3.DEFAULT_POLICY
    assert world_policy_path("world") == get_world("shapes").DEFAULT_POLICY
    assert world_backbone_folder("world:runs/bb") == Path("runs/bb")  # not a world name: a folder
    with pytest.raises(ValueError, match="no refinement policy"):
        world_policy_path("world:v2")
    with pytest.raises(ValueError, match="names no world policy"):
        world_policy_path("world:runs/bb")


@pytest.fixture(scope="module")
def v3_grpo_run(tiny_policy, tiny_v3_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two GRPO steps of the SFT-like tiny policy on the tiny v3 backbone by configs/world_v3.yaml: (base policy
    folder, run folder)."""
    from conftest import tiny_v3_grpo

    return tiny_v3_grpo(tmp_path_factory.mktemp("v3grpo"), tiny_policy, tiny_v3_backbone)


def test_grpo_on_a_tiny_v3_backbone_scores_the_task_reward(v3_grpo_run: tuple[Path, Path]) -> None:
    """The trainer runs GRPO on world v3 (queries from the backbone's world, `backdrops_legible` judged against the
    original query, evaluation monitored by `backdrops_alignment`), in feedback mode."""
    from promptloop.train import read_metrics

    _, out = v3_grpo_run
    recs = read_metrics(out / "metrics.jsonl")
    train_recs = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["step"] for r in train_recs] == [1, 2]
    assert 0.0 <= train_recs[-1]["reward/backdrops_legible/mean"] <= 1.0
    assert all("eval/alignment/mean" in e and "eval/backdrops_legible/ci_low" in e for e in evals)
    manifest = json.loads((out / "policy" / "promptloop_policy.json").read_text())
    assert "ColourFillConstraint" in json.dumps(manifest)


def test_eval_compare_on_world_v3_reports_every_row_with_cis(v3_grpo_run: tuple[Path, Path], tiny_v3_backbone: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`promptloop eval compare --world v3`: the task reward per row with CIs over queries, paired margins, the
    alignment and proxy monitors, and the equal-compute feed-forward row with more sampling steps."""
    from promptloop.eval.compare import compare
    from promptloop.world import get_world

    policy, run = v3_grpo_run
    monkeypatch.setattr(get_world("v3"), "DEFAULT_POLICY", policy)
    adapter = run / "policy"
    res = compare(n=4, steps=4, refinements=2, world="v3", backbone=tiny_v3_backbone, grpo_adapter=adapter,
                  feed_forward_adapter=adapter, no_feedback_adapter=adapter, progress=False)
    assert res["world"] == "backdrops" and res["reward"] == "backdrops_legible"
    for row in ("base", "feed_forward", "promptloop_no_feedback", "promptloop", "promptloop_sft",
                "feed_forward_then_promptloop", "feed_forward_equal_compute"):
        lo, hi = res[f"{row}_ci"]
        assert lo - TOL <= res[row] <= hi + TOL and 0.0 <= res[f"alignment_{row}"] <= 1.0
        assert row in res["seconds_per_row"]
    lo, hi = res["promptloop_minus_feed_forward_ci"]
    assert lo - TOL <= res["promptloop_minus_feed_forward"] <= hi + TOL
    assert res["equal_compute_steps"] >= 4


@pytest.fixture
def tiny_v3_shipped(v3_grpo_run: tuple[Path, Path], tiny_v3_backbone: Path, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path):
    """World v3 with the tiny backbone, policy and (one) adapter standing in for its shipped ones; the adapter
    folder holds its run's training log, as the shipped ones do."""
    import shutil

    from promptloop.world import get_world

    policy, run = v3_grpo_run
    adapter = shutil.copytree(run / "policy", tmp_path / "adapter")
    shutil.copy(run / "metrics.jsonl", adapter / "metrics.jsonl")
    v3 = get_world("v3")
    monkeypatch.setattr(v3, "DEFAULT_BACKBONE", tiny_v3_backbone)
    monkeypatch.setattr(v3, "DEFAULT_POLICY", policy)
    monkeypatch.setattr(v3, "POLICY_ADAPTERS", {m: str(adapter) for m in ("feedback", "no-feedback", "feed-forward")})
    monkeypatch.setattr(v3, "STEPS", 7)  # room for the demo's N_R = 5
    return v3


def test_refinements_curve_starts_at_the_plain_backbone_in_both_rows(tiny_v3_shipped, tmp_path: Path) -> None:
    from promptloop.eval.refinements import refinements_curve

    res = refinements_curve(world="v3", n=3, max_refinements=2, figure=tmp_path / "ref.png", progress=False)
    assert [r["refinements"] for r in res["feedback"]] == [0, 1, 2] == [r["refinements"] for r in res["no_feedback"]]
    assert res["feedback"][0] == res["no_feedback"][0]  # N_R = 0: the same plain samples
    assert all(r["ci"][0] - TOL <= r["mean"] <= r["ci"][1] + TOL for row in ("feedback", "no_feedback") for r in res[row])
    assert (tmp_path / "ref.png").stat().st_size > 0


def test_quick_demo_on_world_v3_writes_its_report(tiny_v3_shipped, tmp_path: Path) -> None:
    """`promptloop demo` (v3 by default): the table with CIs, the shipped run's held-out curve, trajectory strips,
    a short GRPO from the SFT policy, and the world's note."""
    from promptloop.eval.demo import run_demo

    summary = run_demo(str(tmp_path / "demo"), quick=True)
    assert summary["world"] == "backdrops" and summary["reward"] == "backdrops_legible"
    for row in ("base", "feed_forward", "promptloop"):
        assert summary[f"{row}_ci"][0] - TOL <= summary[row] <= summary[f"{row}_ci"][1] + TOL
    assert summary["grpo_steps"] == 4 and "shipped_heldout_curve" in summary
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "What this world is built to show" in report and "no caption" in report
    for png in ("base_vs_promptloop.png", "trajectories.png", "heldout_curve.png", "reward_curve.png"):
        assert (tmp_path / "demo" / png).stat().st_size > 0


def test_an_adapter_on_the_v3_policy_records_its_base_as_the_registered_world_v3(
        tiny_policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved beside (or anywhere from) the world's shipped policy, an adapter names its base `world:v3`, which
    resolves to that world's `DEFAULT_POLICY` from any working folder."""
    from promptloop.policy.base_ref import base_model_ref, resolve_base
    from promptloop.world import get_world

    tiny_policy.save_pretrained(tmp_path / "policy")
    monkeypatch.setattr(get_world("v3"), "DEFAULT_POLICY", tmp_path / "policy")
    assert base_model_ref(tmp_path / "policy", tmp_path / "policy_grpo") == ("world:v3", "registered")
    assert resolve_base(tmp_path / "elsewhere", "world:v3", "registered", "x") == str(tmp_path / "policy")


def test_a_world_policy_at_temperature_zero_decodes_greedily_whatever_the_global_seed(tiny_v3_shipped) -> None:
    """`eval compare --temperature 0` / `eval refinements --temperature 0`: the loaded policies replace their saved
    temperature (1.0) by greedy decoding, so the rewrites no longer depend on the global generator."""
    from promptloop.eval.compare import heldout_queries, load_world_policy, world_adapter
    from promptloop.world.backbone import load_backbone
    from promptloop.world.sampling import sample

    v3 = tiny_v3_shipped
    pipe = load_backbone(v3.DEFAULT_BACKBONE)
    assert load_world_policy(world_adapter(v3, "feedback"), pipe, v3).temperature == 1.0
    policy = load_world_policy(world_adapter(v3, "feedback"), pipe, v3, temperature=0.0)
    assert policy.temperature == 0.0
    queries, seeds = heldout_queries(v3, 3, 0)
    prompts = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        out = sample(pipe, queries, seeds, policy=policy, mode="feedback", steps=v3.STEPS, guidance=v3.GUIDANCE,
                     num_refinements=2, progress=False)
        prompts.append([[r.prompt for r in t.refinements] for t in out.trajectories])
    assert prompts[0] == prompts[1]


def test_bench_overhead_runs_the_policy_with_an_adapter_on_it(tiny_v3_shipped) -> None:
    """`promptloop bench overhead --world v3 --adapter DIR`: the policy rows run the world's policy with that LoRA
    adapter, and the JSON names it (no wall time is asserted)."""
    import math

    from promptloop.eval.compare import world_adapter
    from promptloop.eval.overhead import overhead

    adapter = world_adapter(tiny_v3_shipped, "feedback")
    res = overhead(batch=2, steps=7, repeats=1, world="v3", adapter=adapter)
    assert res["adapter"] == str(adapter)
    assert all(math.isfinite(res[f"policy_ratio_{k}"]) and res[f"policy_ratio_{k}"] > 0 for k in (1, 3, 5))
