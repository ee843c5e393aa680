"""`promptloop plan` for every model reward and for quantized models: the embedded architectures give the published
sizes, meta counts equal materialised ones, and what the plan counts as quantized is what the loaders quantize."""

from __future__ import annotations

import importlib.util
import operator
from pathlib import Path

import pytest
import torch

from promptloop.plan import build_meta, count_params, plan_config, reward_arch
from promptloop.plan.archs import CLIP_VIT_H14, CLIP_VIT_L14, HPSV3, QWEN2_VL_7B, QWEN25_VL_7B, Arch
from promptloop.plan.meta import quantized_split
from promptloop.plan.resolve import reward_quantization_route
from promptloop.rewards.adapters import model_rewards_registered
from promptloop.testing.rewards import tiny_clip_dir, tiny_hpsv3_dir, tiny_imagereward_dir
from promptloop.train.config_load import load_config

torch.set_num_threads(1)
needs_bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                               reason="bitsandbytes is not installed (pip install bitsandbytes)")


@pytest.fixture(scope="module")
def clip64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP whose linear widths suit bitsandbytes' 4-bit CPU kernel."""
    return tiny_clip_dir(tmp_path_factory.mktemp("clip64"), width=64, projection_dim=32)


@pytest.fixture(scope="module")
def hpsv3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_hpsv3_dir(tmp_path_factory.mktemp("hpsv3"))


def test_embedded_reward_architectures_give_the_published_sizes() -> None:
    assert count_params(build_meta(CLIP_VIT_L14)) == 427_616_513  # openai/clip-vit-large-patch14
    assert count_params(build_meta(CLIP_VIT_H14)) == 986_109_441  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K
    base = Arch("transformers", "Qwen2VLForConditionalGeneration", QWEN2_VL_7B, "test")
    assert count_params(build_meta(base)) == 8_291_375_616  # Qwen/Qwen2-VL-7B-Instruct
    # HPSv3: the base without lm_head, one embedding row per token of the tokenizer + <|Reward|>, plus its head
    hidden, vocab = 3584, 151_657 + 1
    head = hidden * 1024 + 1024 + 1024 * 16 + 16 + 16 * 2 + 2
    assert count_params(build_meta(HPSV3)) == 8_291_375_616 - 2 * 152_064 * hidden + vocab * hidden + head
    aesthetic = build_meta(reward_arch("aesthetic"))
    assert count_params(aesthetic) - count_params(build_meta(CLIP_VIT_L14)) == (
        768 * 1024 + 1024 + 1024 * 128 + 128 + 128 * 64 + 64 + 64 * 16 + 16 + 16 + 1)


def test_meta_counts_equal_the_loaded_rewards(clip64: Path, hpsv3_dir: Path, tmp_path: Path) -> None:
    from promptloop.rewards import get_reward
    from promptloop.testing.rewards import tiny_aesthetic_head

    opts = {"device": "cpu", "local_files_only": True}
    with model_rewards_registered():
        clip = get_reward("clipscore", model_name_or_path=str(clip64), **opts).load()
        assert count_params(build_meta(reward_arch("clipscore", {"model_name_or_path": str(clip64)}))) == \
            count_params(clip.embedder.model)
        head = tiny_aesthetic_head(tmp_path / "head.safetensors", embed_dim=32)
        aes = get_reward("aesthetic", model_name_or_path=str(clip64), head_weights=str(head), **opts).load()
        meta = build_meta(reward_arch("aesthetic", {"model_name_or_path": str(clip64)}))
        assert count_params(meta) == count_params(aes.embedder.model) + count_params(aes.head)
        h3 = get_reward("hpsv3", model_name_or_path=str(hpsv3_dir), base_model_name_or_path=str(hpsv3_dir / "base"),
                        pixels=56 * 56, **opts).load()
        meta = build_meta(reward_arch("hpsv3", {"base_model_name_or_path": str(hpsv3_dir / "base")}))
        # the plan reads the base's config: the checkpoint's embedding rows are not known before loading it
        rows = h3.model.backbone.config.text_config.vocab_size - meta.backbone.config.text_config.vocab_size
        assert count_params(meta) + rows * h3.model.backbone.config.text_config.hidden_size == count_params(h3.model)


def _bnb_layers(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """{name: (weight elements, bytes kept)} of the bitsandbytes linear layers of a loaded model."""
    import bitsandbytes as bnb

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, bnb.nn.Linear8bitLt):
            out[name] = (m.in_features * m.out_features, m.weight.nbytes + m.weight.SCB.nbytes)
        elif isinstance(m, bnb.nn.Linear4bit):
            qs = m.weight.quant_state
            out[name] = (m.in_features * m.out_features, m.weight.nbytes + qs.absmax.nbytes + qs.code.nbytes)
    return out


def _check_split(plain: torch.nn.Module, quantized: torch.nn.Module, quantization: str, how: str,
                 skip: tuple[str, ...] = ()) -> None:
    split = quantized_split(plain, quantization, how=how, skip=skip)
    layers = _bnb_layers(quantized)
    assert split.layers == len(layers) > 0
    assert split.quantized_params == sum(n for n, _ in layers.values())
    assert split.quantized_bytes == sum(b for _, b in layers.values())
    bnb_weights = {id(quantized.get_submodule(n).weight) for n in layers}
    assert split.rest_params == sum(p.numel() for p in quantized.parameters() if id(p) not in bnb_weights)


@needs_bnb
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_split_is_what_the_reward_loaders_quantize(quantization: str, clip64: Path, hpsv3_dir: Path,
                                                              tmp_path: Path) -> None:
    from promptloop.rewards import get_reward

    opts = {"device": "cpu", "local_files_only": True}
    ir = tiny_imagereward_dir(tmp_path / "ir")
    cases = [  # (reward, options, the loaded model's attribute path)
        ("clipscore", {"model_name_or_path": str(clip64)}, "embedder.model"),
        ("hpsv3", {"model_name_or_path": str(hpsv3_dir), "base_model_name_or_path": str(hpsv3_dir / "base"),
                   "pixels": 56 * 56}, "model"),
    ]
    if quantization == "8bit":  # the tiny ImageReward's widths do not suit the 4-bit CPU kernel
        cases.append(("imagereward", {"model_name_or_path": str(ir), "tokenizer_name_or_path": str(ir / "tokenizer")},
                      "model"))
    with model_rewards_registered():
        for name, options, attr in cases:
            plain = get_reward(name, **options, **opts).load()
            quant = get_reward(name, **options, quantization=quantization, **opts).load()
            skip = tuple(reward_arch(name, options).extra.get("quant_skip", ()))
            get = operator.attrgetter(attr)
            _check_split(get(plain), get(quant), quantization, reward_quantization_route(name), skip)


@needs_bnb
@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_split_is_what_the_policy_loader_quantizes(quantization: str, tmp_path: Path) -> None:
    from promptloop.testing.policies import tiny_llava_policy
    from promptloop.train.components import load_policy
    from promptloop.train.config import PolicyConfig

    tiny_llava_policy(seed=0).save_pretrained(tmp_path / "llava")
    plain = load_policy(PolicyConfig(name_or_path=str(tmp_path / "llava")), "cpu").model
    quant = load_policy(PolicyConfig(name_or_path=str(tmp_path / "llava"), quantization=quantization), "cpu").model
    _check_split(plain, quant, quantization, "from_pretrained")


def test_plan_rows_of_quantized_rewards_and_policy(tmp_path: Path) -> None:
    f = tmp_path / "q.yaml"
    f.write_text("pipeline: {name_or_path: 'tiny:sd'}\n"
                 "policy: {name_or_path: Qwen/Qwen2.5-VL-7B-Instruct, quantization: 4bit, lora_r: 8}\n"
                 "rewards: {hpsv3: 1.0, pickscore: 0.5, aesthetic: 0.1}\n"
                 "reward_kwargs: {hpsv3: {dtype: bfloat16, quantization: 8bit}, pickscore: {quantization: 4bit}}\n")
    rec = plan_config(load_config(f), [1], 80.0, "q")
    rows = {c["name"]: c for c in rec["components"]}
    assert {"policy", "policy.nf4", "reward.hpsv3", "reward.hpsv3.int8", "reward.pickscore",
            "reward.pickscore.nf4", "reward.aesthetic"} <= set(rows)
    assert "reward.aesthetic.nf4" not in rows and rows["reward.aesthetic"]["dtype"] == "float32"
    full = count_params(build_meta(HPSV3))
    assert rows["reward.hpsv3"]["params"] + rows["reward.hpsv3.int8"]["params"] == full
    assert rows["reward.hpsv3"]["dtype"] == "bfloat16"
    n8 = rows["reward.hpsv3.int8"]["params"]
    assert n8 < rows["reward.hpsv3.int8"]["bytes"] < 1.01 * n8  # int8 + a float32 scale per row
    n4 = rows["reward.pickscore.nf4"]["params"]
    assert n4 / 2 < rows["reward.pickscore.nf4"]["bytes"] < 0.57 * n4  # two per byte + an absmax per 64
    assert rec["reward_bytes"] == sum(c["bytes"] for k, c in rows.items() if k.startswith("reward."))
    # the 7B policy in NF4 (its embeddings and lm_head kept in the compute dtype) is under a third of bf16
    bf16 = 2 * count_params(build_meta(QWEN25_VL_7B))
    assert rows["policy"]["bytes"] + rows["policy.nf4"]["bytes"] < 0.4 * bf16
