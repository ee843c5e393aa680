"""The world interface: a new world is one package and one line, and generic code never names a world.

A minimal third world (a coloured dot in one of three columns) is written into a temporary package, registered
with `register_world`, and then scored by its reward, trained into a tiny backbone, sampled by `generate` and used
for a GRPO step, with no change to the library.
"""

from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src" / "promptloop"
WORLD_PACKAGES = ("promptloop.world.shapes", "promptloop.world.patterns", "promptloop.world.backdrops")

DOTS_WORLD = '''
"""Dots: one red or blue dot in the left, middle or right column of a white 32 px image."""
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptloop.rewards.alignment import AlignmentReward
from promptloop.world.backbone import build_unet, build_vae
from promptloop.world.prompt_sets import build_prompt_set, seeded_subset

NAME, VERSION, RESOLUTION, GUIDANCE, STEPS = "dots", "v9", 32, 4.0, 4
ALIGNMENT_REWARD = "dots_alignment"
REWARDS = {"dots_alignment": "dotworld:DotsReward"}
DEFAULT_BACKBONE = Path(__file__).parent / "backbone"
COLOURS = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0)}
COLUMNS = ("left", "middle", "right")


@dataclass(frozen=True)
class Scene:
    colour: str
    column: int

    def n_items(self) -> int:  # a query asserts the same two facts a scene has
        return 2


class SceneSampler:
    def __init__(self, seed: int, split: str = "any") -> None:
        self.rng = random.Random(seed)

    def sample(self) -> Scene:
        return Scene(self.rng.choice(list(COLOURS)), self.rng.randrange(3))


def render(scene: Scene) -> np.ndarray:
    image = np.ones((RESOLUTION, RESOLUTION, 3), dtype=np.float32)
    x = 3 + 10 * scene.column
    image[12:20, x : x + 8] = COLOURS[scene.colour]
    return image


def training_caption(scene: Scene, rng: random.Random) -> str:
    return f"a {scene.colour} dot on the {COLUMNS[scene.column]}"


def parse(caption: str) -> Scene:
    words = caption.split()
    if len(words) != 6 or words[1] not in COLOURS or words[5] not in COLUMNS:
        raise ValueError(f"not a dots caption: {caption!r}")
    return Scene(words[1], COLUMNS.index(words[5]))


def prompt_set(name: str):
    caption = lambda scene, rng: (training_caption(scene, rng), scene)  # noqa: E731
    return build_prompt_set(name, {"train": 1, "heldout": 2}, SceneSampler, caption, size=6)


def sample_prompts(name: str, n: int, seed: int = 0):
    return seeded_subset(prompt_set(name), n, seed)


class DotsReward(AlignmentReward):
    fact_kinds = ("colour", "position")
    parse = staticmethod(parse)

    @staticmethod
    def analyze(batch: np.ndarray) -> list[Scene | None]:
        found = []
        for image in batch:
            ink = (image.min(axis=-1) < 0.5)
            if not ink.any():
                found.append(None)
                continue
            red = image[ink][:, 0].mean() > image[ink][:, 2].mean()
            found.append(Scene("red" if red else "blue", min(2, int(np.nonzero(ink)[1].mean()) * 3 // RESOLUTION)))
        return found

    @staticmethod
    def facts(query: Scene, found: Scene | None) -> dict[str, tuple[int, int]]:
        return {"colour": (int(found is not None and found.colour == query.colour), 1),
                "position": (int(found is not None and found.column == query.column), 1)}
'''


@pytest.fixture(scope="module")
def dots_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from promptloop.world import register_world, unregister_world

    root = tmp_path_factory.mktemp("dots_package")
    (root / "dotworld").mkdir()
    (root / "dotworld" / "__init__.py").write_text(textwrap.dedent(DOTS_WORLD))
    sys.path.insert(0, str(root))
    try:
        yield register_world("dots", "dotworld", alias="v9")  # the one line a new world needs
    finally:
        unregister_world("dots")
        sys.path.remove(str(root))
        sys.modules.pop("dotworld", None)


@pytest.fixture(scope="module")
def dots_backbone(dots_world: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    root = tmp_path_factory.mktemp("dots_backbone")
    return train_backbone(BackboneTrainConfig(
        world="v9", work_dir=str(root / "work"), out_dir=str(root / "backbone"), vae_steps=2, vae_batch=2,
        scale_renders=8, pool_size=8, unet_steps=2, batch=2, warmup=1, decoder_steps=1, checkpoint_every=1))


def test_a_registered_world_is_found_by_name_alias_and_reward(dots_world: object) -> None:
    from promptloop.rewards import available_rewards, get_reward
    from promptloop.world import get_world, world_name

    assert world_name("v9") == "dots" and get_world("dots") is dots_world
    assert "dots_alignment" in available_rewards()
    items = get_world("v9").prompt_set("heldout")
    images = np.stack([dots_world.render(it.scene) for it in items])  # type: ignore[attr-defined]
    out = get_reward("dots_alignment")(images, [it.caption for it in items])
    assert out.scores.tolist() == [1.0] * len(items)  # clean renders satisfy their own captions
    wrong = get_reward("dots_alignment")(images[:1], ["a red dot on the middle" if "blue" in items[0].caption
                                                      else "a blue dot on the middle"])
    assert float(wrong.breakdown["colour"][0]) == 0.0
    with pytest.raises(ValueError, match="not a dots caption"):
        get_reward("dots_alignment")(images[:1], ["a red circle"])


def test_the_command_line_offers_the_registered_world(dots_world: object, capsys: pytest.CaptureFixture[str]) -> None:
    from promptloop.cli import main

    assert main(["world", "prompts", "train", "--world", "v9", "--n", "2"]) == 0
    assert all(line.endswith(("left", "middle", "right")) for line in capsys.readouterr().out.splitlines())
    assert main(["world", "room", "--world", "dots"]) == 2  # it declares no room command
    assert "world dots has no room command" in capsys.readouterr().err


def test_generate_samples_a_new_world_at_its_size_and_scores_it_with_its_reward(dots_backbone: Path,
                                                                               tmp_path: Path) -> None:
    import json

    from promptloop.generate import GenerateRequest, generate
    from promptloop.rewards import get_reward

    assert json.loads((dots_backbone / "model_index.json").read_text())["promptloop_world"] == "dots"
    query = "a red dot on the left"
    record = generate(GenerateRequest(query=query, pipeline=f"world:{dots_backbone}", mode="none", steps=2,
                                      num_images=2, out=str(tmp_path / "gen"), device="cpu"))
    images = np.stack([np.asarray(Image.open(tmp_path / "gen" / f"image_{k}.png"), dtype=np.float32) / 255.0
                       for k in range(2)])
    assert images.shape == (2, 32, 32, 3) and record["guidance"] == 4.0
    expected = get_reward("dots_alignment")(images, [query] * 2).scores
    assert [s["alignment"] for s in record["samples"]] == pytest.approx([float(v) for v in expected])


def test_a_grpo_step_trains_on_a_new_world(dots_backbone: Path, tmp_path: Path) -> None:
    from promptloop.train import PromptLoopTrainer, load_config

    prompts = tmp_path / "dots.txt"
    prompts.write_text("a red dot on the left\na blue dot on the right\n")
    cfg = load_config(None, [
        f"output_dir={tmp_path / 'run'}", f"pipeline.name_or_path=world:{dots_backbone}",
        "policy.name_or_path=tiny:llava", "pipeline.num_inference_steps=3", "loop.num_refinements=1",
        "grpo.queries_per_step=2", "grpo.num_generations=2", "rewards={dots_alignment: 1.0}", f"data.train={prompts}",
        "logging.progress_bar=false", "grpo.micro_batch_size=4", f"data.eval={prompts}",
        "eval.every=1",
    ])
    trainer = PromptLoopTrainer(cfg)
    assert trainer.world == "dots" and trainer.eval_alignment  # its queries parse as the backbone world's
    batch = trainer.score(trainer.rollout(0))
    scores = trainer._eval_scores(batch)  # evaluation's alignment monitor is the backbone world's reward
    assert np.allclose(scores["alignment"].numpy(), scores["dots_alignment"].numpy())
    assert len(batch.actions) == 2 * 2 and batch.advantages is not None
    assert all(im.size == (32, 32) for im in batch.images)
    stats = trainer.update(batch)
    assert np.isfinite(stats["loss"])


def _imported_modules(path: Path) -> set[str]:
    """The modules a source file imports (import statements, `importlib.import_module` strings and "module:name"
    references)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("promptloop."):
            found.add(node.value.split(":", 1)[0])
    return found


def test_no_module_outside_world_names_a_world_package() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("world/"):
            continue
        named = [m for m in _imported_modules(path) if m.startswith(WORLD_PACKAGES)]
        if named:
            offenders.append(f"{rel}: {', '.join(sorted(named))}")
    assert not offenders, offenders


def test_the_app_reads_a_new_world_from_its_backbone(dots_backbone: Path) -> None:
    from promptloop.app.models import ModelSpec, load_models
    from promptloop.app.session import score_image

    models = load_models(ModelSpec(pipeline=f"world:{dots_backbone}", policy="tiny:llava", device="cpu"))
    assert models.spec.reward == "dots_alignment" and models.guidance == 4.0
    assert (models.call_kwargs["height"], models.call_kwargs["width"]) == (32, 32)
    image = Image.fromarray((np.asarray(models.spec.world.render(models.spec.world.parse("a blue dot on the right")))
                             * 255).astype(np.uint8))
    score = score_image(models, image, "a blue dot on the right")
    assert score.total == 1.0 and [kind for kind, _ in score.parts] == ["colour", "position"]
    assert "grammar" in score_image(models, image, "a red circle").note


def test_policy_folders_naming_old_callable_paths_still_load() -> None:
    from promptloop.policy.callables import PolicyCallableError, callable_ref, resolve_callable
    from promptloop.world import get_world
    from promptloop.world.shapes.copy_constraint import CopyEditConstraint
    from promptloop.world.shapes.policy_tokenizer import minilm_length

    shapes = get_world("shapes")
    for old in ("promptloop.world.policy_data:minilm_length", "promptloop.world.shapes.policy_data:minilm_length",
                "promptloop.world.shapes.policy_tokenizer:minilm_length"):
        assert resolve_callable("prompt_length_fn", old, "x") is minilm_length  # the shipped folders name the latter
    assert resolve_callable("validator", "promptloop.world.grammar:parse", "x") is shapes.parse
    assert resolve_callable("constraint", "promptloop.world.copy_constraint:CopyEditConstraint", "x") is CopyEditConstraint
    assert callable_ref("prompt_length_fn", minilm_length) == "promptloop.world.policy_model:minilm_length"
    assert callable_ref("validator", get_world("patterns").parse) == "promptloop.world.patterns.grammar:parse"
    with pytest.raises(PolicyCallableError, match="not a registered policy callable"):
        resolve_callable("validator", "os:system", "x")
