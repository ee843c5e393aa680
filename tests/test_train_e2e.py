"""End-to-end GRPO runs on tiny random models (CPU, a few seconds each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from promptloop.train import CheckpointError, PromptLoopTrainer, TrainError, load_config, read_metrics, train


def _lora_state(trainer: PromptLoopTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters() if "lora_" in n}


def test_sdxl_qwen_clipscore_two_steps_checkpoint_and_reload(tmp_path: Path) -> None:
    from promptloop.testing.rewards import tiny_clip_dir

    clip = tiny_clip_dir(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square on the left\na cat next to a tree\n")
    overrides = [
        f"output_dir={tmp_path / 'run'}", "pipeline.name_or_path=tiny:sdxl", "policy.name_or_path=tiny:qwen25vl",
        "pipeline.num_inference_steps=4", "loop.num_refinements=2", f"data.train={prompts}", "data.eval=null",
        "grpo.queries_per_step=2", "grpo.num_generations=2", "grpo.num_iterations=2", "grpo.beta=0.05",
        "rewards={clipscore: 1.0}", f"reward_kwargs={{clipscore: {{model_name_or_path: '{clip}'}}}}",
        "steps=2", "logging.progress_bar=false", "policy.lora_r=4",
    ]
    cfg = load_config(None, overrides)
    trainer = PromptLoopTrainer(cfg)
    result = trainer.train()
    assert result.steps == 2
    recs = [r for r in read_metrics(result.metrics_path) if r["kind"] == "train"]
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        for key in ("reward/clipscore/mean", "reward/total/std", "kl", "clip_fraction", "fallback_rate",
                    "prompt_words/mean", "time/rollout_s", "time/update_s"):
            assert key in r and r[key] is not None, key
        assert r["ratio_first_pass_max_dev"] < 1e-4
    assert result.checkpoint is not None and (result.checkpoint / "policy" / "adapter_model.safetensors").is_file()
    assert result.plot_path is not None and result.plot_path.stat().st_size > 0
    trained = _lora_state(trainer)
    assert any(v.abs().sum() > 0 for n, v in trained.items() if "lora_B" in n)  # the update moved the adapter

    # reload: a fresh trainer resumes from the checkpoint with identical weights and nothing left to do
    again = PromptLoopTrainer(load_config(None, [*overrides, "resume=true"]))
    assert _lora_state(again).keys() == trained.keys()
    res2 = again.train()
    assert res2.steps == 2
    for n, v in _lora_state(again).items():
        assert torch.equal(v, trained[n]), n


@pytest.fixture(scope="module")
def world_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    out = tmp_path_factory.mktemp("world") / "run"
    overrides = [
        f"output_dir={out}", "pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava",
        "pipeline.num_inference_steps=4", "loop.num_refinements=2", "data.train=world:train",
        "data.eval=world:heldout", "eval.every=1", "eval.num_queries=2", "grpo.queries_per_step=2",
        "grpo.num_generations=2", "rewards={alignment: 1.0, proxy: 0.2}", "steps=2", "logging.progress_bar=false",
        "checkpoint.every=1", "checkpoint.keep=0",
    ]
    train(load_config(None, overrides))
    return overrides, out


def test_world_style_run_reports_alignment_and_eval(world_run: tuple[list[str], Path]) -> None:
    _, out = world_run
    recs = read_metrics(out / "metrics.jsonl")
    train_recs = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["step"] for r in train_recs] == [1, 2] and [r["step"] for r in evals] == [0, 1, 2]
    r = train_recs[-1]
    assert 0.0 <= r["reward/alignment/mean"] <= 1.0
    total = r["reward/alignment/mean"] + 0.2 * r["reward/proxy/mean"]
    assert r["reward/total/mean"] == pytest.approx(total, rel=1e-5)  # weighted sum, judged against the query
    assert all("eval/alignment/mean" in e and "eval/total/mean" in e for e in evals)
    assert (out / "reward_curve.png").is_file() and (out / "policy" / "adapter_config.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]


def test_eval_records_carry_the_base_row(world_run: tuple[list[str], Path]) -> None:
    """Every evaluation record has the plain pipeline's scores on the same queries and seeds (computed once: the
    pipeline and reward are frozen) and the policy's margin over them."""
    _, out = world_run
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "eval"]
    for key in ("total", "alignment", "proxy"):
        base = {e[f"eval/base/{key}/mean"] for e in evals}
        assert len(base) == 1 and all(np.isfinite(b) for b in base)
        for e in evals:
            assert e[f"eval/{key}/minus_base"] == pytest.approx(e[f"eval/{key}/mean"] - e[f"eval/base/{key}/mean"])
            # 95 % bootstrap CIs over held-out queries: around the mean, and paired for the margin over base
            assert e[f"eval/{key}/ci_low"] <= e[f"eval/{key}/mean"] <= e[f"eval/{key}/ci_high"]
            assert e[f"eval/{key}/minus_base_ci_low"] <= e[f"eval/{key}/minus_base"] <= e[f"eval/{key}/minus_base_ci_high"]
    assert 0.0 <= evals[0]["eval/base/alignment/mean"] <= 1.0


def test_train_leaves_subnormal_floats_on(world_run: tuple[list[str], Path]) -> None:
    """train() flushes subnormal floats while it runs (CPU speed) and turns that off when it returns: code run after
    it in the same process (a property test drawing floats) sees IEEE arithmetic."""
    assert torch.tensor([1e-320], dtype=torch.float64).item() != 0.0


def test_output_dir_guard_and_incompatible_checkpoint(world_run: tuple[list[str], Path]) -> None:
    overrides, out = world_run
    with pytest.raises(TrainError, match="holds checkpoints.*--resume"):
        PromptLoopTrainer(load_config(None, overrides)).train()
    with pytest.raises(CheckpointError, match=r"incompatible run.*rewards"):
        PromptLoopTrainer(load_config(None, [*overrides, "resume=true", "rewards={alignment: 1.0}"])).train()
    with pytest.raises(CheckpointError, match=r"incompatible run.*policy"):
        PromptLoopTrainer(load_config(None, [*overrides, "resume=true", "policy.lora_r=4"])).train()


def test_corrupt_checkpoint_is_a_clear_error(world_run: tuple[list[str], Path], tmp_path: Path) -> None:
    import shutil

    overrides, out = world_run
    bad = tmp_path / "step-00000001"
    shutil.copytree(out / "checkpoints" / "step-00000001", bad)
    data = bytearray((bad / "optimizer.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "optimizer.pt").write_bytes(bytes(data))
    cfg = load_config(None, [*overrides, f"output_dir={tmp_path / 'x'}", f"resume={bad}"])
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint.*optimizer\.pt"):
        PromptLoopTrainer(cfg).train()
    (bad / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint.*not valid JSON"):
        PromptLoopTrainer(cfg).train()
