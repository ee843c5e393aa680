"""Fault injection and resume semantics of training (issue 21), on tiny random models in process.

A crash hook (`promptloop.train.faults`) raises a BaseException at named points — after a rollout, after
an update, after a metrics row, and inside checkpoint writes — at seeded steps; the run is then resumed
with resume=true and must end bit-identical to an uninterrupted run (LoRA weights, optimizer state and
metrics rows). A patched writer raising ENOSPC checks that a full disk leaves no partial checkpoint.
"""

from __future__ import annotations

import errno
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from promptloop.cli import main
from promptloop.train import faults, load_config, read_metrics, train
from promptloop.train.checkpoint import list_checkpoints

STEPS = 3
BASE = ["pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava", "pipeline.num_inference_steps=4",
        "loop.num_refinements=2", "data.train=world:train", "data.eval=null", "grpo.queries_per_step=2",
        "grpo.num_generations=2", "grpo.learning_rate=0.001", "rewards={proxy: 1.0}", "logging.progress_bar=false",
        "logging.plot=false", "checkpoint.every=1", "checkpoint.keep=0", "checkpoint.save_final_policy=false",
        "seed=3"]


def _run(out: Path, *extra: str) -> Any:
    return train(load_config(None, [*BASE, f"output_dir={out}", f"steps={STEPS}", *extra]))


def _final_state(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[dict[str, Any]]]:
    last = list_checkpoints(out)[-1]
    adapter = load_file(str(last / "policy" / "adapter_model.safetensors"))
    optim = torch.load(last / "optimizer.pt", weights_only=True)
    rows = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(out / "metrics.jsonl")]
    return adapter, optim, rows


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("faults") / "reference"
    _run(out)
    return out, _final_state(out)


@pytest.fixture
def crash_at() -> Iterator[Any]:
    def arm(*targets: tuple[str, int]) -> list[tuple[str, int]]:
        pending = list(targets)

        def hook(point: str, step: int) -> None:
            if pending and (point, step) == pending[0]:
                pending.pop(0)
                raise faults.SimulatedCrash(f"{point}@{step}")

        faults.hook = hook
        return pending

    yield arm
    faults.hook = None


def _plan(seed: int = 21) -> list[tuple[str, int]]:
    """Every fault point once, each at a seeded step (the checkpoint points are inside checkpoint writes)."""
    rng = random.Random(seed)
    return [(p, rng.randint(1, STEPS)) for p in faults.POINTS]


def test_killed_at_seeded_points_resumes_bit_identically(reference: tuple[Path, Any], tmp_path: Path,
                                                          crash_at: Any) -> None:
    _, (adapter, optim, rows) = reference
    plan = _plan()
    assert len(plan) >= 5 and sum(p.startswith("checkpoint:") for p, _ in plan) >= 3
    for point, step in plan:
        out = tmp_path / f"{point.replace(':', '_')}-{step}"
        crash_at((point, step))
        with pytest.raises(faults.SimulatedCrash):
            _run(out)
        faults.hook = None
        _run(out, "resume=true")
        assert not any(p.name.startswith(".tmp-") for p in (out / "checkpoints").iterdir()), point
        got_adapter, got_optim, got_rows = _final_state(out)
        assert _same(got_adapter, adapter), (point, step, "adapter")
        assert _same(got_optim, optim), (point, step, "optimizer")
        assert got_rows == rows, (point, step, "metrics")


def test_three_crashes_in_one_run_resume_bit_identically(reference: tuple[Path, Any], tmp_path: Path,
                                                         crash_at: Any) -> None:
    _, (adapter, optim, rows) = reference
    out = tmp_path / "thrice"
    for target in (("update", 1), ("checkpoint:state", 2), ("checkpoint:policy", 3)):
        crash_at(target)
        with pytest.raises(faults.SimulatedCrash):
            _run(out, "resume=true")
    faults.hook = None
    _run(out, "resume=true")
    got = _final_state(out)
    assert _same(got[0], adapter) and _same(got[1], optim) and got[2] == rows


def test_disk_full_during_a_checkpoint_leaves_no_partial_one(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from promptloop.train import checkpoint

    real_save = torch.save

    def full_disk(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        name = str(getattr(f, "name", f))  # torch.save is given an open file (so that a write error keeps its errno)
        if name.endswith("optimizer.pt"):
            f.write(b"partial")  # what a full disk leaves: a short file, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device", name)
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    out = tmp_path / "full"
    code = main(["train", *BASE, f"output_dir={out}", "steps=1"])
    err = capsys.readouterr().err
    assert code == 2
    line = [ln for ln in err.splitlines() if "error:" in ln][0]
    assert "cannot write checkpoint" in line and "step-00000001" in line and "no space left on device" in line
    assert "the partial .tmp-step-00000001 was removed" in line
    assert [p.name for p in (out / "checkpoints").iterdir()] == []


# ----------------------------------------------------------------------------------------------------------------------
# resume semantics through the CLI
# ----------------------------------------------------------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["train", *BASE, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_resume_semantics(reference: tuple[Path, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, (_, _, rows) = reference
    # an explicit path wins over --resume
    run = shutil.copytree(ref, tmp_path / "explicit")
    first = run / "checkpoints" / "step-00000001"
    code, out, _ = _cli(capsys, f"output_dir={run}", f"steps={STEPS}", f"resume={first}", "--resume")
    assert code == 0 and f"resumed from {first} at step 1" in out
    # steps below the checkpoint is an error
    code, _, err = _cli(capsys, f"output_dir={run}", "steps=1", "--resume")
    assert code == 2 and f"steps=1 is below the step {STEPS} of checkpoint" in err
    # a broken latest checkpoint and a stray folder: reported, the newest valid one is used
    run = shutil.copytree(ref, tmp_path / "broken")
    (run / "checkpoints" / f"step-{STEPS:08d}" / "optimizer.pt").write_bytes(b"torn")
    (run / "checkpoints" / "step-00000009").mkdir()
    code, out, err = _cli(capsys, f"output_dir={run}", f"steps={STEPS}", "--resume")
    assert code == 0, err
    assert "warning: skipping a broken checkpoint: corrupt checkpoint" in err and "step-00000009" in err
    assert "optimizer.pt has 4 bytes" in err and f"resumed from {run / 'checkpoints' / 'step-00000002'}" in out
    assert [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(run / "metrics.jsonl")] \
        == rows  # continued from step 2: the same run
    # an explicit broken path: an error offering the newest valid checkpoint
    run = shutil.copytree(ref, tmp_path / "offer")
    (run / "checkpoints" / f"step-{STEPS:08d}" / "trainer_state.json").write_text("{")
    code, _, err = _cli(capsys, f"output_dir={run}", f"steps={STEPS}", f"resume={run / 'checkpoints' / 'step-00000003'}")
    assert code == 2 and "not valid JSON" in err and "the newest valid checkpoint is" in err and "step-00000002" in err
    # nothing valid at all
    for cp in list_checkpoints(run):
        (cp / "trainer_state.json").write_text("{")
    code, _, err = _cli(capsys, f"output_dir={run}", f"steps={STEPS}", "--resume")
    assert code == 2 and "no valid checkpoint in" in err
    # metrics.jsonl cut in the middle: the lost rows are named
    run = shutil.copytree(ref, tmp_path / "metrics")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0][:15] + "\n" + "\n".join(lines[1:]) + "\n")
    code, _, err = _cli(capsys, f"output_dir={run}", f"steps={STEPS}", "--resume")
    assert code == 0
    assert "line(s) 1 are not valid JSON" in err and "lacks the train rows of step(s) 1 of the checkpoint at step 3" in err


# ----------------------------------------------------------------------------------------------------------------------
# divergence (issue 33): one line naming the step and the last good checkpoint; nothing of that step saved
# ----------------------------------------------------------------------------------------------------------------------
def _step_tracker(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The step being trained, kept up to date by the fault hook (called after each rollout)."""
    state = {"step": 0}

    def hook(point: str, step: int) -> None:
        if point == "rollout":
            state["step"] = step

    monkeypatch.setattr(faults, "hook", hook)
    return state


def test_a_nan_loss_stops_training_at_that_step(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from promptloop.train import trainer

    state = _step_tracker(monkeypatch)
    real_loss = trainer.grpo_loss

    def nan_at_step_2(*a: Any, **k: Any) -> Any:
        loss, stats = real_loss(*a, **k)
        return (loss * float("nan"), stats) if state["step"] == 2 else (loss, stats)

    monkeypatch.setattr(trainer, "grpo_loss", nan_at_step_2)
    out = tmp_path / "nan"
    code = main(["train", *BASE, f"output_dir={out}", "steps=3", "checkpoint.save_final_policy=true", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 2 and stdout == ""
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err
    assert "training diverged at step 2: the loss is nan" in lines[0]
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step-00000001'}" in lines[0]
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001"]
    assert not (out / "policy").exists() and not (out / ".tmp-policy").exists()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"] == [1]


def test_weights_turned_inf_stop_training_before_anything_is_saved(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = torch.optim.AdamW.step

    def step_to_inf(self: torch.optim.Optimizer, *a: Any, **k: Any) -> Any:
        result = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].view(-1)[0] = float("inf")  # as lr=1e308 does
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_to_inf)
    out = tmp_path / "inf"
    code = main(["train", *BASE, f"output_dir={out}", "steps=2", "checkpoint.save_final_policy=true"])
    err = capsys.readouterr().err
    assert code == 2
    line = next(ln for ln in err.splitlines() if "error:" in ln)
    assert ("training diverged at step 1: 1 trainable weight(s) are nan or inf after the optimizer step" in line
            and "no checkpoint was written before it" in line), line
    assert list_checkpoints(out) == [] and not (out / "policy").exists()


def test_json_output_is_one_object_after_a_resume(reference: tuple[Path, Any], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    run = shutil.copytree(reference[0], tmp_path / "resumed")
    first = run / "checkpoints" / "step-00000001"
    code, out, err = _cli(capsys, f"output_dir={run}", f"steps={STEPS}", f"resume={first}", "--json")
    assert code == 0, err
    result = json.loads(out)  # the whole of stdout is one JSON object
    assert result["steps"] == STEPS and f"resumed from {first} at step 1" in err


def test_json_prints_non_finite_numbers_as_null(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from promptloop.cli_runner import run_command

    result = {"kl": float("nan"), "nested": {"loss": float("inf"), "rows": [1.0, float("-inf")]}, "ok": 0.5}
    assert run_command("promptloop", lambda: result, (), True) == 0
    assert json.loads(capsys.readouterr().out) == {"kl": None, "nested": {"loss": None, "rows": [1.0, None]},
                                                   "ok": 0.5}


# ----------------------------------------------------------------------------------------------------------------------
# a full disk (issue 33), for real: a file-size limit (RLIMIT_FSIZE) makes the writes of torch.save, safetensors and
# PIL fail inside those libraries, as ENOSPC does (EFBIG instead of ENOSPC)
# ----------------------------------------------------------------------------------------------------------------------
def _limit_at(monkeypatch: pytest.MonkeyPatch, size_limit: Any, point: str, step: int, nbytes: int) -> None:
    def hook(p: str, s: int) -> None:
        if (p, s) == (point, step):
            size_limit(nbytes)

    monkeypatch.setattr(faults, "hook", hook)


@pytest.mark.parametrize("point, nbytes, failing", [
    ("checkpoint:policy", 40_000, "optimizer.pt"),  # torch.save: RuntimeError '[enforce fail ...]' around the OSError
    ("update", 20_000, ".tmp-step-00000002"),  # the adapter's safetensors: SafetensorError '... (os error 27)'
])
def test_a_full_disk_inside_a_checkpoint_is_one_line_and_the_last_good_one_resumes(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size_limit: Any,
        point: str, nbytes: int, failing: str) -> None:
    out = tmp_path / "full"
    _limit_at(monkeypatch, size_limit, point, 2, nbytes)
    code = main(["train", *BASE, f"output_dir={out}", "steps=2"])
    err = capsys.readouterr().err
    size_limit(None)
    monkeypatch.setattr(faults, "hook", None)
    line = next(ln for ln in err.splitlines() if "error:" in ln)
    assert code == 2 and "Traceback" not in err, err
    assert f"cannot write checkpoint {out / 'checkpoints' / 'step-00000002'}: " in line and failing in line, line
    assert "file too large" in line and "the partial .tmp-step-00000002 was removed" in line, line
    assert f"the last good checkpoint {out / 'checkpoints' / 'step-00000001'} is unchanged" in line, line
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000001"]
    if point == "update":  # the last good checkpoint is usable: the run resumes from it and ends
        code = main(["train", *BASE, f"output_dir={out}", "steps=2", "--resume"])
        assert code == 0 and [p.name for p in list_checkpoints(out)] == ["step-00000001", "step-00000002"]


def test_a_full_disk_while_writing_the_final_policy_leaves_no_part_of_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size_limit: Any) -> None:
    out = tmp_path / "final"
    _limit_at(monkeypatch, size_limit, "checkpoint:replaced", 1, 20_000)
    code = main(["train", *BASE, f"output_dir={out}", "steps=1", "checkpoint.save_final_policy=true"])
    err = capsys.readouterr().err
    size_limit(None)
    line = next(ln for ln in err.splitlines() if "error:" in ln)
    assert code == 2 and "Traceback" not in err, err
    assert f"cannot write the final policy {out / 'policy'}: {out / '.tmp-policy'}: file too large" in line, line
    assert f"the last checkpoint {out / 'checkpoints' / 'step-00000001'} holds the same policy" in line, line
    assert not (out / "policy").exists() and not (out / ".tmp-policy").exists()
