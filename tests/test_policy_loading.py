"""Loading options of VLMPolicy.from_pretrained / PolicyConfig: remote code off, attention, device map."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from promptloop.policy.testing import tiny_llava_policy
from promptloop.policy.vlm import VLMPolicy
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
