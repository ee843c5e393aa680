"""The `quantization` option of the model rewards (bitsandbytes 8-bit / 4-bit), run for real on CPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from promptloop.rewards import CombinedReward, RewardLoadError, get_reward
from promptloop.rewards.adapters import model_rewards_registered
from promptloop.rewards.adapters.hps import HPSv2Reward
from promptloop.rewards.adapters.hpsv3 import HPSv3Reward
from promptloop.rewards.adapters.image_reward import ImageRewardReward
from promptloop.testing.rewards import tiny_clip_dir, tiny_hps_dir, tiny_hpsv3_dir, tiny_imagereward_dir

QUERIES = ["a red circle", "a blue square", "a red circle"]
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="bitsandbytes is not installed (pip install bitsandbytes)")


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 40, 48, generator=torch.Generator().manual_seed(seed))


def _linear_kinds(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__}


@pytest.fixture(autouse=True)
def _registered():
    with model_rewards_registered():
        yield


@pytest.fixture(scope="module")
def clip64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP whose linear widths suit bitsandbytes' 4-bit CPU kernel (outputs % 32, inputs % 64)."""
    return tiny_clip_dir(tmp_path_factory.mktemp("clip64"), width=64, projection_dim=32)


def test_invalid_quantization_is_refused() -> None:
    with pytest.raises(ValueError, match="quantization must be None, '8bit' or '4bit', got 'int4'"):
        get_reward("clipscore", quantization="int4")


def test_missing_bitsandbytes_fails_preflight_in_one_line(monkeypatch: pytest.MonkeyPatch, clip64: Path) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail, as when absent
    for name in ("clipscore", "hpsv3"):
        combined = CombinedReward({name: 1.0}, reward_kwargs={name: {
            "model_name_or_path": str(clip64), "device": "cpu", "local_files_only": True, "quantization": "8bit"}})
        with pytest.raises(RewardLoadError) as info:
            combined.preflight()
        assert str(info.value) == (f"reward '{name}' cannot load: quantization='8bit' needs bitsandbytes "
                                   "(pip install bitsandbytes)")


@needs_bnb
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_clipscore_runs_on_cpu(clip64: Path, quantization: str) -> None:
    opts = {"model_name_or_path": clip64, "device": "cpu", "local_files_only": True}
    full = get_reward("clipscore", **opts)(_images(), QUERIES).scores
    reward = get_reward("clipscore", quantization=quantization, **opts)
    out = reward(_images(), QUERIES).scores
    assert reward.embedder is not None
    assert ("Linear8bitLt" if quantization == "8bit" else "Linear4bit") in _linear_kinds(reward.embedder.model)
    assert torch.isfinite(out).all() and torch.allclose(out, full, atol=0.1)  # cosine similarities, close to fp32
    assert torch.equal(reward(_images(), QUERIES).scores, out)  # deterministic
    singles = torch.cat([reward(_images()[i : i + 1], QUERIES[i : i + 1]).scores for i in range(3)])
    assert torch.allclose(singles, out, atol=1e-5)


@needs_bnb
def test_hpsv2_quantized_after_load_equals_from_pretrained_quantization(tmp_path: Path) -> None:
    """Quantizing the state-dict-built CLIP gives what CLIPModel.from_pretrained(quantization_config) gives."""
    from transformers import CLIPModel

    from promptloop.rewards.adapters.quantization import bnb_config

    hps = tiny_hps_dir(tmp_path / "hps")
    opts = {"tokenizer_name_or_path": str(hps / "tokenizer"), "device": "cpu", "local_files_only": True}
    HPSv2Reward(hps, **opts).load().model.save_pretrained(tmp_path / "clip")
    reward = HPSv2Reward(hps, quantization="8bit", **opts).load()
    ref = CLIPModel.from_pretrained(tmp_path / "clip", quantization_config=bnb_config("8bit", torch.float32),
                                    device_map={"": "cpu"}, dtype=torch.float32).eval()
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = reward.model.get_image_features(pixel_values=pixels).pooler_output
        want = ref.get_image_features(pixel_values=pixels).pooler_output
    assert torch.equal(got, want)
    assert type(reward.model.text_projection).__name__ == type(ref.text_projection).__name__ == "Linear"
    assert torch.isfinite(reward(_images(), QUERIES).scores).all()


@needs_bnb
def test_imagereward_and_hpsv3_quantized_keep_their_heads(tmp_path: Path) -> None:
    ir = tiny_imagereward_dir(tmp_path / "ir")
    reward = ImageRewardReward(ir, tokenizer_name_or_path=str(ir / "tokenizer"), device="cpu", local_files_only=True,
                               quantization="8bit")
    assert torch.isfinite(reward(_images(), QUERIES).scores).all()
    assert _linear_kinds(reward.model.head) == {"Linear"} and "Linear8bitLt" in _linear_kinds(reward.model.vision)
    h3 = tiny_hpsv3_dir(tmp_path / "hpsv3")
    hpsv3 = HPSv3Reward(h3, base_model_name_or_path=h3 / "base", pixels=56 * 56, device="cpu", local_files_only=True,
                        quantization="8bit")
    scores = hpsv3(_images(), QUERIES).scores
    assert torch.isfinite(scores).all() and torch.equal(hpsv3(_images(), QUERIES).scores, scores)
    assert _linear_kinds(hpsv3.model.rm_head) == {"Linear"} and hpsv3.model.rm_head[0].weight.dtype == torch.float32
    assert "Linear8bitLt" in _linear_kinds(hpsv3.model.backbone)
