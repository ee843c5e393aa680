"""HPSv3 on transformers' Qwen2-VL, loading a tiny random checkpoint saved under the official key names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from promptloop.rewards import CombinedReward, RewardLoadError, get_reward
from promptloop.rewards.adapters.hpsv3 import HPSv3Reward, convert_hpsv3_state_dict, load_hpsv3_model
from promptloop.rewards.adapters.hpsv3_prompt import INSTRUCTION, REWARD_TOKEN, chat_text, smart_resize
from promptloop.testing.rewards import tiny_hpsv3_dir

QUERIES = ["a red circle", "a blue square", "a red circle", "a green triangle on the left"]
TINY_PIXELS = 56 * 56  # 4 visual tokens per square image


def _images(seed: int = 0) -> list[np.ndarray]:
    """Four uint8 images of different sizes and aspect ratios (so their visual token counts differ)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 48), (64, 32), (40, 48), (30, 90))]


@pytest.fixture(scope="module")
def hpsv3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hpsv3_dir(tmp_path_factory.mktemp("hpsv3"))


def _reward(directory: Path, **kw: object) -> HPSv3Reward:
    return HPSv3Reward(directory, base_model_name_or_path=directory / "base", pixels=TINY_PIXELS, device="cpu",
                       local_files_only=True, **kw)


def test_official_keys_load_onto_qwen2vl(hpsv3_dir: Path) -> None:
    reward = _reward(hpsv3_dir).load()
    official = load_file(str(hpsv3_dir / "HPSv3.safetensors"))
    converted = convert_hpsv3_state_dict(official)
    params = reward.model.state_dict()
    assert set(converted) == set(params)  # every official tensor but lm_head has a home, every parameter is filled
    assert set(official) - {k.replace("backbone.language_model.", "model.").replace("backbone.", "") for k in params} \
        == {"lm_head.weight"}
    for key, val in converted.items():
        assert torch.equal(params[key], val), key
    assert reward.model.reward_token_id == len(reward.tokenizer) - 1  # <|Reward|>, added last, as the official
    assert reward.model.backbone.config.text_config.vocab_size == len(reward.tokenizer)
    assert reward.model.rm_head[0].weight.dtype == torch.float32


def test_scores_finite_batched_equals_single_and_deterministic(hpsv3_dir: Path) -> None:
    images = _images()
    reward = _reward(hpsv3_dir, batch_size=4)
    out = reward(images, QUERIES)
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32 and torch.isfinite(out.scores).all()
    assert len(set(out.scores.tolist())) == 4  # depends on the image and the query
    single = _reward(hpsv3_dir, batch_size=1)
    one_by_one = torch.cat([single(images[i : i + 1], QUERIES[i : i + 1]).scores for i in range(4)])
    assert torch.allclose(out.scores, one_by_one, atol=1e-5)  # right padding changes nothing
    assert torch.equal(_reward(hpsv3_dir, batch_size=4)(images, QUERIES).scores, out.scores)  # a fresh load agrees
    mu_sigma = reward.mu_sigma(images, QUERIES)
    assert mu_sigma.shape == (4, 2) and torch.allclose(mu_sigma[:, 0], out.scores)
    half = _reward(hpsv3_dir, dtype="bfloat16")(images, QUERIES).scores  # the official dtype; the head stays fp32
    assert torch.isfinite(half).all()


def test_prompt_and_resize_follow_the_official_inference() -> None:
    text = chat_text("a red circle", 3)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                           "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>\nYou are tasked")
    assert "Textual prompt - a red circle\n" in text and text.count(REWARD_TOKEN) == 1
    assert text.endswith(f"image: {REWARD_TOKEN}\n\nEND\n<|im_end|>\n<|im_start|>assistant\n")
    assert len(INSTRUCTION) == 2523 and "{text_prompt}" in INSTRUCTION
    pixels = 256 * 28 * 28  # the official min_pixels = max_pixels
    assert smart_resize(512, 512, 28, pixels, pixels) == (448, 448)
    assert smart_resize(1024, 768, 28, pixels, pixels) == (504, 364)  # area under the cap, both floored
    assert smart_resize(40, 48, 28, 56 * 56, 56 * 56) == (56, 84)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(1, 500, 28, pixels, pixels)


def test_checkpoint_errors(hpsv3_dir: Path, tmp_path: Path) -> None:
    state = load_file(str(hpsv3_dir / "HPSv3.safetensors"))
    with pytest.raises(ValueError, match="unexpected HPSv3 checkpoint key 'value_head.weight'"):
        convert_hpsv3_state_dict({**state, "value_head.weight": torch.zeros(1)})
    pt = tmp_path / "HPSv3.pt"
    torch.save(state, pt)
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        load_hpsv3_model(pt, None, 0)
    del state["rm_head.5.bias"]
    save_file(state, str(tmp_path / "HPSv3.safetensors"))
    (tmp_path / "base").symlink_to(hpsv3_dir / "base")
    with pytest.raises(ValueError, match=r"missing \['rm_head.5.bias'\]"):
        _reward(tmp_path).load()


def test_registry_and_preflight(hpsv3_dir: Path) -> None:
    default = get_reward("hpsv3", device="cpu")
    assert (default.model_name_or_path, default.base_model_name_or_path) == ("MizzenAI/HPSv3", "Qwen/Qwen2-VL-7B-Instruct")
    assert default.trust_remote_code is False and not default.loaded
    offline = {"device": "cpu", "local_files_only": True}  # the official Hub ids, not in the (empty) offline cache
    with pytest.raises(RewardLoadError, match=r"^reward 'hpsv3' cannot load: ") as info:
        CombinedReward({"alignment": 1.0, "hpsv3": 1.0}, reward_kwargs={"hpsv3": offline}).preflight()
    assert "\n" not in str(info.value)
    ok = CombinedReward({"hpsv3": 1.0}, reward_kwargs={"hpsv3": {
        **offline, "model_name_or_path": str(hpsv3_dir), "base_model_name_or_path": str(hpsv3_dir / "base"),
        "pixels": TINY_PIXELS}})
    assert ok.preflight().rewards["hpsv3"].loaded
