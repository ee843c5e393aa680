"""Tiny random models built offline, for tests and docs: the `tiny:` models.

`pipeline.name_or_path: tiny:NAME` builds `TINY_PIPELINES[NAME]` and `policy.name_or_path: tiny:NAME`
`TINY_POLICIES[NAME]` (through `promptloop.models`); every builder is seeded and downloads nothing.

- `promptloop.testing.pipelines`: SD 1.x, SDXL, SD3, FLUX (`TINY_PIPELINES`, `tiny_call_kwargs`, `make_scheduler`);
- `promptloop.testing.generic_pipelines`, `promptloop.testing.generic_pipelines_more`: the classes that take the
  loop's generic route (`GENERIC_PIPELINES`, `MORE_GENERIC_PIPELINES`);
- `promptloop.testing.policies`, `promptloop.testing.policy_families`: LLaVA, Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
  Gemma 3, SmolVLM, LLaVA-OneVision policies (`TINY_POLICIES`);
- `promptloop.testing.rewards`: checkpoints of the model-based rewards (CLIP, aesthetic head, ImageReward, HPS,
  HPSv3) written into a folder;
- `promptloop.testing.hub`: the Hugging Face Hub as a local folder (`local_hub`).

The modules import transformers / diffusers only inside their builders; importing this package imports none of them.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"TINY_PIPELINES": "pipelines", "tiny_call_kwargs": "pipelines", "TINY_POLICIES": "policies"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TINY_PIPELINES", "TINY_POLICIES", "tiny_call_kwargs"]
