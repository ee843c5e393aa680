"""What the tiny test models share: the word list their tokenizers cover, the byte table of the byte-level BPE
tokenizers, seeding that leaves the caller's RNG as it was, and the small components several tiny pipelines
are built from. Private to `promptloop.testing`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

TINY_SIZE = 32  # default pixel size to sample the tiny pipelines at
QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")

WORDS = (
    "a an the of and with on in at to red green blue yellow black white orange purple pink gray big small large "
    "tiny circle square triangle star box ball cat dog tree house photo painting of sky detailed bright dark "
    "left right above below next sharp blurry high quality cinematic"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside the block and restore the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def clip_text_config(tokenizer: Any, hidden_size: int = 32, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
    )


def t5_encoder(tokenizer: Any, d_model: int = 32) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=37,
        d_kv=8,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config).eval()


def tiny_vae(latent_channels: int = 4, *, flow: bool = False) -> Any:
    """A 2-level AutoencoderKL (spatial factor 2). `flow=True`: SD3/FLUX style (shift factor, no quant convs)."""
    from diffusers import AutoencoderKL

    extra: dict[str, Any] = {}
    if flow:
        extra = {
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            "shift_factor": 0.0609,
            "scaling_factor": 1.5035,
        }
    return AutoencoderKL(
        block_out_channels=(8, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=TINY_SIZE,
        **extra,
    ).eval()


def finish_pipeline(pipe: Any, device: str | torch.device, dtype: torch.dtype | None) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if dtype is None else pipe.to(device, dtype)
