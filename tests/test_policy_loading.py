"""Loading options of VLMPolicy.from_pretrained / PolicyConfig: remote code off, attention, device map; where an
adapter finds its base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from promptloop.integrity import write_manifest
from promptloop.policy.vlm import VLMPolicy
from promptloop.testing.policies import tiny_llava_policy
from promptloop.train.config import PolicyConfig


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "p"
    tiny_llava_policy(seed=3).save_pretrained(path)
    return path


def test_policy_config_defaults_are_safe() -> None:
    cfg = PolicyConfig()
    assert cfg.trust_remote_code is False and cfg.revision is None
    assert cfg.attn_implementation is None and cfg.device_map is None


def test_attn_implementation_and_direct_device_loading(saved: Path) -> None:
    eager = VLMPolicy.from_pretrained(saved, attn_implementation="eager", device="cpu")
    assert eager.model.config._attn_implementation == "eager"
    assert {p.device.type for p in eager.model.parameters()} == {"cpu"}
    sdpa = VLMPolicy.from_pretrained(saved, attn_implementation="sdpa", device_map="cpu")
    assert sdpa.model.config._attn_implementation == "sdpa"
    for a, b in zip(eager.model.parameters(), sdpa.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises((ValueError, ImportError)):
        VLMPolicy.from_pretrained(saved, attn_implementation="no_such_attention")


def test_load_policy_passes_the_config_options(saved: Path) -> None:
    from promptloop.train.components import load_policy

    policy = load_policy(PolicyConfig(name_or_path=str(saved), attn_implementation="eager"), "cpu")
    assert policy.model.config._attn_implementation == "eager"


# ----------------------------------------------------------------------------------------------------------------------
# where an adapter's base is (issue 33): relative to the adapter folder or a registered name, never the working folder
# ----------------------------------------------------------------------------------------------------------------------
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "world"


def _policy_json(folder: Path) -> dict[str, object]:
    return json.loads((folder / "promptloop_policy.json").read_text())


def test_adapter_records_its_base_relative_to_its_own_folder(saved: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "project"
    shutil.copytree(saved, work / "models" / "base")
    policy = VLMPolicy.from_pretrained(work / "models" / "base")
    policy.enable_lora(r=2, alpha=4)
    policy.save_pretrained(work / "models" / "runs" / "adapter")
    record = _policy_json(work / "models" / "runs" / "adapter")
    assert (record["base_model"], record["base_model_kind"]) == ("../../base", "relative")
    peft_record = json.loads((work / "models" / "runs" / "adapter" / "adapter_config.json").read_text())
    assert peft_record["base_model_name_or_path"] == "../../base"  # no path of this machine
    moved = shutil.move(str(work / "models"), str(tmp_path / "elsewhere"))  # both folders move together
    decoy = tmp_path / "cwd"
    (decoy / "base").mkdir(parents=True)  # a working folder holding a same-named folder is never used
    monkeypatch.chdir(decoy)
    loaded = VLMPolicy.from_pretrained(Path(moved) / "runs" / "adapter")
    assert loaded.has_lora and Path(loaded.name_or_path) == Path(moved) / "base"


def test_shipped_adapters_name_the_world_policy_and_load_from_any_folder(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("policy_grpo", "policy_feedforward"):
        record = _policy_json(ASSETS / name)
        assert (record["base_model"], record["base_model_kind"]) == ("world", "registered"), name
    decoy = tmp_path / "assets" / "world" / "policy"  # the trap: the working folder holds its own base
    decoy.mkdir(parents=True)
    (decoy / "config.json").write_text("{not a model")
    monkeypatch.chdir(tmp_path)
    loaded = VLMPolicy.from_pretrained(ASSETS / "policy_grpo")
    assert loaded.has_lora and Path(loaded.name_or_path) == ASSETS / "policy"


def test_old_adapter_records_resolve_next_to_the_folder_not_the_working_folder(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter saved before base_model_kind existed ("assets/world/policy", relative to the run's working
    folder) is looked for beside it and in its parent folders."""
    old = tmp_path / "checkout" / "assets" / "world"
    shutil.copytree(ASSETS / "policy", old / "policy")
    adapter = shutil.copytree(ASSETS / "policy_grpo", old / "policy_grpo")
    record = {**_policy_json(adapter), "base_model": "assets/world/policy"}
    del record["base_model_kind"]
    (adapter / "promptloop_policy.json").write_text(json.dumps(record))
    write_manifest(adapter)
    decoy = tmp_path / "cwd" / "assets" / "world" / "policy"
    decoy.mkdir(parents=True)
    (decoy / "config.json").write_text("{not a model")
    monkeypatch.chdir(tmp_path / "cwd")
    loaded = VLMPolicy.from_pretrained(adapter)
    assert Path(loaded.name_or_path) == old / "policy"
