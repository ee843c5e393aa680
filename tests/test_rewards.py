"""Tests of the batched reward API: world rewards, registry and weighted combinations."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.rewards import (
    AnalyzerInputError,
    CombinedReward,
    Reward,
    RewardOutput,
    UnknownRewardError,
    available_rewards,
    build_reward_fn,
    get_reward,
    register_reward,
    unregister_reward,
)
from promptloop.world.shapes.grammar import caption_scene
from promptloop.world.shapes.render import render, render_batch
from promptloop.world.shapes.scene import Scene, SceneObject, SceneSampler

RED_CIRCLE_LEFT = SceneObject("circle", "red", "small", (0, 1))
BLUE_SQUARE_RIGHT = SceneObject("square", "blue", "large", (2, 1))
QUERY = "a red circle left of a blue square"  # 6 facts: 2 + 2 objects, 1 relation, 1 count

WORLD_REWARDS = ("alignment", "proxy", "count")  # image+query rewards that need no model download


def _chw(scenes: list[Scene]) -> torch.Tensor:
    return torch.from_numpy(render_batch(scenes)).permute(0, 3, 1, 2)


def _align(scenes: list[Scene], queries: list[str]) -> RewardOutput:
    return get_reward("alignment")(_chw(scenes), queries)


def test_exact_render_scores_one() -> None:
    scene = Scene((RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT), "white")
    queries = [QUERY, "a small red circle on the left, and a big blue square on the right on a white background"]
    out = _align([scene, scene], queries)
    assert out.scores.tolist() == [1.0, 1.0]
    assert out.breakdown["full_correct"].tolist() == [1.0, 1.0]


def test_random_captions_of_rendered_scenes_score_one() -> None:
    sampler, rng = SceneSampler(7, "any"), random.Random(7)
    scenes = [sampler.sample() for _ in range(40)]
    queries = [caption_scene(s, rng, p_size=0.7, p_position=0.5, p_background=0.5)[0] for s in scenes]
    out = _align(scenes, queries)
    assert torch.all(out.scores == 1.0)


def test_wrong_colour_on_one_of_two_objects() -> None:
    scene = Scene((RED_CIRCLE_LEFT, SceneObject("square", "green", "large", (2, 1))))
    out = _align([scene], [QUERY])
    # red circle: 2/2; "blue" square matched to the green square: shape only; relation holds; count holds
    assert out.scores.item() == pytest.approx(5 / 6)
    assert out.breakdown["colour"].item() == pytest.approx(0.5)
    assert out.breakdown["shape"].item() == 1.0
    assert out.breakdown["relation"].item() == 1.0
    assert out.breakdown["count"].item() == 1.0
    assert out.breakdown["full_correct"].item() == 0.0


def test_missing_object() -> None:
    out = _align([Scene((RED_CIRCLE_LEFT,))], [QUERY])
    # red circle 2/2, blue square 0/2, relation needs both objects: 0, count 1 != 2: 0
    assert out.scores.item() == pytest.approx(2 / 6)
    assert out.breakdown["count"].item() == 0.0
    assert out.breakdown["relation"].item() == 0.0


def test_relation_violated() -> None:
    scene = Scene((SceneObject("circle", "red", "small", (2, 0)), SceneObject("square", "blue", "large", (0, 2))))
    out = _align([scene], [QUERY])
    assert out.scores.item() == pytest.approx(5 / 6)
    assert out.breakdown["relation"].item() == 0.0


def test_size_position_background_facts() -> None:
    scene = Scene((SceneObject("circle", "red", "small", (0, 0)),), "gray")
    # facts: colour, shape, size (wrong), column + row (top right: row right, column wrong), count, background (wrong)
    out = _align([scene], ["a large red circle in the top right on a black background"])
    assert out.scores.item() == pytest.approx(4 / 7)
    assert out.breakdown["size"].item() == 0.0
    assert out.breakdown["position"].item() == pytest.approx(0.5)
    assert out.breakdown["background"].item() == 0.0
    assert out.asserted["background"].item() and out.asserted["size"].item()


def test_extra_object_breaks_only_the_count() -> None:
    scene = Scene((RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT, SceneObject("diamond", "yellow", "small", (1, 0))))
    out = _align([scene], [QUERY])
    assert out.scores.item() == pytest.approx(5 / 6)
    assert out.breakdown["count"].item() == 0.0


def test_unasserted_kinds_are_placeholders_and_masked() -> None:
    scene = Scene((RED_CIRCLE_LEFT,))
    out = _align([scene, scene], ["a red circle", "a small red circle on a black background"])
    assert out.breakdown["size"].tolist() == [1.0, 1.0]
    assert out.asserted["size"].tolist() == [False, True]
    assert out.asserted["relation"].tolist() == [False, False]
    means = out.mean_breakdown()
    assert means["size"] == 1.0 and np.isnan(means["relation"])


def test_scores_and_breakdown_bounded_on_noise_images() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.random((6, 32, 32, 3)).astype(np.float32)
    queries = [QUERY, "a red circle", "a big blue diamond above a small pink triangle", QUERY, QUERY, "a green box"]
    for name in WORLD_REWARDS:
        out = get_reward(name)(imgs, queries)
        assert out.scores.shape == (6,) and out.scores.dtype == torch.float32
        assert torch.all((out.scores >= 0) & (out.scores <= 1))
        for val in out.breakdown.values():
            assert val.shape == (6,) and torch.all((val >= 0) & (val <= 1)) and not torch.isnan(val).any()


def test_image_input_kinds_agree() -> None:
    scene = Scene((RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT))
    hwc = render(scene)
    u8 = np.round(hwc * 255).astype(np.uint8)
    reward = get_reward("alignment")
    for images in (hwc[None], u8[None], [Image.fromarray(u8)], _chw([scene])):
        assert reward(images, [QUERY]).scores.tolist() == [1.0]


def test_proxy_maximiser_ignores_the_query() -> None:
    correct = render(Scene((SceneObject("circle", "red", "small", (1, 1)),)))
    garish = np.zeros((32, 32, 3), dtype=np.float32)
    garish[:, :16] = (1.0, 0.0, 0.0)
    garish[:, 16:] = (0.0, 0.9, 1.0)
    garish[:2], garish[-2:], garish[:, :2], garish[:, -2:] = 0.0, 0.0, 0.0, 0.0  # dark frame: all else is "foreground"
    proxy = get_reward("proxy")
    out = proxy(np.stack([correct, garish]), ["a small red circle in the centre"] * 2)
    assert out.scores[1] > out.scores[0] + 0.3
    expected = 0.4 * out.breakdown["colourfulness"] + 0.3 * out.breakdown["contrast"] + 0.3 * out.breakdown["coverage"]
    assert torch.allclose(out.scores, expected)
    align = get_reward("alignment")(np.stack([correct, garish]), ["a small red circle in the centre"] * 2)
    assert align.scores[0] == 1.0 and align.scores[1] < 1.0


def test_count_reward() -> None:
    scenes = [Scene((RED_CIRCLE_LEFT,)), Scene((RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT))]
    out = get_reward("count")(_chw(scenes), [QUERY, QUERY])
    assert out.scores.tolist() == [0.5, 1.0]
    assert out.breakdown["exact"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 4, 32, 32), "3 channels in dim 1"),
        (np.zeros((2, 32, 32)), "numpy images need 3 channels"),
        (torch.full((2, 3, 32, 32), 2.0), "must lie in \\[0, 1\\]"),
        (torch.full((2, 3, 32, 32), float("nan")), "non-finite"),
        (np.zeros((2, 32, 32, 3), dtype=np.int16), "unsupported image dtype int16"),
    ],
)
def test_bad_images_raise(images: object, message: str) -> None:
    for name in WORLD_REWARDS:
        with pytest.raises(AnalyzerInputError, match=message):
            get_reward(name)(images, [QUERY, QUERY])


def test_bad_queries_raise() -> None:
    imgs = _chw([Scene((RED_CIRCLE_LEFT,))] * 2)
    alignment = get_reward("alignment")
    with pytest.raises(ValueError, match="query 'a red elephant' does not parse: unknown word 'elephant'"):
        alignment(imgs, [QUERY, "a red elephant"])
    with pytest.raises(ValueError, match="2 images but 1 queries"):
        alignment(imgs, [QUERY])
    with pytest.raises(ValueError, match="got a single string"):
        alignment(imgs, QUERY)  # type: ignore[arg-type]


def test_registry_lookup_and_errors() -> None:
    assert {"alignment", "proxy", "count"} <= set(available_rewards())
    assert isinstance(get_reward("alignment"), Reward)
    with pytest.raises(UnknownRewardError, match="unknown reward 'nope'; available rewards: .*alignment") as info:
        get_reward("nope")
    assert isinstance(info.value, KeyError)
    with pytest.raises(ValueError, match="already registered"):
        register_reward("alignment")(lambda: None)  # type: ignore[arg-type,return-value]


class _Constant:
    def __init__(self, value: float = 0.25) -> None:
        self.value = value

    def __call__(self, images: object, queries: list[str]) -> RewardOutput:
        return RewardOutput(torch.full((len(queries),), self.value), {"part": torch.full((len(queries),), 1.0)})


def test_custom_reward_and_weighted_combination() -> None:
    register_reward("constant_test")(_Constant)
    try:
        scene = Scene((RED_CIRCLE_LEFT, SceneObject("square", "green", "large", (2, 1))))
        imgs = _chw([scene, Scene((RED_CIRCLE_LEFT, BLUE_SQUARE_RIGHT))])
        fn = build_reward_fn({"alignment": 2.0, "constant_test": -1.0})
        res = fn(imgs, [QUERY, QUERY])
        assert set(res) == {"alignment", "constant_test", "total"}
        assert torch.allclose(res["alignment"], torch.tensor([5 / 6, 1.0]))
        assert torch.allclose(res["total"], 2.0 * res["alignment"] - 0.25)

        combined = CombinedReward({"alignment": 3.0, "constant_test": 1.0}, reward_kwargs={"constant_test": {"value": 1.0}})
        out = combined(imgs, [QUERY, QUERY])
        assert torch.allclose(out.scores, torch.tensor([(3 * 5 / 6 + 1) / 4, 1.0]))
        assert torch.allclose(out.breakdown["alignment/colour"], torch.tensor([0.5, 1.0]))
        assert out.breakdown["constant_test/part"].tolist() == [1.0, 1.0]
        assert "alignment/size" in out.asserted
        assert torch.allclose(combined.evaluate(imgs, [QUERY, QUERY])["total"], 3 * out.breakdown["alignment"] + 1)
    finally:
        unregister_reward("constant_test")
    assert "constant_test" not in available_rewards()


def test_combination_validation() -> None:
    with pytest.raises(UnknownRewardError, match="available rewards"):
        build_reward_fn({"alignment": 1.0, "aesthetic_typo": 1.0})
    with pytest.raises(ValueError, match="non-negative weights"):
        CombinedReward({"alignment": 1.0, "proxy": -0.5})
    with pytest.raises(ValueError, match="must be finite"):
        CombinedReward({"alignment": float("inf")})
    with pytest.raises(ValueError, match="non-empty mapping"):
        CombinedReward({})
