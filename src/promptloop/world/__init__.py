"""The embedded worlds: procedural scenes with captions, an analyzer-verified reward and small backbones.

Each world is a subpackage with the same interface, looked up by name (`get_world`):

| name | alias | package | what |
|---|---|---|---|
| `shapes` | `v1` | `world.shapes` | 1-3 coloured shapes on a 3x3 grid, 32 px, 8x8 latents (the default) |
| `patterns` | `v2` | `world.patterns` | 1-3 colour + shape + **pattern** objects, 64 px, 16x16 latents: layout early, pattern late |
| `backdrops` | `v3` | `world.backdrops` | 1-3 shapes over a backdrop tone no caption names, 32 px; reward: alignment x legibility |

A world package exposes (module attributes):
- what it is: `NAME`, `VERSION` (its alias), `SceneSampler(seed, split)` (`.sample()` draws a scene),
  `render(scene)` (an (H, W, 3) image in [0, 1]), `training_caption(scene, rng)`, `parse(caption)` (raises
  ValueError on a caption outside its grammar), `prompt_set(name)` and `sample_prompts(name, n, seed)` (items
  with a `.caption`);
- its backbone: `DEFAULT_BACKBONE` (a Path), `build_vae()`, `build_unet()`; optionally its shipped refinement
  policy's folder `DEFAULT_POLICY` (model references `world:NAME` name both, `promptloop.models`) and its
  shipped LoRA adapters on it, `POLICY_ADAPTERS` (training mode -> folder beside the policy; `eval compare`);
  its GRPO recipe `GRPO_CONFIG` (a file in configs/) and `DEMO_NOTE` (what the world is built to show, for
  `promptloop demo --world NAME`); optionally `TASK_REWARD`, the reward its loop is trained on (default: alignment);
- its sampling defaults: `RESOLUTION` (pixels), `GUIDANCE` (CFG scale), `STEPS` (sampling steps),
  `ALIGNMENT_REWARD` (the reward's name scoring its captions);
- what it registers: `REWARDS` (reward name -> "module:factory", registered lazily in the reward registry when
  `promptloop.rewards` is imported), and optionally `POLICY_CALLABLES` (promptloop_policy.json field ->
  "module:qualname" names a saved policy of the world may record) with `MOVED_CALLABLES` (old names -> new);
- optionally its commands: `analyzer_check(n, seed)`, `backbone_eval(**options)` and `room(**options)` with the
  command-line options they take beyond the common ones (`BACKBONE_EVAL_OPTIONS`, `ROOM_OPTIONS`:
  `world.options.WorldOption`s), `train_policy(out, **options)` (its refinement policy's recipe, `promptloop world
  train-policy`), the parts of its policy's model (`world_words()`, `build_world_tokenizer(...)`, `llava_model(...)`,
  `llava_processor(...)`: the default world's build the tiny `promptloop.testing` policies), and `BINDING_LOSS`
  (the module of the text binder's auxiliary loss over its captions);
- optionally for the app: `DESCRIBE` (the module, by name, of its readings of an image: `describe(image, query)`
  -> (what, reading) rows shown next to the query's facts, what the reward reads beyond them, `query` None or
  outside the grammar giving the image's rows only; `describe_preview(image)` -> one line on what a refinement
  policy reads in an x0 preview; `world_describer` imports it) and `DEFAULT_POLICY` (the folder of its shipped
  refinement policy, which the app's policy `world` names on its backbones; the default world's is
  assets/world/policy, and a world declaring none, or whose folder is missing, ships no policy yet).

Generic code (`generate`, `train`, `eval`, `app`, `plan`) asks `get_world(name)`, or `world_of_pipeline(name)` for
a backbone reference ('world', 'world:PATH': the world is read from the folder), and never imports a world package
by name. Shared machinery (grid geometry, imaging, prompt sets, command-line options, the backbone pipeline, text
binder, scheduler, backbone training) lives beside the packages in `world/`; the measurements sample with
`world.sampling` and select fairly with `world.fair`. A new world is a new subpackage and one line: `WORLDS` here,
or `register_world(name, package)` for one kept elsewhere.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

WORLDS: dict[str, str] = {"shapes": "promptloop.world.shapes", "patterns": "promptloop.world.patterns",
                          "backdrops": "promptloop.world.backdrops"}
ALIASES: dict[str, str] = {"v1": "shapes", "v2": "patterns", "v3": "backdrops"}
DEFAULT_WORLD = "shapes"
WORLD_PIPELINE = "world"  # the model reference of a world backbone: 'world' (the default one), 'world:NAME' or 'world:PATH'


class UnknownWorldError(ValueError):
    """A world name that is not registered."""


def world_name(name: str) -> str:
    """The registered name of a world given by name or alias ('v1' -> 'shapes')."""
    canon = ALIASES.get(name, name)
    if canon not in WORLDS:
        known = ", ".join(f"{n} ({a})" for a, n in ALIASES.items())
        raise UnknownWorldError(f"unknown world {name!r}; expected one of {known}")
    return canon


def get_world(name: str = DEFAULT_WORLD) -> ModuleType:
    """The package of a world, by name or alias."""
    return importlib.import_module(WORLDS[world_name(name)])


def task_reward_name(world: ModuleType) -> str:
    """The registry name of the reward a world's loop is trained and compared on: its `TASK_REWARD`, else its
    alignment reward."""
    return str(getattr(world, "TASK_REWARD", world.ALIGNMENT_REWARD))


def world_names() -> list[str]:
    """The registered worlds' names, in registration order."""
    return list(WORLDS)


def register_world(name: str, package: str, alias: str | None = None) -> ModuleType:
    """Register the world package `package` under `name` (and `alias`); registers its rewards too. Returns it."""
    if name in WORLDS and WORLDS[name] != package:
        raise ValueError(f"a world named {name!r} is already registered ({WORLDS[name]})")
    WORLDS[name] = package
    if alias is not None:
        ALIASES[alias] = name
    register_world_rewards([name])
    return get_world(name)


def unregister_world(name: str) -> None:
    """Remove a registered world, its alias and its rewards (mainly for tests)."""
    from promptloop.rewards.registry import available_rewards, unregister_reward

    world = get_world(name)
    for reward in getattr(world, "REWARDS", {}):
        if reward in available_rewards():
            unregister_reward(reward)
    del WORLDS[world_name(name)]
    for alias in [a for a, n in ALIASES.items() if n == name]:
        del ALIASES[alias]


def register_world_rewards(names: list[str] | None = None) -> None:
    """Register the `REWARDS` of the worlds `names` (default: all) by name, lazily: a reward's module is imported
    when the reward is first built. Idempotent; called by `promptloop.rewards` at import."""
    from promptloop.rewards.registry import register_lazy_reward

    for name in names if names is not None else list(WORLDS):
        for reward, ref in getattr(get_world(name), "REWARDS", {}).items():
            register_lazy_reward(reward, ref)


def world_reward_names() -> list[str]:
    """Every reward the registered worlds declare (each reads its world's analyzer: no model weights)."""
    return [reward for name in WORLDS for reward in getattr(get_world(name), "REWARDS", {})]


def is_world_reference(name: str) -> bool:
    """Whether a pipeline reference names a world backbone ('world', 'world:NAME' or 'world:PATH'; `promptloop.models` parses it)."""
    from promptloop.models import parse_model_ref

    return parse_model_ref(name).kind == "world"


def world_backbone_folder(name: str) -> Path:
    """The folder of a world backbone reference: PATH of 'world:PATH', the shipped default backbone for 'world'
    (`promptloop.models.world_backbone_folder`; ValueError for any other reference)."""
    from promptloop.models import world_backbone_folder as folder_of

    return folder_of(name)


def world_describer(world: ModuleType) -> ModuleType | None:
    """The module a world's `DESCRIBE` names (its `describe` / `describe_preview` readings of images), None for a
    world that declares none."""
    name = getattr(world, "DESCRIBE", None)
    return None if name is None else importlib.import_module(name)


def world_of_backbone(folder: str | Path | None = None) -> ModuleType:
    """The world package a backbone folder was trained on (None: the shipped default backbone)."""
    from promptloop.world.backbone import DEFAULT_BACKBONE, backbone_world

    return get_world(backbone_world(DEFAULT_BACKBONE if folder is None else folder))


def world_of_pipeline(name: str) -> ModuleType | None:
    """The world package of a world backbone reference (read from the backbone folder), None for any other."""
    return world_of_backbone(world_backbone_folder(name)) if is_world_reference(name) else None


def world_name_of_pipeline(name: str) -> str:
    """The name of the world a pipeline samples: its backbone's for a world reference, the default world's otherwise
    (whose prompt sets `world:NAME` prompt sources name)."""
    world = world_of_pipeline(name)
    return DEFAULT_WORLD if world is None else world.NAME
