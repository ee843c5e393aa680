"""Tests of `promptloop bench overhead`'s world selection (no timing is asserted: a benchmark's wall time is not a
test): the world's shipped policy folder, and one-line errors (exit code 2) before any model loads."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from promptloop.cli import main
from promptloop.eval.compare import WorldPolicyError, world_policy_folder
from promptloop.world import WORLDS, get_world


def _fake_world(monkeypatch: pytest.MonkeyPatch, **attrs: object) -> None:
    mod = types.ModuleType("promptloop_test_fake_world")
    mod.NAME, mod.VERSION = "fake", "v9"  # type: ignore[attr-defined]
    for k, v in attrs.items():
        setattr(mod, k, v)
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(WORLDS, "fake", mod.__name__)


def test_shapes_declares_its_shipped_policy() -> None:
    folder = world_policy_folder(get_world("v1"))
    assert folder == Path(__file__).resolve().parents[1] / "assets" / "world" / "policy"
    assert (folder / "promptloop_policy.json").is_file()


def test_world_without_policy_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_world(monkeypatch)
    with pytest.raises(WorldPolicyError, match="declares no shipped policy"):
        world_policy_folder(get_world("fake"))
    _fake_world(monkeypatch, DEFAULT_POLICY=tmp_path / "missing")
    with pytest.raises(WorldPolicyError, match="does not exist"):
        world_policy_folder(get_world("fake"))


@pytest.mark.parametrize(("attrs", "message"), [({}, "world fake (v9) declares no shipped policy (DEFAULT_POLICY)"),
                                                ({"DEFAULT_POLICY": Path("/nonexistent/policy")},
                                                 "its policy folder /nonexistent/policy does not exist")])
def test_cli_world_without_policy_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          attrs: dict[str, object], message: str) -> None:
    _fake_world(monkeypatch, DEFAULT_BACKBONE=Path("/nonexistent/backbone"), **attrs)
    assert main(["bench", "overhead", "--world", "fake"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_cli_unknown_world_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "overhead", "--world", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown world 'nope'" in err, err


def test_cli_missing_adapter_exits_2_before_any_model_loads(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "overhead", "--world", "v3", "--adapter", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--adapter {tmp_path / 'none'}: no such adapter folder" in err, err
