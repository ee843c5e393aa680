"""Evaluation on any pipeline (`promptloop eval compare --pipeline/--policy/--reward/--prompts`) and `generate`'s
`--reward` / `--prompts`, on tiny random models (offline, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from promptloop.cli import main
from promptloop.rewards import get_reward
from promptloop.testing.pipelines import tiny_call_kwargs, tiny_sd_pipeline

PROMPTS = ["a red circle", "a blue square above a green triangle", "a small yellow diamond"]  # world queries (count)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_on_a_pipeline_rows_cis_and_grid(prompt_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "cmp"
    code, out, err = _run(capsys, [
        "eval", "compare", "--pipeline", "tiny:sd", "--policy", "tiny:llava", "--reward", "proxy",
        "--reward", "count=0.5", "--prompts", str(prompt_file), "--seeds-per-prompt", "2", "--steps", "4",
        "--refine", "2", "--grid", "2", "--out", str(out_dir), "--json"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 3 and summary["rewards"] == {"proxy": 1.0, "count": 0.5}
    assert set(summary["rows"]) == {"base", "feed_forward", "promptloop"}
    for row in summary["rows"].values():
        assert set(row) == {"proxy", "count", "total"}
        for stat in row.values():
            assert stat["ci"][0] <= stat["mean"] <= stat["ci"][1]
    for a, b in (("promptloop", "base"), ("promptloop", "feed_forward"), ("feed_forward", "base")):
        diff = summary["differences"][f"{a}_minus_{b}"]["total"]["mean"]
        assert diff == pytest.approx(summary["rows"][a]["total"]["mean"] - summary["rows"][b]["total"]["mean"], abs=1e-6)
    assert (out_dir / "compare_grid.png").is_file() and json.loads((out_dir / "compare.json").read_text()) == summary
    samples = [json.loads(line) for line in (out_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 3 * 2 and {s["row"] for s in samples} == {"base", "feed_forward", "promptloop"}
    # the base row is the plain pipeline at the recorded seeds, scored against the prompt
    pipe = tiny_sd_pipeline(seed=0)
    base = [s for s in samples if s["row"] == "base"]
    images = pipe([s["prompt"] for s in base], num_inference_steps=4, output_type="pil", **tiny_call_kwargs("sd"),
                  generator=[torch.Generator().manual_seed(s["seed"]) for s in base]).images
    direct = get_reward("proxy")(images, [s["prompt"] for s in base]).scores.numpy()
    np.testing.assert_allclose([s["rewards"]["proxy"] for s in base], direct, rtol=0, atol=1e-6)
    assert all(s["final_prompt"] == s["prompt"] for s in base)
    # the same seeds in every row: a prompt's seeds are those of the base row
    assert [(s["prompt"], s["seed"]) for s in samples if s["row"] == "promptloop"] == [(s["prompt"], s["seed"]) for s in base]
    code, out, err = _run(capsys, ["eval", "compare", "--pipeline", "tiny:sd", "--policy", "tiny:llava", "--reward",
                                   "proxy", "--prompts", str(prompt_file), "--n", "1", "--steps", "3", "--refine", "1",
                                   "--grid", "0", "--out", str(tmp_path / "cmp2")])
    assert code == 0, err
    assert "| promptloop_minus_base |" in out and "| row | proxy | total |" in out
    assert not (tmp_path / "cmp2" / "compare_grid.png").exists()


def test_generate_with_rewards_and_a_prompt_file(prompt_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "gen"
    code, out, err = _run(capsys, [
        "generate", "--prompts", str(prompt_file), "--reward", "proxy", "--pipeline", "tiny:sd", "--policy",
        "tiny:llava", "--steps", "4", "--refine", "2", "--num-images", "2", "--out", str(out_dir), "--json"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 3 and set(summary["reward_means"]) == {"proxy", "total"}
    record = json.loads((out_dir / "record.json").read_text())
    assert [r["query"] for r in record["prompt_records"]] == PROMPTS
    for i, rec in enumerate(record["prompt_records"]):
        folder = out_dir / f"prompt_{i:04d}"
        assert (folder / "trajectory.png").is_file() and (folder / "image_1.png").is_file()
        assert json.loads((folder / "record.json").read_text()) == rec
        for sample in rec["samples"]:
            assert sample["rewards"]["total"] == pytest.approx(sample["rewards"]["proxy"])
    means = np.mean([s["rewards"]["proxy"] for r in record["prompt_records"] for s in r["samples"]])
    assert summary["reward_means"]["proxy"] == pytest.approx(means)
    # one query with a reward: the record of its images carries the reward
    code, out, err = _run(capsys, ["generate", PROMPTS[0], "--reward", "proxy", "--pipeline", "tiny:sd", "--policy",
                                   "tiny:llava", "--steps", "4", "--refine", "1", "--out", str(tmp_path / "one"), "--json"])
    assert code == 0, err
    assert set(json.loads(out.strip().splitlines()[-1])["samples"][0]["rewards"]) == {"proxy", "total"}


def test_bad_requests_are_one_line(prompt_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["generate", "--out", str(tmp_path / "g")], "give a QUERY or --prompts FILE"),
        (["generate", "a red circle", "--prompts", str(prompt_file)], "give a QUERY or --prompts FILE"),
        (["generate", "a red circle", "--reward", "bogus", "--out", str(tmp_path / "g")], "bogus"),
        (["generate", "a red circle", "--reward", "proxy=x"], "the weight 'x' is not a number"),
        (["generate", "a red circle", "--reward", "proxy", "--reward-kwargs", '{"count": {}}'],
         "options for 'count', which is not a --reward"),
        (["eval", "compare", "--out", str(tmp_path / "c")], "--out applies to the comparison on a pipeline"),
        (["eval", "compare", "--pipeline", "tiny:sd", "--policy", "tiny:llava", "--reward", "proxy", "--prompts",
          str(tmp_path / "missing.txt"), "--out", str(tmp_path / "c")], "prompt file not found"),
        (["eval", "compare", "--pipeline", "tiny:sd", "--steps", "3", "--refine", "3", "--out", str(tmp_path / "c")],
         "--refine must be in 1..2"),
    ]
    for argv, message in cases:
        code, _, err = _run(capsys, argv)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], (argv, err)
