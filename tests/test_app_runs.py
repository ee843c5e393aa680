"""The runs browser: reading run directories as the trainer, the demo and `promptloop generate` write them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from promptloop.app.runs import RunError, curves_figure, find_runs, prompt_records, prompt_table, read_run


def _metrics(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    recs = [{"step": 0, "kind": "eval", "eval/alignment/mean": 0.70},
            {"step": 1, "kind": "train", "reward/total/mean": 0.60, "reward/alignment/mean": 0.60, "kl": 0.0},
            {"step": 2, "kind": "train", "reward/total/mean": 0.65, "reward/alignment/mean": 0.65, "kl": 0.01},
            {"step": 2, "kind": "eval", "eval/alignment/mean": 0.74}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"torn')
    (folder / "config.json").write_text(json.dumps({"steps": 2, "grpo": {"beta": 0.04}}))
    (folder / "checkpoints" / "step-00000002").mkdir(parents=True)


def _record(folder: Path) -> None:
    """A record.json as `promptloop generate` writes it (the samples carry no query of their own)."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = [{"seed": k, "final_prompt": f"a red circle, red {k}", "alignment": a,
                "refinements": [{"step": 4, "prompt": "ignored: a refinement, not a sample"}]}
               for k, a in enumerate((1.0, 0.5))]
    (folder / "record.json").write_text(json.dumps({"query": "a red circle", "mode": "feedback", "steps": 20,
                                                    "samples": samples}))
    Image.new("RGB", (320, 160)).save(folder / "trajectory.png")
    Image.new("RGB", (32, 32)).save(folder / "image_0.png")  # a single sample: not a figure


def test_read_a_demo_like_run(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    _metrics(root / "grpo")
    _record(root / "samples")
    (root / "summary.json").write_text(json.dumps({"base": 0.8}))
    (root / "report.md").write_text("# report")
    for name in ("eval_step_10.png", "eval_step_2.png"):
        Image.new("RGB", (96, 64)).save(root / "grpo" / name)
    view = read_run(root)
    assert [r["step"] for r in view.train] == [1, 2] and [r["step"] for r in view.evals] == [0, 2]
    assert view.checkpoints == ["step-00000002"]
    assert set(view.config) == {"config.json", "summary.json"} and view.report == "# report"
    assert [c for _, c in view.images] == ["grpo/eval_step_2.png", "grpo/eval_step_10.png", "samples/trajectory.png"]
    assert [(r["query"], r["prompt"], r["alignment"]) for r in view.prompts] == [
        ("a red circle", "a red circle, red 0", 1.0), ("a red circle", "a red circle, red 1", 0.5)]
    assert "2 training steps" in view.summary() and "0.650" in view.summary()
    assert find_runs([tmp_path]) == [str(root)]  # grpo/ and samples/ are listed under their parent


def test_prompt_table_filters_by_text_and_reward() -> None:
    rows = prompt_records([{"step": 3, "query": "a blue box", "prompt": "a blue, blue box", "reward": 0.9},
                           {"step": 3, "query": "a red disc", "final_prompt": "a red disc", "reward": 0.2},
                           {"query": "a red box", "prompt": "a red box"}])
    headers, table = prompt_table(rows)
    assert headers == ["step", "query", "prompt", "reward"] and len(table) == 3
    assert [r[1] for r in prompt_table(rows, "RED")[1]] == ["a red disc", "a red box"]
    assert [r[1] for r in prompt_table(rows, "", 0.5)[1]] == ["a blue box"]  # rows without a reward drop out too


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p / "missing", "No such directory"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "Not a directory"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no run"),
    (lambda p: "", "Pick a run directory"),
])
def test_bad_run_directories_say_why(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(RunError, match=message):
        read_run(make(tmp_path))


def test_curves_figure_has_reward_and_kl(tmp_path: Path) -> None:
    _metrics(tmp_path)
    view = read_run(tmp_path)
    img = curves_figure(view.train, view.evals)
    assert img is not None and img.width > img.height > 100
    assert curves_figure([], []) is None


def test_the_runs_tab_reads_only_under_its_runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 33: a run outside the runs root, reached by its path, by '..' or through a link, is refused with the same
    words whether it exists or not; files linked into a run from outside are not read."""
    root, outside = tmp_path / "runs", tmp_path / "elsewhere"
    _metrics(root / "ok")
    _metrics(outside / "secret")
    (outside / "private.json").write_text(json.dumps({"query": "secret query", "prompt": "secret prompt"}))
    (root / "link_out").symlink_to(outside / "secret")
    (root / "ok" / "stolen.json").symlink_to(outside / "private.json")
    roots = [str(root)]
    monkeypatch.chdir(tmp_path)
    assert [r["step"] for r in read_run(root / "ok", roots=roots).train] == [1, 2]
    assert read_run("runs/ok", roots=roots).prompts == []  # relative to the working folder; the linked file unread
    for path in (outside / "secret", root / ".." / "elsewhere" / "secret", root / "link_out", "/etc",
                 outside / "missing"):
        with pytest.raises(RunError, match=r"^No such directory under the runs root \("):
            read_run(path, roots=roots)
    assert find_runs(roots) == [str(root / "ok")]  # the linked run is not listed either
    assert read_run(outside / "secret").train  # the library without roots reads any folder (as before)
