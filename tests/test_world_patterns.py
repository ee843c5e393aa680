"""World v2 (Patterns): registry, scenes, grammar round trip, renderer, analyzer, reward, rewrites, rules."""

from __future__ import annotations

import random

import numpy as np
import pytest

from promptloop.world import UnknownWorldError, get_world, world_name
from promptloop.world.imaging import AnalyzerInputError, gaussian_blur
from promptloop.world.patterns.analyzer import analyze_scene, analyze_scenes, score_detection
from promptloop.world.patterns.grammar import ParseError, caption_scene, parse, realise
from promptloop.world.patterns.prompts import prompt_set, sample_prompts
from promptloop.world.patterns.render import object_layers, render
from promptloop.world.patterns.rewrites import RULES, ObjectEdit, edit_caption, expressible_position, upfront_candidates
from promptloop.world.patterns.scene import (
    HELDOUT_PAIRS,
    ObjectQuery,
    Query,
    Scene,
    SceneObject,
    SceneSampler,
    SpecError,
)


def _scenes(n: int, seed: int = 0, split: str = "any") -> list[Scene]:
    sampler = SceneSampler(seed, split)  # type: ignore[arg-type]
    return [sampler.sample() for _ in range(n)]


def test_worlds_are_found_by_name_and_alias() -> None:
    assert world_name("v1") == "shapes" and world_name("v2") == "patterns" and world_name("patterns") == "patterns"
    v2 = get_world("v2")
    assert v2.NAME == "patterns" and v2.VERSION == "v2" and v2.RESOLUTION == 64
    assert get_world("shapes").RESOLUTION == 32
    assert world_name("v3") == "backdrops"
    with pytest.raises(UnknownWorldError, match="unknown world 'v4'"):
        get_world("v4")


def test_scene_rules_are_enforced() -> None:
    with pytest.raises(SpecError, match="unknown pattern"):
        SceneObject("circle", "red", "wavy", (0, 0))
    with pytest.raises(SpecError, match="share a grid cell"):
        Scene((SceneObject("circle", "red", "solid", (0, 0)), SceneObject("square", "blue", "dotted", (0, 0))))
    with pytest.raises(SpecError, match="distinct colours"):
        Scene((SceneObject("circle", "red", "solid", (0, 0)), SceneObject("square", "red", "dotted", (1, 0))))
    with pytest.raises(SpecError, match="phase"):
        SceneObject("circle", "red", "dotted", (0, 0), phase=(8, 0))


def test_mark_phases_are_random_per_object_and_leave_the_other_facts_alone() -> None:
    scenes = _scenes(200, 3)
    patterned = [o for s in scenes for o in s.objects if o.pattern != "solid"]
    assert len({o.phase for o in patterned}) > 30 and all(o.phase == (0, 0) for s in scenes for o in s.objects
                                                          if o.pattern == "solid")
    # the phase moves the marks, not the object: same body+marks coverage, different mark layout
    a = SceneObject("square", "blue", "checkered", (1, 1))
    b = SceneObject("square", "blue", "checkered", (1, 1), phase=(3, 5))
    (body_a, marks_a), (body_b, marks_b) = object_layers(a), object_layers(b)
    assert np.allclose(body_a + marks_a, body_b + marks_b) and not np.allclose(marks_a, marks_b)
    # the facts other than the phase are drawn from the scene generator alone
    facts = [[(o.shape, o.colour, o.pattern, o.cell) for o in s.objects] for s in scenes]
    sampler = SceneSampler(3, "any")
    sampler._phase_rng.random()  # a different phase stream
    assert facts == [[(o.shape, o.colour, o.pattern, o.cell) for o in sampler.sample().objects] for _ in range(200)]


def test_splits_keep_heldout_colour_pattern_pairs_apart() -> None:
    for s in _scenes(300, 1, "train"):
        assert not {(o.colour, o.pattern) for o in s.objects} & HELDOUT_PAIRS
    for s in _scenes(300, 2, "heldout"):
        assert {(o.colour, o.pattern) for o in s.objects} & HELDOUT_PAIRS
    train, heldout = prompt_set("train"), prompt_set("heldout")
    assert len(train) == len(heldout) == 1024 and len({it.caption for it in train}) == 1024
    assert not any(it.query.pairs() & HELDOUT_PAIRS for it in train)
    assert all(it.query.pairs() & HELDOUT_PAIRS for it in heldout)
    assert [it.caption for it in sample_prompts("heldout", 5, 3)] == [it.caption for it in sample_prompts("heldout", 5, 3)]
    open_positions = np.mean([all(o.column is None and o.row is None for o in it.query.objects) for it in heldout])
    assert open_positions > 0.6  # most queries leave where the objects land to the noise


@pytest.mark.parametrize("emphasis,p_position,p_relation", [(0.0, 0.15, 0.3), (0.5, 0.6, 0.6), (1.0, 1.0, 1.0)])
def test_every_caption_parses_back_to_its_facts(emphasis: float, p_position: float, p_relation: float) -> None:
    rng = random.Random(7)
    for scene in _scenes(600, 3):
        caption, query = caption_scene(scene, rng, emphasis=emphasis, p_position=p_position, p_relation=p_relation)
        assert parse(caption).canonical() == query.canonical(), caption
        assert parse(realise(query, rng, emphasis)).canonical() == query.canonical()


@pytest.mark.parametrize("caption", ["", "a striped", "a red circle and a red square", "a striped dotted red circle",
                                     "a clearly red circle", "a striped red circle with dots", "a red circle beside a box",
                                     "a red circle, a blue box, a pink disc and a green square"])
def test_captions_outside_the_grammar_are_refused(caption: str) -> None:
    with pytest.raises(ParseError):
        parse(caption)


def test_renderer_is_deterministic_and_draws_patterns() -> None:
    scene = Scene((SceneObject("circle", "red", "striped", (0, 0)), SceneObject("square", "blue", "dotted", (2, 2)),
                   SceneObject("triangle", "green", "solid", (1, 1))))
    img = render(scene)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32 and np.array_equal(img, render(scene))
    fractions = {o.pattern: object_layers(o)[1].sum() / sum(layer.sum() for layer in object_layers(o)) for o in scene.objects}
    assert fractions["solid"] == 0.0 and 0.3 < fractions["striped"] < 0.6 and 0.1 < fractions["dotted"] < 0.35


def test_analyzer_reads_rendered_scenes_exactly_and_blurred_ones_nearly() -> None:
    scenes = _scenes(60, 11)
    clean = np.stack([render(s) for s in scenes]).astype(np.float64)
    for images, floor in ((clean, 1.0), (gaussian_blur(clean, 0.5), 0.97)):
        correct = total = 0
        for s, a in zip(scenes, analyze_scenes(images), strict=True):
            for c, t in score_detection(s, a.objects).values():
                correct, total = correct + c, total + t
        assert correct / total >= floor
    with pytest.raises(AnalyzerInputError):
        analyze_scene(np.full((64, 64, 3), np.nan, dtype=np.float32))


def test_alignment_reward_judges_every_fact() -> None:
    from promptloop.rewards import get_reward

    reward = get_reward("patterns_alignment")
    items = sample_prompts("train", 24, 0)
    images = np.stack([render(it.scene) for it in items])
    out = reward(images, [it.caption for it in items])
    assert out.scores.min().item() == 1.0
    # the same scene with one object's pattern changed loses exactly that fact
    scene = Scene((SceneObject("circle", "red", "striped", (0, 0)), SceneObject("square", "blue", "dotted", (2, 2))))
    wrong = Scene((SceneObject("circle", "red", "checkered", (0, 0)), scene.objects[1]))
    query = "a striped red circle and a dotted blue square"
    scores = reward(np.stack([render(scene), render(wrong)]), [query, query])
    n_items = parse(query).n_items()
    assert scores.scores.tolist() == pytest.approx([1.0, (n_items - 1) / n_items])
    assert scores.breakdown["pattern"].tolist() == pytest.approx([1.0, 0.5])
    with pytest.raises(ValueError, match="does not parse"):
        reward(images[:1], ["a red circle of stripes"])


def test_edits_keep_the_query_and_add_what_they_say() -> None:
    caption = "an emerald striped disc left of a pink box with dots"
    out = edit_caption(caption, [ObjectEdit(cell=(0, 0), emphasise=True), ObjectEdit(cell=(2, 1), emphasise=True)])
    assert out == "a clearly striped emerald disc in the top left left of a clearly dotted pink box on the right"
    q = parse(out)
    assert [(o.colour, o.pattern, o.column, o.row) for o in q.objects] == [("green", "striped", 0, 0), ("pink", "dotted", 2, None)]
    assert q.relations == parse(caption).relations
    assert expressible_position((1, 0)) == (None, 0) and expressible_position((1, 1)) == (1, 1)
    with pytest.raises(ValueError, match="2 objects"):
        edit_caption(caption, [ObjectEdit()])
    assert edit_caption("a picture of a red disc", [ObjectEdit(emphasise=True)]) == "a picture of a plain red disc"


def test_rules_read_the_preview_and_blind_controls_do_not() -> None:
    items = sample_prompts("heldout", 40, 5)
    for j, it in enumerate(items):
        query = parse(it.caption)
        truth = analyze_scene(render(it.scene))
        empty = analyze_scene(np.zeros((64, 64, 3), dtype=np.float32))
        anchored = parse(RULES["anchor"][0](it.caption, query, truth, random.Random(j)))
        for o in anchored.objects:  # on the true image, anchoring names where each object really is
            cell = next(s.cell for s in it.scene.objects if s.colour == o.colour)
            assert o.column in (None, cell[0]) and o.row in (None, cell[1])
        for name, (rule, blind) in RULES.items():
            for fn in (rule, blind):
                if fn is not None:
                    out = parse(fn(it.caption, query, truth, random.Random(j)))
                    assert [(o.colour, o.shape, o.pattern) for o in out.objects] == [
                        (o.colour, o.shape, o.pattern) for o in query.objects], name
            if blind is not None and name != "emphasise_wrong":  # a blind control ignores what the preview shows
                assert blind(it.caption, query, truth, random.Random(j)) == blind(it.caption, query, empty, random.Random(j))
        cands = upfront_candidates(it.caption, query, 6, random.Random(j))
        assert len(cands) == 6 and cands[0] == it.caption


def test_query_counts_its_facts() -> None:
    q = Query((ObjectQuery("red", "circle", "striped", 0, None), ObjectQuery("blue", "square")), ((0, "left_of", 1),))
    assert q.n_items() == 1 + 1 + (3 + 1) + 3
