"""Model references, resolved in one place, and the one loader of pipelines and policies.

A pipeline or policy is named by a string (`pipeline.name_or_path`, `policy.name_or_path`, `--pipeline`,
`--policy`, the app's fields); `parse_model_ref` reads it into a `ModelRef` of one of four kinds:

- `"world"`: `world` (the default world's shipped model: the backbone at assets/world/backbone, the policy at
  assets/world/policy), `world:NAME` (the shipped model of the registered world NAME or its alias, e.g. `world:v3`:
  its `DEFAULT_BACKBONE` as a pipeline, its `DEFAULT_POLICY` as a policy) or `world:PATH` (a world backbone folder;
  a registered world's name wins over a folder of the same name, write `world:./NAME` for the folder);
- `"tiny"`: `tiny:NAME`, a tiny random model of `promptloop.testing` (`TINY_PIPELINES`, `TINY_POLICIES`);
- `"folder"`: a local folder (a name starting with `.`, `/` or `~`, holding two slashes or more, or that exists);
- `"hub"`: anything else, a Hugging Face Hub id.

`load_pipeline` and `load_policy` turn a reference into the model; `generate`, the app, `plan` and the trainer
(`promptloop.train.components`, which passes its config's fields) all use them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

KINDS = ("world", "tiny", "folder", "hub")
WORLD = "world"
TINY = "tiny:"


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference: its `kind` (one of KINDS), the text as given, `value`: the folder of
    `world:PATH` (None for `world` and `world:NAME`), the NAME of `tiny:NAME`, the folder or the Hub id; and
    `world`: the registered name of the world of `world:NAME` (None otherwise)."""

    kind: Literal["world", "tiny", "folder", "hub"]
    text: str
    value: str | None
    world: str | None = None

    @property
    def explicit_path(self) -> bool:
        """Whether the text is written as a path (starts with `.`, `/` or `~`)."""
        return self.text.startswith((".", "/", "~"))

    def __str__(self) -> str:
        return self.text


def parse_model_ref(text: str) -> ModelRef:
    """The `ModelRef` of a pipeline or policy name (see the module docstring)."""
    if text == WORLD:
        return ModelRef("world", text, None)
    if text.startswith(WORLD + ":"):
        from promptloop.world import UnknownWorldError, world_name

        rest = text.split(":", 1)[1]
        try:
            return ModelRef("world", text, None, world_name(rest))
        except UnknownWorldError:
            return ModelRef("world", text, rest)
    if text.startswith(TINY):
        return ModelRef("tiny", text, text.split(":", 1)[1])
    if text.startswith((".", "/", "~")) or text.strip("/").count("/") >= 2 or Path(text).exists():
        return ModelRef("folder", text, text)
    return ModelRef("hub", text, text)


def check_local_folder(text: str, flag: str) -> None:
    """FileNotFoundError "`flag` 'NAME': no such folder" when `text` is written as a path or names an existing
    file, but no folder (world and tiny references are never checked here)."""
    ref = parse_model_ref(text)
    if ref.kind in ("world", "tiny"):
        return
    if (ref.explicit_path or Path(text).exists()) and not Path(text).expanduser().is_dir():
        raise FileNotFoundError(f"{flag} {text!r}: no such folder")


def world_backbone_folder(ref: ModelRef | str) -> Path:
    """The backbone folder of a world reference: PATH of `world:PATH`, the shipped backbone of world NAME for
    `world:NAME`, the default world's for `world`; ValueError for any other reference."""
    if isinstance(ref, str):
        ref = parse_model_ref(ref)
    if ref.kind != "world":
        raise ValueError(f"{ref.text!r} is not a world backbone reference ('world', 'world:NAME' or 'world:PATH')")
    from promptloop.world import get_world

    if ref.value is not None:
        return Path(ref.value)
    return Path(get_world(ref.world).DEFAULT_BACKBONE) if ref.world else Path(get_world().DEFAULT_BACKBONE)


def world_policy_path(ref: ModelRef | str | None = None) -> Path:
    """The shipped policy folder of a world reference (`DEFAULT_POLICY` of world NAME for `world:NAME`, of the
    default world for `world` or None); ValueError for a reference that names no world policy."""
    from promptloop.world import get_world

    if ref is not None:
        ref = parse_model_ref(ref) if isinstance(ref, str) else ref
        if ref.kind != "world" or ref.value is not None:
            raise ValueError(f"{ref.text!r} names no world policy ('world' or 'world:NAME')")
    world = get_world(ref.world) if ref is not None and ref.world else get_world()
    policy = getattr(world, "DEFAULT_POLICY", None)
    if policy is None:
        raise ValueError(f"world {world.NAME} has no refinement policy")
    return Path(policy)


def tiny_pipeline_builder(ref: ModelRef) -> Callable[..., Any] | None:
    """The builder of `tiny:NAME` in `promptloop.testing.TINY_PIPELINES` (None: no such tiny pipeline)."""
    from promptloop.testing.pipelines import TINY_PIPELINES

    return TINY_PIPELINES.get(ref.value or "")


def tiny_policy_builder(ref: ModelRef) -> Callable[..., Any] | None:
    """The builder of `tiny:NAME` in `promptloop.testing.TINY_POLICIES` (None: no such tiny policy)."""
    from promptloop.testing.policies import TINY_POLICIES

    return TINY_POLICIES.get(ref.value or "")


def tiny_names(table: str) -> list[str]:
    """['tiny:NAME', ...] of `TINY_PIPELINES` (table "pipelines") or `TINY_POLICIES` (table "policies")."""
    import promptloop.testing as testing

    names = testing.TINY_PIPELINES if table == "pipelines" else testing.TINY_POLICIES
    return [TINY + k for k in names]


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of "float32", "bfloat16" or "float16"."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def load_pipeline(name: str, device: torch.device | str, *, dtype: str = "float32", variant: str | None = None,
                  revision: str | None = None, offload: str = "none", height: int | None = None,
                  width: int | None = None) -> tuple[Any, dict[str, Any]]:
    """(the frozen pipeline `name` refers to, on `device`; the keyword arguments every sampler call needs).

    `offload="model"`: diffusers' model CPU offload onto `device`; `height` / `width`: the image size of every call
    (None: the pipeline's default; a world backbone's is its world's `RESOLUTION`)."""
    import torch

    pipe_dtype = torch_dtype(dtype)
    ref = parse_model_ref(name)
    extra: dict[str, Any] = {}
    if ref.kind == "tiny":
        builder = tiny_pipeline_builder(ref)
        if builder is None:
            raise ValueError(f"pipeline.name_or_path {name!r}: unknown tiny pipeline; choose from "
                             f"{tiny_names('pipelines')}")
        from promptloop.testing.pipelines import tiny_call_kwargs

        pipe = builder(seed=0, device=device)
        pipe.to(dtype=pipe_dtype)
        extra = tiny_call_kwargs(ref.value or "")
    elif ref.kind == "world":
        from promptloop.world import world_of_backbone
        from promptloop.world.backbone import load_backbone

        folder = world_backbone_folder(ref)
        pipe = load_backbone(folder, device=device, dtype=pipe_dtype)
        size = world_of_backbone(folder).RESOLUTION  # the image size of the world the backbone was trained on
        extra = {"height": size, "width": size}
    else:
        from diffusers import DiffusionPipeline

        kw: dict[str, Any] = {"dtype": pipe_dtype}
        if variant:
            kw["variant"] = variant
        if revision:
            kw["revision"] = revision
        try:
            pipe = DiffusionPipeline.from_pretrained(name, **kw)
        except Exception as e:
            raise ValueError(f"pipeline.name_or_path {name!r}: cannot load the pipeline: {type(e).__name__}: "
                             f"{_first_line(e)}") from e
        if offload == "none":
            pipe.to(device)
    if offload == "model":
        enable_model_offload(pipe, device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    for part in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, part, None)
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
    if height is not None:
        extra["height"] = height
    if width is not None:
        extra["width"] = width
    return pipe, extra


def enable_model_offload(pipe: Any, device: torch.device | str) -> None:
    """diffusers' model CPU offload onto `device`: every component waits in CPU memory and is moved to `device`
    while it runs (the loop's conditioning hooks and previews work unchanged: its hooks wrap `forward` and
    `vae.decode`). A preview decode moves the VAE in and the denoiser out, so previews cost a transfer each."""
    import torch

    if not hasattr(pipe, "enable_model_cpu_offload") or getattr(pipe, "model_cpu_offload_seq", None) is None:
        raise ValueError(f"pipeline.offload: model: {type(pipe).__name__} has no model CPU offload sequence; "
                         "use pipeline.offload: none")
    pipe.enable_model_cpu_offload(device=torch.device(device))


def load_policy(name: str, device: torch.device | str, *, dtype: str = "auto", quantization: str = "none",
                trust_remote_code: bool = False, revision: str | None = None, attn_implementation: str | None = None,
                device_map: str | None = None, adapter_path: str | None = None) -> Any:
    """The policy `name` refers to, on `device`, with the LoRA adapter at `adapter_path` loaded trainable.

    `dtype="auto"`: the checkpoint's dtype (float32 for a tiny policy); `quantization` "8bit" / "4bit": the
    frozen base in 8 / 4 bit (QLoRA, bitsandbytes)."""
    import torch

    ref = parse_model_ref(name)
    if ref.kind == "tiny":
        builder = tiny_policy_builder(ref)
        if builder is None:
            raise ValueError(f"policy.name_or_path {name!r}: unknown tiny policy; choose from {tiny_names('policies')}")
        policy = builder(seed=0)
        policy.model.to(device)
        if dtype not in ("auto", "float32"):
            policy.model.to(torch_dtype(dtype))
    else:
        from promptloop.policy.vlm import VLMPolicy

        path: str | Path = name
        if ref.kind == "world":
            path = world_policy_path(ref)
            if not Path(path).is_dir():
                flag = f" --world {ref.world}" if ref.world else ""
                raise FileNotFoundError(f"world policy not found at {path} (train it with "
                                        f"`promptloop world train-policy{flag}`)")
        weights_dtype = None if dtype == "auto" else torch_dtype(dtype)
        quantization_config = None
        if quantization != "none":  # QLoRA: the frozen base in 8 / 4 bit
            from promptloop.rewards.adapters.quantization import bnb_config, require_bitsandbytes

            try:
                require_bitsandbytes(quantization)
            except ImportError as e:
                raise ValueError(f"policy.quantization: {e}") from None
            quantization_config = bnb_config(quantization, weights_dtype or torch.float32)
        try:
            policy = VLMPolicy.from_pretrained(path, dtype=weights_dtype, device=device,
                                               trust_remote_code=trust_remote_code, revision=revision,
                                               attn_implementation=attn_implementation, device_map=device_map,
                                               quantization_config=quantization_config)
        except (OSError, ValueError) as e:
            raise ValueError(f"policy.name_or_path {name!r}: cannot load the policy: {type(e).__name__}: "
                             f"{_first_line(e)}") from e
    if adapter_path:
        policy.load_adapter(adapter_path, is_trainable=True)
    return policy


__all__ = ["KINDS", "ModelRef", "check_local_folder", "enable_model_offload", "load_pipeline", "load_policy",
           "parse_model_ref", "tiny_names", "torch_dtype", "tiny_pipeline_builder", "tiny_policy_builder", "world_backbone_folder",
           "world_policy_path"]
