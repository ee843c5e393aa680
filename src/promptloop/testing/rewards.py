"""Tiny, random, offline CLIP checkpoints for tests of the model-based rewards.

`tiny_clip_dir(tmp_path)` writes a randomly initialised `CLIPModel` (about 60k parameters), a
byte-level `CLIPTokenizer` built from a tiny vocab.json / merges.txt, and a CLIP image-processor config
into a directory that `CLIPModel.from_pretrained` / `AutoTokenizer` / `AutoImageProcessor` load with
no network. `tiny_aesthetic_head(path, embed_dim)` writes a random aesthetic MLP head as safetensors.
`tiny_hpsv3_dir(directory)` lays out a tiny HPSv3: a random Qwen2-VL "base model" folder (config, byte-level
Qwen2 tokenizer, image processor) and ``HPSv3.safetensors`` under the official key names.
Everything is seeded, so two calls with the same seed give identical weights.

Only this module's functions import transformers (lazily), so importing it is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from promptloop.testing._common import QWEN_SPECIAL_TOKENS, bytes_to_unicode

TINY_IMAGE_SIZE = 32
TINY_PROJECTION_DIM = 16


def write_tiny_clip_tokenizer(directory: str | Path) -> dict[str, int]:
    """Write vocab.json + merges.txt of a byte-level CLIP BPE covering every byte; return the vocab.

    Every byte has a token alone and as a word end ("x</w>"), plus a handful of merges, then the
    special tokens "<|startoftext|>" and "<|endoftext|>" (also the padding token).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = [("r", "e"), ("e", "d</w>"), ("c", "i"), ("s", "q"), ("a", "t"), ("o", "n")]
    tokens += [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    return vocab


def tiny_clip_dir(
    tmp_path: str | Path,
    *,
    name: str = "tiny-clip",
    seed: int = 0,
    image_size: int = TINY_IMAGE_SIZE,
    projection_dim: int = TINY_PROJECTION_DIM,
    logit_scale: float = 2.6592,
    width: int = 32,
) -> Path:
    """Write a tiny random CLIP checkpoint (model, tokenizer, image processor) under tmp_path/name.

    The vision tower sees `image_size` x `image_size` crops (patch 8); text and vision widths are `width`
    (MLPs twice that), projections `projection_dim` wide. Returns the directory, loadable by path with
    `local_files_only=True`. Deterministic for a given `seed`.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    out = Path(tmp_path) / name
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_clip_tokenizer(out)
    tokenizer = CLIPTokenizer.from_pretrained(str(out), model_max_length=32)
    tokenizer.save_pretrained(str(out))

    eos_id = vocab["<|endoftext|>"]
    text_config = {
        "vocab_size": len(vocab),
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
    }
    vision_config = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": 8,
    }
    config = CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=projection_dim,
        logit_scale_init_value=logit_scale,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(str(out))

    preprocessor = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2), encoding="utf-8")
    return out


def tiny_aesthetic_head(path: str | Path, embed_dim: int = TINY_PROJECTION_DIM, *, seed: int = 0) -> Path:
    """Write a random aesthetic MLP head (`AestheticHead(embed_dim)` state dict) as safetensors at `path`."""
    from safetensors.torch import save_file

    from promptloop.rewards.adapters.aesthetic import AestheticHead

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = AestheticHead(embed_dim)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(path))
    return path


__all__ = [
    "TINY_IMAGE_SIZE",
    "TINY_PROJECTION_DIM",
    "hps_official_state",
    "hpsv3_official_state",
    "imagereward_official_state",
    "tiny_aesthetic_head",
    "tiny_clip_dir",
    "tiny_hps_dir",
    "tiny_hpsv3_dir",
    "tiny_imagereward_dir",
    "tiny_qwen2_tokenizer",
    "write_tiny_clip_tokenizer",
]


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * 0.05


def imagereward_official_state(
    *, width: int = 128, depth: int = 2, patch: int = 8, image_size: int = 32, hidden: int = 64,
    layers: int = 2, vocab_size: int = 40, max_positions: int = 40, seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random state dict under the official ImageReward.pt key names (BLIP ViT + med BERT + MLP).

    The names are enumerated here from the official modules (ImageReward/models/BLIP/vit.py, med.py,
    blip_pretrain.py and ImageReward.MLP), independently of the converter under test.
    """
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}

    def lin(name: str, out: int, inp: int) -> None:
        s[f"{name}.weight"], s[f"{name}.bias"] = _rand(g, out, inp), _rand(g, out)

    def norm(name: str, dim: int) -> None:
        s[f"{name}.weight"], s[f"{name}.bias"] = 1 + _rand(g, dim), _rand(g, dim)

    v = "blip.visual_encoder"
    s[f"{v}.cls_token"] = _rand(g, 1, 1, width)
    s[f"{v}.pos_embed"] = _rand(g, 1, (image_size // patch) ** 2 + 1, width)
    s[f"{v}.patch_embed.proj.weight"], s[f"{v}.patch_embed.proj.bias"] = _rand(g, width, 3, patch, patch), _rand(g, width)
    for i in range(depth):
        b = f"{v}.blocks.{i}"
        norm(f"{b}.norm1", width)
        lin(f"{b}.attn.qkv", 3 * width, width)
        lin(f"{b}.attn.proj", width, width)
        norm(f"{b}.norm2", width)
        lin(f"{b}.mlp.fc1", 4 * width, width)
        lin(f"{b}.mlp.fc2", width, 4 * width)
    norm(f"{v}.norm", width)
    t = "blip.text_encoder"
    s[f"{t}.embeddings.word_embeddings.weight"] = _rand(g, vocab_size, hidden)
    s[f"{t}.embeddings.position_embeddings.weight"] = _rand(g, max_positions, hidden)
    s[f"{t}.embeddings.position_ids"] = torch.arange(max_positions).unsqueeze(0)
    norm(f"{t}.embeddings.LayerNorm", hidden)
    for i in range(layers):
        b = f"{t}.encoder.layer.{i}"
        for att, kv in (("attention", hidden), ("crossattention", width)):
            lin(f"{b}.{att}.self.query", hidden, hidden)
            lin(f"{b}.{att}.self.key", hidden, kv)
            lin(f"{b}.{att}.self.value", hidden, kv)
            lin(f"{b}.{att}.output.dense", hidden, hidden)
            norm(f"{b}.{att}.output.LayerNorm", hidden)
        lin(f"{b}.intermediate.dense", 2 * hidden, hidden)
        lin(f"{b}.output.dense", hidden, 2 * hidden)
        norm(f"{b}.output.LayerNorm", hidden)
    lin("blip.vision_proj", 16, width)
    lin("blip.text_proj", 16, hidden)
    for i, (out, inp) in zip((0, 2, 4, 6, 7), ((1024, hidden), (128, 1024), (64, 128), (16, 64), (1, 16)), strict=True):
        lin(f"mlp.layers.{i}", out, inp)
    return s


def tiny_imagereward_dir(directory: str | Path, *, seed: int = 0) -> Path:
    """Folder laid out like the THUDM/ImageReward repo (ImageReward.pt, med_config.json) plus a tiny
    BERT tokenizer (subfolder "tokenizer"), all random and tiny."""
    from transformers import BertTokenizerFast

    directory = Path(directory)
    (directory / "tokenizer").mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "green", "circle", "square",
             "triangle", "on", "the", "left", "right", "photo", "of", "cat"]
    vocab_file = directory / "tokenizer" / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(vocab_file)).save_pretrained(directory / "tokenizer")
    vocab_size = len(words) + 2  # + BLIP's [DEC] and [ENC]
    torch.save(imagereward_official_state(vocab_size=vocab_size, seed=seed), directory / "ImageReward.pt")
    med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 64, "intermediate_size": 128,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 2,
           "num_hidden_layers": 2, "pad_token_id": 0, "vocab_size": vocab_size, "encoder_width": 768,
           "add_cross_attention": True}
    (directory / "med_config.json").write_text(json.dumps(med), encoding="utf-8")
    return directory


def hps_official_state(
    *, vision_width: int = 160, vision_layers: int = 2, patch: int = 8, image_size: int = 32, text_width: int = 128,
    text_layers: int = 2, vocab_size: int = 49408, context: int = 77, embed_dim: int = 16, seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random state dict under OpenCLIP's ViT key names (as in the HPSv2 checkpoints), enumerated from
    open_clip's VisionTransformer / TextTransformer / ResidualAttentionBlock, independently of the converter."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}

    def block(prefix: str, w: int) -> None:
        s[f"{prefix}.ln_1.weight"], s[f"{prefix}.ln_1.bias"] = 1 + _rand(g, w), _rand(g, w)
        s[f"{prefix}.attn.in_proj_weight"], s[f"{prefix}.attn.in_proj_bias"] = _rand(g, 3 * w, w), _rand(g, 3 * w)
        s[f"{prefix}.attn.out_proj.weight"], s[f"{prefix}.attn.out_proj.bias"] = _rand(g, w, w), _rand(g, w)
        s[f"{prefix}.ln_2.weight"], s[f"{prefix}.ln_2.bias"] = 1 + _rand(g, w), _rand(g, w)
        s[f"{prefix}.mlp.c_fc.weight"], s[f"{prefix}.mlp.c_fc.bias"] = _rand(g, 4 * w, w), _rand(g, 4 * w)
        s[f"{prefix}.mlp.c_proj.weight"], s[f"{prefix}.mlp.c_proj.bias"] = _rand(g, w, 4 * w), _rand(g, w)

    vw, tw = vision_width, text_width
    s["visual.class_embedding"] = _rand(g, vw)
    s["visual.positional_embedding"] = _rand(g, (image_size // patch) ** 2 + 1, vw)
    s["visual.conv1.weight"] = _rand(g, vw, 3, patch, patch)
    for name in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        w = tw if name == "ln_final" else vw
        s[f"{name}.weight"], s[f"{name}.bias"] = 1 + _rand(g, w), _rand(g, w)
    for i in range(vision_layers):
        block(f"visual.transformer.resblocks.{i}", vw)
    s["visual.proj"] = _rand(g, vw, embed_dim)
    s["token_embedding.weight"] = _rand(g, vocab_size, tw)
    s["positional_embedding"] = _rand(g, context, tw)
    for i in range(text_layers):
        block(f"transformer.resblocks.{i}", tw)
    s["text_projection"] = _rand(g, tw, embed_dim)
    s["logit_scale"] = torch.tensor(4.6052)
    return s


def tiny_hps_dir(directory: str | Path, *, version_file: str = "HPS_v2.1_compressed.pt", seed: int = 0) -> Path:
    """Folder laid out like the xswu/HPSv2 repo (``{"state_dict": ...}`` .pt file) plus a tiny CLIP BPE
    tokenizer (subfolder "tokenizer"); the text vocabulary matches the tokenizer's."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    vocab = write_tiny_clip_tokenizer(directory / "tokenizer")
    tok = CLIPTokenizer(str(directory / "tokenizer" / "vocab.json"), str(directory / "tokenizer" / "merges.txt"))
    tok.save_pretrained(directory / "tokenizer")
    torch.save({"state_dict": hps_official_state(vocab_size=len(vocab), seed=seed)}, directory / version_file)
    return directory


TINY_QWEN_PATCH = 14  # Qwen2-VL's patch (merge 2: 28 px per visual token side)


def tiny_qwen2_tokenizer() -> Any:
    """A byte-level Qwen2 BPE tokenizer (every byte a token, a few merges) with Qwen's special tokens."""
    from transformers import Qwen2Tokenizer

    merges = [("t", "h"), ("Ġ", "t"), ("Ġ", "a"), ("i", "n"), ("e", "r"), ("o", "n"), ("Ġ", "s"), ("r", "e")]
    tokens = list(bytes_to_unicode().values()) + [a + b for a, b in merges]
    tok = Qwen2Tokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token=None, bos_token=None,
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    return tok


def hpsv3_official_state(
    *, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2, vision_width: int = 32,
    vision_layers: int = 2, patch: int = TINY_QWEN_PATCH, merge: int = 2, seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A random state dict under HPSv3.safetensors' key names (transformers 4.45 Qwen2VLForConditionalGeneration
    + ``rm_head``), enumerated here from that code's modules, independently of the converter under test."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}

    def lin(name: str, out: int, inp: int, bias: bool = True) -> None:
        s[f"{name}.weight"] = _rand(g, out, inp)
        if bias:
            s[f"{name}.bias"] = _rand(g, out)

    vw, merged = vision_width, vision_width * merge**2
    s["visual.patch_embed.proj.weight"] = _rand(g, vw, 3, 2, patch, patch)
    for i in range(vision_layers):
        b = f"visual.blocks.{i}"
        for norm in ("norm1", "norm2"):
            s[f"{b}.{norm}.weight"], s[f"{b}.{norm}.bias"] = 1 + _rand(g, vw), _rand(g, vw)
        lin(f"{b}.attn.qkv", 3 * vw, vw)
        lin(f"{b}.attn.proj", vw, vw)
        lin(f"{b}.mlp.fc1", 2 * vw, vw)
        lin(f"{b}.mlp.fc2", vw, 2 * vw)
    s["visual.merger.ln_q.weight"], s["visual.merger.ln_q.bias"] = 1 + _rand(g, vw), _rand(g, vw)
    lin("visual.merger.mlp.0", merged, merged)
    lin("visual.merger.mlp.2", hidden, merged)
    head_dim = hidden // heads
    s["model.embed_tokens.weight"] = _rand(g, vocab_size, hidden)
    for i in range(layers):
        b = f"model.layers.{i}"
        lin(f"{b}.self_attn.q_proj", hidden, hidden)
        lin(f"{b}.self_attn.k_proj", kv_heads * head_dim, hidden)
        lin(f"{b}.self_attn.v_proj", kv_heads * head_dim, hidden)
        lin(f"{b}.self_attn.o_proj", hidden, hidden, bias=False)
        for proj, (out, inp) in (("gate_proj", (2 * hidden, hidden)), ("up_proj", (2 * hidden, hidden)),
                                 ("down_proj", (hidden, 2 * hidden))):
            lin(f"{b}.mlp.{proj}", out, inp, bias=False)
        s[f"{b}.input_layernorm.weight"] = 1 + _rand(g, hidden)
        s[f"{b}.post_attention_layernorm.weight"] = 1 + _rand(g, hidden)
    s["model.norm.weight"] = 1 + _rand(g, hidden)
    lin("lm_head", vocab_size, hidden, bias=False)
    for i, (out, inp) in zip((0, 3, 5), ((1024, hidden), (16, 1024), (2, 16)), strict=True):
        lin(f"rm_head.{i}", out, inp)
    return s


def tiny_hpsv3_dir(directory: str | Path, *, seed: int = 0, hidden: int = 64) -> Path:
    """Folder laid out like the MizzenAI/HPSv3 repo (``HPSv3.safetensors``, official key names) plus a tiny
    Qwen2-VL base model in the subfolder "base" (config.json, tokenizer, image processor), all random."""
    from safetensors.torch import save_file
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    directory = Path(directory)
    base = directory / "base"
    tokenizer = tiny_qwen2_tokenizer()
    tokenizer.save_pretrained(base)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                     "pad_token_id": tokenizer.pad_token_id, "eos_token_id": ids["<|im_end|>"], "bos_token_id": None},
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": hidden, "mlp_ratio": 2, "num_heads": 2,
                       "patch_size": TINY_QWEN_PATCH, "spatial_merge_size": 2, "temporal_patch_size": 2,
                       "in_channels": 3},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.save_pretrained(base)
    Qwen2VLImageProcessorPil(patch_size=TINY_QWEN_PATCH, temporal_patch_size=2, merge_size=2).save_pretrained(base)
    state = hpsv3_official_state(vocab_size=len(tokenizer) + 1, hidden=hidden, seed=seed)  # + <|Reward|>
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "HPSv3.safetensors"))
    return directory
