"""The embedded worlds: procedural scenes with captions, an analyzer-verified reward and small backbones.

Each world is a subpackage with the same interface, looked up by name (`get_world`):

| name | alias | package | what |
|---|---|---|---|
| `shapes` | `v1` | `world.shapes` | 1-3 coloured shapes on a 3x3 grid, 32 px, 8x8 latents (the default) |
| `patterns` | `v2` | `world.patterns` | 1-3 colour + shape + **pattern** objects, 64 px, 16x16 latents: layout early, pattern late |
| `backdrops` | `v3` | `world.backdrops` | 1-3 shapes over a backdrop tone no caption names, 32 px; reward: alignment x legibility |

A world package exposes: `NAME`, `VERSION`, `RESOLUTION`, `DEFAULT_BACKBONE` (a Path), `SceneSampler(seed, split)`,
`render(scene)`, `training_caption(scene, rng)`, `build_vae()`, `build_unet()`, `prompt_set(name)`,
`sample_prompts(name, n, seed)`, `parse(caption)`, the name of its `ALIGNMENT_REWARD`, and its measurement
commands `analyzer_check(n, seed)`, `backbone_eval(**options)` and `room(**options)` with the names of the
options they take beyond the common ones (`BACKBONE_EVAL_OPTIONS`, `ROOM_OPTIONS`). Shared machinery
(grid geometry, the backbone pipeline, text binder, scheduler, backbone training) lives beside the packages
in `world/`. A new world is a new subpackage and one line in `WORLDS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

WORLDS: dict[str, str] = {"shapes": "promptloop.world.shapes", "patterns": "promptloop.world.patterns",
                          "backdrops": "promptloop.world.backdrops"}
ALIASES: dict[str, str] = {"v1": "shapes", "v2": "patterns", "v3": "backdrops"}
DEFAULT_WORLD = "shapes"


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


def register_world_rewards() -> None:
    """Import each registered world's `rewards` module where it has one (it registers the world's rewards by
    name with `rewards.register_reward`). Called once by `promptloop.rewards`."""
    import importlib.util

    for package in WORLDS.values():
        if importlib.util.find_spec(f"{package}.rewards") is not None:
            importlib.import_module(f"{package}.rewards")
