"""`promptloop.models`: every model reference is parsed in one place, and its errors are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptloop.models import ModelRef, check_local_folder, parse_model_ref, tiny_names, world_backbone_folder


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("world", "world", None),
    ("world:some/backbone", "world", "some/backbone"),
    ("tiny:sd", "tiny", "sd"),
    ("./my-pipeline", "folder", "./my-pipeline"),
    ("~/models/x", "folder", "~/models/x"),
    ("a/b/c", "folder", "a/b/c"),
    ("org/name", "hub", "org/name"),
    ("name", "hub", "name"),
])
def test_parse_model_ref(text: str, kind: str, value: str | None) -> None:
    ref = parse_model_ref(text)
    assert ref == ModelRef(kind, text, value)  # type: ignore[arg-type]
    assert str(ref) == text


def test_an_existing_folder_is_a_folder(tmp_path: Path) -> None:
    assert parse_model_ref(str(tmp_path)).kind == "folder"


def test_world_backbone_folder() -> None:
    from promptloop.world.backbone import DEFAULT_BACKBONE

    assert world_backbone_folder(parse_model_ref("world")) == DEFAULT_BACKBONE
    assert world_backbone_folder(parse_model_ref("world:x/y")) == Path("x/y") == world_backbone_folder("world:x/y")
    with pytest.raises(ValueError, match="not a world backbone reference"):
        world_backbone_folder("tiny:sd")


def test_check_local_folder(tmp_path: Path) -> None:
    for fine in ("world", "world:/nowhere", "tiny:nothing", "org/name", str(tmp_path)):
        check_local_folder(fine, "--pipeline")
    with pytest.raises(FileNotFoundError, match=r"^--policy './missing': no such folder$"):
        check_local_folder("./missing", "--policy")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        check_local_folder(str(tmp_path / "file"), "--pipeline")


def test_unknown_tiny_names_list_the_known_ones() -> None:
    from promptloop.models import load_pipeline, load_policy

    assert "tiny:sd" in tiny_names("pipelines") and "tiny:llava" in tiny_names("policies")
    with pytest.raises(ValueError, match=r"pipeline.name_or_path 'tiny:nope': unknown tiny pipeline; choose from"):
        load_pipeline("tiny:nope", "cpu")
    with pytest.raises(ValueError, match=r"policy.name_or_path 'tiny:nope': unknown tiny policy; choose from"):
        load_policy("tiny:nope", "cpu")


def test_inference_loads_models_without_train() -> None:
    """generate and the app load their models through promptloop.models, not the trainer's components."""
    import subprocess
    import sys

    import promptloop.app.models as app_models
    import promptloop.generate as generate

    code = ("import sys, promptloop.generate, promptloop.models; "
            "print(sorted(m for m in sys.modules if m.startswith('promptloop.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    for module in (generate, app_models):
        text = Path(module.__file__ or "").read_text()
        assert "promptloop.train.components" not in text and "promptloop.train.config" not in text
