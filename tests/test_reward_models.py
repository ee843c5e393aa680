"""Tests of the model-based reward adapters on tiny random offline checkpoints (no downloads)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.rewards import CombinedReward, available_rewards, build_reward_fn, get_reward
from promptloop.rewards.adapters import (
    AestheticHead,
    AestheticReward,
    load_head_state_dict,
    model_rewards_registered,
)
from promptloop.testing.rewards import TINY_PROJECTION_DIM, tiny_aesthetic_head, tiny_clip_dir
from promptloop.world.imaging import AnalyzerInputError
from promptloop.world.shapes.render import render_batch
from promptloop.world.shapes.scene import Scene, SceneObject

QUERIES = ["a red circle", "a blue square", "a green triangle on the left", "a red circle"]
MODEL_REWARDS = ("aesthetic", "clipscore", "hpsv2", "hpsv3", "imagereward", "pickscore")


@pytest.fixture(scope="module", autouse=True)
def _registered() -> Iterator[None]:
    """Register the model rewards for this module only (other tests iterate over the whole registry)."""
    with model_rewards_registered():
        yield


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clip_dir(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def head_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_aesthetic_head(tmp_path_factory.mktemp("head") / "head.safetensors", TINY_PROJECTION_DIM)


def _images(n: int = 4, seed: int = 0, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size + 8, generator=g)


def _clip(clip_dir: Path, name: str = "clipscore", **kw: object) -> Any:
    return get_reward(name, model_name_or_path=clip_dir, device="cpu", local_files_only=True, **kw)


def _reference(clip_dir: Path, images: torch.Tensor, queries: list[str]) -> tuple[torch.Tensor, float]:
    """Diagonal of CLIPModel's own logits_per_image (and exp(logit_scale)), through the image processor."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    proc = AutoImageProcessor.from_pretrained(clip_dir, local_files_only=True, backend="pil")
    ims = [np.round(im.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for im in images]
    with torch.no_grad():
        out = model(
            **tok(queries, padding=True, return_tensors="pt"),
            pixel_values=proc(images=ims, return_tensors="pt")["pixel_values"],
        )
    scale = float(model.logit_scale.detach().exp())
    return out.logits_per_image.diagonal(), scale


def test_registered_on_import_and_lazy() -> None:
    assert set(MODEL_REWARDS) <= set(available_rewards())
    code = (
        "import sys, promptloop.rewards as r, promptloop.testing.rewards; "
        "from promptloop.rewards.adapters import MODEL_REWARD_FACTORIES, register_model_rewards; "
        "assert set(MODEL_REWARD_FACTORIES) <= set(r.available_rewards()); "
        "assert register_model_rewards() == []; r.get_reward('clipscore'); r.get_reward('imagereward'); "
        "bad = [m for m in ('transformers', 'ImageReward', 'hpsv2') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_clipscore_shapes_lazy_and_reference(clip_dir: Path) -> None:
    reward = _clip(clip_dir)
    assert not reward.loaded  # built on first use
    images = _images()
    out = reward(images, QUERIES)
    assert reward.loaded
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32
    assert torch.equal(out.scores, out.breakdown["raw"])
    assert bool(((out.scores >= -1) & (out.scores <= 1)).all())
    logits, scale = _reference(clip_dir, images, QUERIES)
    assert torch.allclose(out.scores * scale, logits, atol=1e-4)


def test_clipscore_deterministic_and_batch_invariant(clip_dir: Path) -> None:
    images = _images(5, seed=1)
    queries = [*QUERIES, "a blue square"]
    full = _clip(clip_dir, batch_size=16)(images, queries).scores
    again = _clip(clip_dir, batch_size=16)(images, queries).scores  # a fresh load gives the same
    assert torch.equal(full, again)
    chunked = _clip(clip_dir, batch_size=2)(images, queries).scores
    reward = _clip(clip_dir)
    singles = torch.cat([reward(images[i : i + 1], queries[i : i + 1]).scores for i in range(5)])
    assert torch.allclose(full, chunked, atol=1e-5)
    assert torch.allclose(full, singles, atol=1e-5)


def _official_clip_transform(image: np.ndarray, size: int, offset: Any = lambda excess: int(round(excess / 2.0))
                             ) -> np.ndarray:
    """OpenAI CLIP's preprocessing (`clip.load`'s torchvision transform) written out with PIL and numpy:
    Resize(size, bicubic) on the PIL image (long side int(size * long / short)), CenterCrop(size) at torchvision's
    offsets int(round(excess / 2)) (or `offset(excess)`), ToTensor, Normalize(CLIP mean, std): (3, size, size)."""
    im = Image.fromarray(image)
    w, h = im.size
    new_long = int(size * max(w, h) / min(w, h))
    nw, nh = (size, new_long) if w <= h else (new_long, size)
    arr = np.asarray(im.resize((nw, nh), Image.BICUBIC), dtype=np.float32) / 255.0
    top, left = offset(nh - size), offset(nw - size)
    arr = arr[top: top + size, left: left + size]
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return ((arr - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("name", ["clipscore", "pickscore", "aesthetic"])
def test_clip_family_preprocesses_as_the_official_transform_whatever_is_installed(
    clip_dir: Path, head_file: Path, name: str
) -> None:
    """The CLIP rewards' image processor is transformers' PIL one whatever is installed (not the torchvision one,
    transformers' default where torchvision is), and its pixels are the official transform's, exactly where the
    crop offsets agree (excess 0, 1, 2 mod 4); for an excess of 3 mod 4 the crop is 1 pixel off (the documented
    deviation: the offset rounded down)."""
    kw = {"head_weights": head_file} if name == "aesthetic" else {}
    embedder = _clip(clip_dir, name, **kw).load().embedder
    assert type(embedder.image_processor).__name__ == "CLIPImageProcessorPil"
    rng = np.random.default_rng(0)
    for h, w in ((40, 40), (32, 64), (50, 37), (32, 33), (32, 34), (35, 32), (32, 39)):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        got = embedder.image_processor(images=[image], return_tensors="pt")["pixel_values"][0].numpy()
        excess = max(h, w) * 32 // min(h, w) - 32
        if excess % 4 != 3:
            np.testing.assert_allclose(got, _official_clip_transform(image, 32), rtol=0, atol=1e-5)
        else:
            assert float(np.abs(got - _official_clip_transform(image, 32)).max()) > 0.1
            np.testing.assert_allclose(got, _official_clip_transform(image, 32, offset=lambda e: e // 2), rtol=0,
                                       atol=1e-5)


def test_clipscore_depends_on_text_and_image(clip_dir: Path) -> None:
    reward = _clip(clip_dir)
    image = _images(1, seed=2).repeat(3, 1, 1, 1)
    by_text = reward(image, ["a red circle", "a blue square", "zzz qqq"]).scores
    assert len(set(by_text.tolist())) == 3
    by_image = reward(_images(3, seed=3), ["a red circle"] * 3).scores
    assert len(set(by_image.tolist())) == 3


def test_image_input_kinds_agree(clip_dir: Path) -> None:
    reward = _clip(clip_dir)
    images = _images(2, seed=4)
    hwc = images.permute(0, 2, 3, 1).numpy()
    pil = [Image.fromarray(np.round(a * 255).astype(np.uint8)) for a in hwc]
    ref = reward(images, QUERIES[:2]).scores
    for other in (hwc, pil, (images * 255).round().to(torch.uint8), list(images)):
        assert torch.allclose(reward(other, QUERIES[:2]).scores, ref, atol=1e-6)
    with pytest.raises(ValueError, match="one query string per image"):
        reward(images, QUERIES[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reward(images * 3, QUERIES[:2])
    mixed = [pil[0], pil[1].resize((60, 44))]  # a list may mix sizes: the processor resizes
    assert reward(mixed, QUERIES[:2]).scores[0] == pytest.approx(float(ref[0]), abs=1e-6)
    # inputs are validated (with the world rewards' errors) before any model is loaded
    unloaded = get_reward("clipscore", device="cpu")
    with pytest.raises(AnalyzerInputError, match="non-finite"):
        unloaded(torch.full((2, 3, 32, 32), float("nan")), QUERIES[:2])
    assert not unloaded.loaded


def test_clipscore_rescale_and_normalize(clip_dir: Path) -> None:
    images = _images(4, seed=5)
    cos = _clip(clip_dir)(images, QUERIES).scores
    rescaled = _clip(clip_dir, rescale=True)(images, QUERIES).scores
    assert torch.allclose(rescaled, 2.5 * cos.clamp_min(0))
    lo, hi = float(cos.min()), float(cos.max())
    out = _clip(clip_dir, normalize=(lo, hi))(images, QUERIES)
    assert torch.allclose(out.scores, ((cos - lo) / (hi - lo)).clamp(0, 1), atol=1e-6)
    assert float(out.scores.min()) == 0.0 and abs(float(out.scores.max()) - 1.0) < 1e-6
    assert torch.equal(out.breakdown["raw"], cos)
    with pytest.raises(ValueError, match="lo < hi"):
        _clip(clip_dir, normalize=(1.0, 0.0))


def test_pickscore_is_scaled_cosine(clip_dir: Path) -> None:
    images = _images(4, seed=6)
    reward = _clip(clip_dir, "pickscore")
    assert reward.processor_name_or_path is None  # a custom checkpoint uses its own processor
    out = reward(images, QUERIES)
    logits, scale = _reference(clip_dir, images, QUERIES)
    assert torch.allclose(out.scores, logits, atol=1e-4)
    assert torch.allclose(out.scores, scale * _clip(clip_dir)(images, QUERIES).scores, atol=1e-5)
    singles = torch.cat([reward(images[i : i + 1], QUERIES[i : i + 1]).scores for i in range(4)])
    assert torch.allclose(out.scores, singles, atol=1e-4)
    default = get_reward("pickscore", device="cpu")
    assert default.model_name_or_path == "yuvalkirstain/PickScore_v1"
    assert default.processor_name_or_path == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    assert default.trust_remote_code is False


def test_aesthetic_head_on_tiny_clip(clip_dir: Path, head_file: Path, tmp_path: Path) -> None:
    from transformers import CLIPModel

    reward = get_reward("aesthetic", model_name_or_path=clip_dir, head_weights=head_file, device="cpu", batch_size=3)
    images = _images(4, seed=7)
    out = reward(images, QUERIES)
    assert out.scores.shape == (4,) and out.scores.dtype == torch.float32
    # query-blind, batch-invariant
    assert torch.allclose(reward(images, ["x"] * 4).scores, out.scores)
    singles = torch.cat([reward(images[i : i + 1], ["x"]).scores for i in range(4)])
    assert torch.allclose(out.scores, singles, atol=1e-5)
    # equals head(L2-normalised CLIP image embedding)
    head = AestheticHead(TINY_PROJECTION_DIM)
    head.load_state_dict(load_head_state_dict(head_file))
    assert reward.embedder is not None
    emb = torch.nn.functional.normalize(
        CLIPModel.from_pretrained(clip_dir, local_files_only=True)
        .get_image_features(
            pixel_values=reward.embedder.image_processor(
                images=[np.round(im.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for im in images],
                return_tensors="pt",
            )["pixel_values"]
        )
        .pooler_output,
        dim=-1,
    )
    with torch.no_grad():
        assert torch.allclose(out.scores, head.eval()(emb).reshape(-1), atol=1e-5)
    # the same head as a .pt state dict (torch.load weights_only=True) with a prefix, or a directory
    pt = tmp_path / "head.pth"
    torch.save({f"mlp.{k}": v for k, v in head.state_dict().items()}, pt)
    for weights in (pt, tmp_path):
        other = AestheticReward(clip_dir, head_weights=weights, device="cpu")
        assert torch.allclose(other(images, QUERIES).scores, out.scores, atol=1e-6)


def test_aesthetic_errors(clip_dir: Path, tmp_path: Path) -> None:
    default = get_reward("aesthetic", device="cpu")  # the official v2 head from the Hub, fetched on load
    assert (default.head_weights, default.head_filename) == ("trl-lib/ddpo-aesthetic-predictor", "aesthetic-model.pth")
    wrong = tiny_aesthetic_head(tmp_path / "wrong.safetensors", TINY_PROJECTION_DIM + 1)
    with pytest.raises(ValueError, match="17-d embeddings"):
        AestheticReward(clip_dir, head_weights=wrong, device="cpu").load()
    with pytest.raises(FileNotFoundError):
        AestheticReward(clip_dir, head_weights=tmp_path / "missing.safetensors", device="cpu").load()


def test_combination_with_world_alignment(clip_dir: Path) -> None:
    scenes = [
        Scene((SceneObject("circle", "red", "small", (0, 1)),)),
        Scene((SceneObject("square", "blue", "large", (2, 1)),)),
    ]
    images = torch.from_numpy(render_batch(scenes)).permute(0, 3, 1, 2)
    queries = ["a red circle", "a red circle"]
    opts = {"model_name_or_path": str(clip_dir), "device": "cpu", "local_files_only": True}
    fn = build_reward_fn({"alignment": 1.0, "clipscore": 0.5}, reward_kwargs={"clipscore": opts})
    res = fn(images, queries)
    assert set(res) == {"alignment", "clipscore", "total"}
    assert torch.allclose(res["alignment"], torch.tensor([1.0, 1 / 3]))  # count fact right, colour/shape wrong
    assert torch.allclose(res["total"], res["alignment"] + 0.5 * res["clipscore"])
    combined = CombinedReward(
        {"alignment": 3.0, "clipscore": 1.0}, reward_kwargs={"clipscore": {**opts, "normalize": (-1.0, 1.0)}}
    )
    out = combined(images, queries)
    assert bool(((out.scores >= 0) & (out.scores <= 1)).all())
    norm = (res["clipscore"] + 1) / 2
    assert torch.allclose(out.scores, (3 * res["alignment"] + norm) / 4, atol=1e-5)
    assert torch.allclose(out.breakdown["clipscore/raw"], res["clipscore"], atol=1e-6)
