"""The `promptloop` command: machine-readable checks, generate, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", ""], "query: the prompt is empty"),
        (["generate", "   "], "query: the prompt is empty"),
        (["generate", "a red circle", "--refine", "30", "--steps", "20"], "more than the 19 refinements"),
        (["generate", "a red circle", "--refine", "-1"], "expected a non-negative integer"),
        (["generate", "a red circle", "--steps", "-5"], "expected a positive integer"),
        (["generate", "a red circle", "--seed", "-3"], "expected a non-negative integer"),
        (["generate", "a red circle", "--pipeline", "/no/such/model"], "no such folder"),
        (["generate", "a red circle", "--policy", "./no_such_policy"], "no such folder"),
        (["generate", "a red circle", "--mode", "sideways"], "invalid choice"),
        (["world", "backbone-eval", "--backbone", "/no/such/backbone", "--n", "2"], "backbone folder not found"),
        (["world", "analyzer-check", "--n", "0"], "expected a positive integer"),
        (["world", "room", "--timestep-shift", "0"], "expected a positive finite number"),
        (["world", "backbone-eval", "--timestep-shift", "abc"], "expected a positive number"),
        (["world", "room", "--eta", "1.5"], "expected a number in [0, 1]"),
        (["world", "backbone-eval", "--world", "v3", "--guidance-from", "1.5"], "--guidance-from: expected a finite number >= 0 and <= 1"),
        (["world", "room", "--guidance-from", "0.2"], "--guidance-from: not an option of room in world shapes"),
        (["world", "room", "--world", "v2", "--phrases"], "--phrases: not an option of room in world patterns"),
        (["world", "backbone-eval", "--eta", "0.5", "--timestep-shift", "2", "--n", "2"], "needs a DDIM schedule"),
        (["world", "train-backbone", "--binding-loss", "-1"], "expected a non-negative finite number"),
        (["world", "train-backbone", "--binding-loss", "0.1", "--text-binder-layers", "0"], "needs --text-binder-layers > 0"),
        (["world", "prompts", "test"], "invalid choice"),
        (["world", "room", "--rules"], "--rules: not an option of room in world shapes (its own: --anchored"),
        (["world", "room", "--world", "v2", "--anchored"], "--anchored: not an option of room in world patterns"),
        (["world", "backbone-eval", "--world", "v2", "--anchored"], "unrecognized arguments"),
        (["world", "room", "--world", "v2", "--rules", "anchor,guess"], "unknown rule(s) ['guess']; expected some of ['anchor',"),
        (["world", "room", "--world", "v3", "--rules", "legible,guess"], "unknown rule(s) ['guess']; expected some of ['legible']"),
        (["world", "room", "--world", "v3", "--candidates", "3", "--n", "2"], "the Backdrops room's up-front candidates"),
        (["world", "room", "--world", "v2", "--fractions", "0.5,1"], "expected comma-separated fractions in (0, 1)"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli: Any, argv: list[str], message: str) -> None:
    code, out, err = run_cli(*argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("promptloop: error:") and message in lines[0], lines[0]
    assert "Traceback" not in err


def test_analyzer_check_json(run_cli: Any) -> None:
    code, out, _ = run_cli("world", "analyzer-check", "--n", "30", "--seed", "0", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["attribute_accuracy"] >= 0.99


def test_prompts_command(run_cli: Any) -> None:
    code, out, _ = run_cli("world", "prompts", "heldout", "--n", "3", "--json")
    assert code == 0
    assert len(json.loads(out)["prompts"]) == 3


def test_generate_writes_images_strip_and_record(run_cli: Any, tmp_path: Path) -> None:
    code, out, err = run_cli("generate", "a red circle left of a blue box", "--refine", "2", "--steps", "6",
                          "--seed", "0", "--num-images", "2", "--out", str(tmp_path), "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["mode"] == "feedback" and record["refinement_steps"] and len(record["samples"]) == 2
    for k, s in enumerate(record["samples"]):
        assert (tmp_path / s["image"]).is_file()
        assert len(s["refinements"]) == 2
        assert 0.0 <= s["alignment"] <= 1.0
        for r in s["refinements"]:
            assert (tmp_path / r["preview"]).is_file()
            assert r["num_tokens"] > 0 and r["logprob_sum"] <= 0
        assert s["seed"] == k
    assert (tmp_path / "trajectory.png").is_file() and (tmp_path / "record.json").is_file()
    # seeded: the same command gives the same record
    code2, out2, _ = run_cli("generate", "a red circle left of a blue box", "--refine", "2", "--steps", "6",
                          "--seed", "0", "--num-images", "2", "--out", str(tmp_path / "again"), "--json")
    again = json.loads(out2)
    assert [s["final_prompt"] for s in again["samples"]] == [s["final_prompt"] for s in record["samples"]]


def test_run_command_reports_errors_interrupts_and_results(capsys: pytest.CaptureFixture[str]) -> None:
    from collections.abc import Callable

    from promptloop.cli_runner import run_command

    def fail(exc: BaseException) -> Callable[[], dict]:
        def call() -> dict:
            raise exc

        return call

    assert run_command("prog", fail(ValueError("bad value\nsecond line")), (ValueError,), False) == 2
    assert capsys.readouterr().err == "prog: error: bad value\n"  # first line only
    assert run_command("prog", fail(KeyError("missing")), (KeyError,), False) == 2
    assert capsys.readouterr().err == "prog: error: missing\n"  # a KeyError's key, unquoted
    assert run_command("prog", fail(ValueError()), (ValueError,), False) == 2
    assert capsys.readouterr().err == "prog: error: ValueError\n"  # no message: the class name
    assert run_command("prog", fail(KeyboardInterrupt()), (ValueError,), False, interrupt_hint="resume") == 130
    assert capsys.readouterr().err == "prog: interrupted (resume)\n"
    with pytest.raises(RuntimeError):  # an unknown error is a bug: it propagates with its traceback
        run_command("prog", fail(RuntimeError("boom")), (ValueError,), False)
    assert run_command("prog", lambda: {"a": 1, "b": {"c": 2}}, (ValueError,), True) == 0
    assert json.loads(capsys.readouterr().out) == {"a": 1, "b": {"c": 2}}
    assert run_command("prog", lambda: {"a": 1, "b": [2]}, (ValueError,), False) == 0
    assert capsys.readouterr().out == "a: 1\nb: [2]\n"


def test_help_and_argument_errors_do_not_load_torch() -> None:
    """The parser is built without torch/diffusers/transformers: `--help` and bad arguments answer at once."""
    import subprocess
    import sys

    code = ("import sys\nfrom promptloop.cli import build_parser\np = build_parser()\n"
            "try:\n    p.parse_args(['world', 'room', '--n', '0'])\nexcept SystemExit as e:\n    assert e.code == 2\n"
            "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
