"""QLoRA: `policy.quantization` loads the frozen base of a LoRA run in 8 bit (bitsandbytes), the adapter trains on
it and the KL reference is the quantized base with the adapter off; without bitsandbytes it is one clear error."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.policy.base import PolicyInput
from promptloop.testing.policies import tiny_llava_policy
from promptloop.train.components import ReferencePolicy, load_policy, prepare_policy
from promptloop.train.config import ConfigError, PolicyConfig, TrainConfig

torch.set_num_threads(1)
HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "llava"
    tiny_llava_policy(seed=0).save_pretrained(path)
    return path


def _inputs() -> PolicyInput:
    image = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8))
    return PolicyInput(["a red cat", "a green tree"], ["a red cat", "a green tree"], 0.5, [image, image])


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes is not installed (pip install bitsandbytes)")
def test_8bit_base_trains_a_lora_adapter_and_is_the_reference(folder: Path) -> None:
    import bitsandbytes as bnb

    cfg = TrainConfig(policy=PolicyConfig(name_or_path=str(folder), quantization="8bit", lora_r=4)).validate()
    policy = load_policy(cfg.policy, "cpu")
    assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in policy.model.modules())
    trainable = prepare_policy(policy, cfg)
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    ids, sampled = policy.generate(_inputs(), temperature=1.0, seed=0, max_new_tokens=6)
    again = policy.logprobs(_inputs(), ids, requires_grad=True, temperature=1.0)
    for a, b in zip(sampled, again, strict=True):
        torch.testing.assert_close(a, b.detach(), atol=1e-4, rtol=0)
    sum(lp.sum() for lp in again).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert any(float(p.grad.abs().max()) > 0 for p in trainable)
    reference = ReferencePolicy(policy, frozen_copy=False)
    with reference.active() as ref:  # the quantized base, adapter off
        ref_lp = ref.logprobs(_inputs(), ids, requires_grad=False, temperature=1.0)
    assert all(torch.isfinite(x).all() for x in ref_lp)


def test_without_bitsandbytes_quantization_is_one_line(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail, as when absent
    with pytest.raises(ValueError, match=r"^policy.quantization: quantization='8bit' needs bitsandbytes "
                                         r"\(pip install bitsandbytes\)$"):
        load_policy(PolicyConfig(name_or_path=str(folder), quantization="8bit"), "cpu")


@pytest.mark.parametrize(("fields", "match"), [
    ({"name_or_path": "some/vlm", "quantization": "4bit", "finetune": "full"}, "full fine-tuning trains every"),
    ({"name_or_path": "tiny:llava", "quantization": "8bit"}, "needs a policy loaded from a folder"),
])
def test_quantization_settings_that_cannot_work_are_config_errors(fields: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(policy=PolicyConfig(**fields)).validate()
