"""World v3 (Backdrops): scenes, captions, analyzer, legibility, rewards and rewrites, on rendered scenes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from promptloop.rewards import available_rewards, get_reward
from promptloop.world import get_world
from promptloop.world.backdrops.analyzer import analyze_scene, analyzer_check
from promptloop.world.backdrops.grammar import DECOY_PHRASES, ParseError, parse, realise, strip_decoy, training_caption
from promptloop.world.backdrops.legibility import best_colour, contrast_ratio, legibility, room_arithmetic
from promptloop.world.backdrops.prompts import prompt_set
from promptloop.world.backdrops.render import render
from promptloop.world.backdrops.rewrites import RULES, fill_colours, upfront_candidates
from promptloop.world.backdrops.scene import (
    COLOURS,
    VALUE_MAX,
    VALUE_MIN,
    Backdrop,
    ObjectQuery,
    Query,
    Scene,
    SceneObject,
    SceneSampler,
    SpecError,
)

BACKDROP_WORDS = ("background", "backdrop", "dark", "light", "bright", "grey", "gray")


def _scene(value: float, *objects: tuple[str, str, tuple[int, int]]) -> Scene:
    return Scene(tuple(SceneObject(s, c, cell) for s, c, cell in objects), Backdrop(value))


def test_registered_as_v3_with_the_world_interface() -> None:
    world = get_world("v3")
    assert world.NAME == "backdrops" and world.VERSION == "v3" and world.RESOLUTION == 32
    assert {"backdrops_alignment", "backdrops_legible"} <= set(available_rewards())
    scene = world.SceneSampler(0).sample()
    assert world.render(scene).shape == (32, 32, 3)
    assert world.parse(strip_decoy(world.training_caption(scene, random.Random(0)))).objects


def test_captions_round_trip_and_never_name_the_backdrop() -> None:
    sampler, rng = SceneSampler(1), random.Random(1)
    open_colours = named = decoys = 0
    decoy_light = []
    for _ in range(2000):
        scene = sampler.sample()
        caption = training_caption(scene, rng)
        truthful = strip_decoy(caption)
        if truthful != caption:  # a decoy phrase: independent of the backdrop, never the gate's light / dark words
            decoys += 1
            assert caption[len(truthful) + 1 :] in DECOY_PHRASES
            decoy_light.append((" white " in caption[len(truthful):], scene.backdrop.value))
        query = parse(truthful)
        assert realise(query) == truthful
        assert not any(w in truthful.split() for w in BACKDROP_WORDS)
        assert not {"light", "dark", "backdrop"} & set(caption.split())
        for o, q in zip(scene.objects, query.objects, strict=True):
            assert q.shape == o.shape and q.colour in (None, o.colour)
            open_colours += q.colour is None
            named += q.colour is not None
    assert 0.3 < open_colours / (open_colours + named) < 0.5  # P_COLOUR = 0.6
    assert 0.15 < decoys / 2000 < 0.25  # P_DECOY = 0.2
    white = [v for w, v in decoy_light if w]
    other = [v for w, v in decoy_light if not w]
    assert abs(sum(white) / len(white) - sum(other) / len(other)) < 0.06  # the decoy says nothing of the backdrop


@pytest.mark.parametrize("bad", ["a red", "a purple circle", "a circle on a dark background", "circle", "a circle and",
                                 "a circle, a square, a diamond and a triangle", "a circle in the top", 3])
def test_parse_refuses_text_outside_the_language(bad: object) -> None:
    with pytest.raises(ParseError):
        parse(bad)  # type: ignore[arg-type]


def test_backdrops_are_drawn_independently_and_span_the_range() -> None:
    sampler = SceneSampler(2)
    scenes = [sampler.sample() for _ in range(4000)]
    values = np.asarray([s.backdrop.value for s in scenes])
    assert VALUE_MIN <= values.min() and values.max() <= VALUE_MAX
    quarters = np.histogram(values, bins=4, range=(VALUE_MIN, VALUE_MAX))[0] / len(values)
    assert quarters.min() > 0.22
    for colour in COLOURS:  # the colour of an object says nothing about the backdrop
        with_colour = [s.backdrop.value for s in scenes if any(o.colour == colour for o in s.objects)]
        assert abs(np.mean(with_colour) - values.mean()) < 0.02
    with pytest.raises(SpecError):
        Backdrop(0.95)


def test_legibility_is_wcag_contrast_and_the_best_colour_depends_on_the_backdrop() -> None:
    assert contrast_ratio((0, 0, 0), (1, 1, 1)) == pytest.approx(21.0)
    assert contrast_ratio((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)) == pytest.approx(1.0)
    assert legibility(4.5) == 1.0 and legibility(1.0) == 0.0 and legibility(2.75) == pytest.approx(0.5)
    assert best_colour((0.2, 0.2, 0.2)) == "white" and best_colour((0.8, 0.8, 0.8)) == "black"
    arith = room_arithmetic()
    assert arith["best_fixed_colour"] == "black"
    assert arith["best_fixed"] == pytest.approx(0.7228, abs=1e-3)
    assert arith["best_per_backdrop"] == pytest.approx(0.9959, abs=1e-3)
    assert arith["gap"] == pytest.approx(0.2731, abs=1e-3)


def test_analyzer_reads_objects_and_backdrop_of_rendered_scenes() -> None:
    report = analyzer_check(n=120, seed=3)
    assert report["conditions"]["clean"]["attribute_accuracy"] == 1.0
    assert report["min_attribute_accuracy"] >= 0.95
    assert report["conditions"]["clean"]["backdrop_luminance_abs_error"] < 0.005
    scene = _scene(0.3, ("circle", "white", (0, 0)), ("triangle", "black", (2, 2)))
    analysis = analyze_scene(render(scene))
    found = {d.cell: d for d in analysis.objects}
    assert found[(0, 0)].shape == "circle" and found[(0, 0)].colour == "white"
    assert found[(0, 0)].legibility > 0.9 > found[(2, 2)].legibility


def test_legible_reward_is_alignment_times_legibility() -> None:
    reward = get_reward("backdrops_legible")
    dark, light = 0.2, 0.8
    images = np.stack([render(_scene(dark, ("circle", "white", (0, 1)), ("square", "red", (2, 1)))),
                       render(_scene(light, ("circle", "white", (0, 1)), ("square", "red", (2, 1)))),
                       render(_scene(light, ("circle", "black", (0, 1)), ("square", "red", (2, 1))))])
    query = "a circle left of a red square"
    out = reward(images, [query] * 3)
    align = get_reward("backdrops_alignment")(images, [query] * 3).scores
    assert np.allclose(align.numpy(), 1.0)
    leg = out.breakdown["legibility"].numpy()
    assert np.allclose(out.scores.numpy(), leg)
    assert leg[0] > leg[1] + 0.3 and leg[2] > leg[1] + 0.3  # white on dark, black on light >> white on light
    wrong = reward(images[:1], ["a diamond left of a red square"])
    assert wrong.breakdown["alignment"].item() < 1.0 and wrong.scores.item() < out.scores[0].item()


def test_rewrites_fill_open_colours_and_parse_back() -> None:
    query = parse("a circle left of a red square, and a triangle")
    assert fill_colours(query, "white") == "a white circle left of a red square, and a white triangle"
    assert fill_colours(query, ["black", "yellow"]) == "a black circle left of a red square, and a yellow triangle"
    cands = upfront_candidates(query)
    assert cands[0] == realise(query) and len(cands) == 1 + len(COLOURS)
    for c in cands:
        back = parse(c)
        assert [o.shape for o in back.objects] == [o.shape for o in query.objects] and back.relations == query.relations
    rule, blind = RULES["legible"]
    dark = analyze_scene(render(_scene(0.2, ("diamond", "red", (1, 1)))))
    light = analyze_scene(render(_scene(0.8, ("diamond", "red", (1, 1)))))
    q = Query((ObjectQuery("circle"),))
    assert rule(q, dark) == "a white circle" and rule(q, light) == "a black circle"
    assert blind(q, dark) == blind(q, light) == "a black circle"


def test_prompt_sets_are_fixed_disjoint_and_mostly_open() -> None:
    train, heldout, shape_only = prompt_set("train"), prompt_set("heldout"), prompt_set("shape_only")
    assert len(train) == len(heldout) == 1024
    assert not {i.caption for i in train} & {i.caption for i in heldout}
    share = np.mean([o.colour is None for i in heldout for o in i.query.objects])
    assert 0.6 < share < 0.8  # 0.25 per object, but heldout leaves out the train set's many shape-only queries
    assert all(o.colour is None for i in shape_only for o in i.query.objects)
    for item in heldout[:100]:  # each query is true of the scene it was drawn from
        q = item.query
        assert [o.shape for o in q.objects] == [o.shape for o in item.scene.objects]
        assert all(qo.colour in (None, so.colour) for qo, so in zip(q.objects, item.scene.objects, strict=True))


@pytest.mark.parametrize("name", ["v1", "v2", "v3"])
def test_world_interface_functions_are_not_shadowed_by_submodules(name: str) -> None:
    """Importing a world's measurement modules must leave its package functions callable (a submodule named like
    the function, e.g. `room.py`, would replace the package attribute once imported)."""
    import importlib
    import pkgutil

    world = get_world(name)
    for module in pkgutil.iter_modules(world.__path__):
        importlib.import_module(f"{world.__name__}.{module.name}")
    for attr in ("analyzer_check", "backbone_eval", "room", "render", "parse", "prompt_set", "sample_prompts"):
        assert callable(getattr(world, attr)) and not isinstance(getattr(world, attr), type(world)), attr
