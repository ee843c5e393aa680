"""ImageReward and HPSv2 on transformers' BLIP / CLIP, loading official-named checkpoints (tiny, random)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from promptloop.rewards import get_reward
from promptloop.rewards.adapters.hps import HPSv2Reward, convert_open_clip_state_dict
from promptloop.rewards.adapters.image_reward import ImageRewardReward, convert_imagereward_state_dict
from promptloop.testing.rewards import (
    hps_official_state,
    imagereward_official_state,
    tiny_hps_dir,
    tiny_imagereward_dir,
)

QUERIES = ["a red circle", "a blue square", "a red circle"]


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 40, 48, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_imagereward_dir(tmp_path_factory.mktemp("imagereward"))


@pytest.fixture(scope="module")
def hps_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hps_dir(tmp_path_factory.mktemp("hps"))


def test_imagereward_official_keys_load_onto_blip(ir_dir: Path) -> None:
    reward = ImageRewardReward(ir_dir, tokenizer_name_or_path=str(ir_dir / "tokenizer"), device="cpu",
                               local_files_only=True).load()
    official = torch.load(ir_dir / "ImageReward.pt", weights_only=True)
    params = dict(reward.model.state_dict())
    converted = convert_imagereward_state_dict(official)
    assert set(converted) == set(params)  # every official tensor has a home and every parameter is filled
    for key, val in converted.items():
        assert torch.equal(params[key], val), key
    qkv = official["blip.visual_encoder.blocks.1.attn.qkv.weight"]
    assert torch.equal(reward.model.vision.encoder.layers[1].self_attn.qkv.weight, qkv)
    out = reward(_images(), QUERIES)
    assert out.scores.shape == (3,) and torch.isfinite(out.scores).all()
    assert not torch.allclose(out.scores[0], out.scores[1])
    again = ImageRewardReward(ir_dir, tokenizer_name_or_path=str(ir_dir / "tokenizer"), device="cpu",
                              local_files_only=True, batch_size=1)
    assert torch.allclose(again(_images(), QUERIES).scores, out.scores, atol=1e-5)  # batching-invariant


def test_imagereward_rejects_unknown_keys() -> None:
    state = imagereward_official_state(depth=1, layers=1)
    state["blip.visual_encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="unexpected ImageReward checkpoint key"):
        convert_imagereward_state_dict(state)


def test_hps_official_keys_load_onto_clip(hps_dir: Path) -> None:
    reward = HPSv2Reward(hps_dir, tokenizer_name_or_path=str(hps_dir / "tokenizer"), device="cpu",
                         local_files_only=True).load()
    official = torch.load(hps_dir / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    converted = convert_open_clip_state_dict(official)
    params = reward.model.state_dict()
    assert set(converted) == {k for k in params if not k.endswith("position_ids")}
    w = official["visual.transformer.resblocks.0.attn.in_proj_weight"]
    layer = reward.model.vision_model.encoder.layers[0].self_attn
    assert torch.equal(torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]), w)
    assert torch.equal(reward.model.text_projection.weight, official["text_projection"].t())
    assert reward.model.config.vision_config.num_attention_heads == 2
    out = reward(_images(), QUERIES)
    assert out.scores.shape == (3,) and bool(((out.scores >= -1) & (out.scores <= 1)).all())
    assert torch.allclose(out.scores[0], HPSv2Reward(hps_dir, tokenizer_name_or_path=str(hps_dir / "tokenizer"),
                                                     device="cpu", local_files_only=True)(_images()[:1], QUERIES[:1]).scores[0],
                          atol=1e-5)


def test_hps_open_clip_pooling_matches_manual(hps_dir: Path) -> None:
    """Text features at <eot> under the causal mask equal OpenCLIP's encode_text computed by hand."""
    reward = HPSv2Reward(hps_dir, tokenizer_name_or_path=str(hps_dir / "tokenizer"), device="cpu",
                         local_files_only=True).load()
    from promptloop.rewards.adapters.hps import open_clip_token_ids

    ids = open_clip_token_ids(reward.tokenizer, ["a red circle"], 77)
    assert ids[0, 0] == reward.tokenizer.bos_token_id and int(ids[0].argmax()) == int((ids[0] != 0).sum()) - 1
    sd = hps_official_state(vocab_size=len(reward.tokenizer), seed=0)
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"]
    mask = torch.full((77, 77), float("-inf")).triu(1)
    for i in range(2):
        p = f"transformer.resblocks.{i}."
        h = torch.nn.functional.layer_norm(x, (128,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        mha = torch.nn.MultiheadAttention(128, 2, batch_first=True)
        mha.load_state_dict({k.removeprefix(p + "attn."): v for k, v in sd.items() if k.startswith(p + "attn.")})
        x = x + mha(h, h, h, attn_mask=mask, need_weights=False)[0]
        h = torch.nn.functional.layer_norm(x, (128,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = torch.nn.functional.gelu(h @ sd[p + "mlp.c_fc.weight"].t() + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"].t() + sd[p + "mlp.c_proj.bias"]
    x = torch.nn.functional.layer_norm(x, (128,), sd["ln_final.weight"], sd["ln_final.bias"])
    ref = x[0, ids[0].argmax()] @ sd["text_projection"]
    with torch.no_grad():
        got = reward.model.get_text_features(input_ids=ids)
    got = getattr(got, "pooler_output", got)[0]
    assert torch.allclose(got, ref, atol=1e-4)


def test_registry_builds_both(hps_dir: Path, ir_dir: Path) -> None:
    hps = get_reward("hpsv2", model_name_or_path=hps_dir, tokenizer_name_or_path=str(hps_dir / "tokenizer"),
                     device="cpu", local_files_only=True)
    assert hps.hps_version == "v2.1"
    assert get_reward("hpsv2", model_name_or_path="v2.0").hps_version == "v2.0"
    with pytest.raises(ValueError, match="hps_version"):
        get_reward("hpsv2", hps_version="v3")


def test_preflight_says_in_one_line_why_a_reward_cannot_load(tmp_path: Path, ir_dir: Path) -> None:
    from promptloop.rewards import CombinedReward, RewardLoadError

    offline = {"device": "cpu", "local_files_only": True}
    for name in ("imagereward", "hpsv2", "aesthetic"):  # official Hub ids, not in the (empty) offline cache
        combined = CombinedReward({"alignment": 1.0, name: 1.0}, reward_kwargs={name: offline})
        with pytest.raises(RewardLoadError, match=rf"^reward '{name}' cannot load: ") as info:
            combined.preflight()
        assert "\n" not in str(info.value)
    ok = CombinedReward({"imagereward": 1.0}, reward_kwargs={"imagereward": {
        **offline, "model_name_or_path": str(ir_dir), "tokenizer_name_or_path": str(ir_dir / "tokenizer")}})
    assert ok.preflight().rewards["imagereward"].loaded


def test_preprocessing_crops_and_pads_like_the_official_transforms() -> None:
    from promptloop.rewards.adapters.checkpoints import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, center_crop, pad_square

    wide = np.full((20, 40, 3), 255, dtype=np.uint8)
    black = [(0 - m) / s for m, s in zip(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, strict=True)]
    white = [(1 - m) / s for m, s in zip(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, strict=True)]
    crop = center_crop([wide], 10)
    assert crop.shape == (1, 3, 10, 10) and torch.allclose(crop[0, :, 5, 5], torch.tensor(white), atol=1e-4)
    pad = pad_square([wide], 10)  # 40x20 -> 10x5, centred: rows 0-1 and 8-9 black
    assert torch.allclose(pad[0, :, 0, 5], torch.tensor(black), atol=1e-4)
    assert torch.allclose(pad[0, :, 5, 5], torch.tensor(white), atol=1e-4)
