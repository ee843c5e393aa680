"""Published architecture hyper-parameters of the models the shipped recipes name, so that `promptloop plan`
can size them without downloading anything.

Each entry copies the architecture fields of the model's `config.json` on the Hugging Face Hub (the repo and
file are named in `source`); fields that do not change the parameter count (dropout, token ids, rope
scaling, ...) are left out where the config class's default is as good. A local folder or a Hub-cache copy
of the real config takes precedence over these (see `promptloop.plan.resolve`). `extra["quant_skip"]`: the
module prefixes a quantized reward keeps unquantized (its head), as its adapter's `_place(skip=...)` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arch:
    """How to build one model on the meta device: library ('diffusers' / 'transformers' / 'promptloop'),
    class name, config dict, where the config comes from, and the checkpoint's own dtype (if it names one)."""

    library: str
    cls: str
    config: dict[str, Any]
    source: str
    dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ policies (VLMs)
_QWEN25_VL_VISION = {  # the vision tower shared by Qwen2.5-VL 3B / 7B / 72B (out_hidden_size = the LM width)
    "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
    "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
}

QWEN25_VL_3B = Arch(
    "transformers", "Qwen2_5_VLForConditionalGeneration",
    {"model_type": "qwen2_5_vl", "tie_word_embeddings": True,
     "text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                     "num_attention_heads": 16, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                     "max_position_embeddings": 128000, "tie_word_embeddings": True},
     "vision_config": {**_QWEN25_VL_VISION, "out_hidden_size": 2048}},
    "Qwen/Qwen2.5-VL-3B-Instruct config.json", dtype="bfloat16")

QWEN25_VL_7B = Arch(
    "transformers", "Qwen2_5_VLForConditionalGeneration",
    {"model_type": "qwen2_5_vl", "tie_word_embeddings": False,
     "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-6,
                     "max_position_embeddings": 128000, "tie_word_embeddings": False},
     "vision_config": {**_QWEN25_VL_VISION, "out_hidden_size": 3584}},
    "Qwen/Qwen2.5-VL-7B-Instruct config.json", dtype="bfloat16")

POLICIES: dict[str, Arch] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": QWEN25_VL_3B,
    "Qwen/Qwen2.5-VL-7B-Instruct": QWEN25_VL_7B,
}

# ------------------------------------------------------------------------------------------ diffusion pipelines
_VAE_SD = {  # stable-diffusion-v1-5 and SDXL share the AutoencoderKL architecture
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "out_channels": 3,
    "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
_CLIP_L_TEXT = {  # openai/clip-vit-large-patch14's text tower (SD 1.5's and SDXL's first text encoder)
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}
_SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
_SDXL = "stabilityai/stable-diffusion-xl-base-1.0"

PIPELINES: dict[str, dict[str, Arch]] = {
    _SD15: {
        "unet": Arch("diffusers", "UNet2DConditionModel", {
            "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
            "cross_attention_dim": 768, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
            "norm_num_groups": 32, "norm_eps": 1e-5, "sample_size": 64,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        }, f"{_SD15} unet/config.json"),
        "vae": Arch("diffusers", "AutoencoderKL", {**_VAE_SD, "sample_size": 512}, f"{_SD15} vae/config.json"),
        "text_encoder": Arch("transformers", "CLIPTextModel", {"model_type": "clip_text_model", **_CLIP_L_TEXT},
                             f"{_SD15} text_encoder/config.json"),
    },
    _SDXL: {
        "unet": Arch("diffusers", "UNet2DConditionModel", {
            "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
            "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
            "cross_attention_dim": 2048, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
            "norm_num_groups": 32, "norm_eps": 1e-5, "projection_class_embeddings_input_dim": 2816,
            "sample_size": 128, "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        }, f"{_SDXL} unet/config.json"),
        "vae": Arch("diffusers", "AutoencoderKL", {**_VAE_SD, "sample_size": 1024}, f"{_SDXL} vae/config.json"),
        "text_encoder": Arch("transformers", "CLIPTextModel", {"model_type": "clip_text_model", **_CLIP_L_TEXT},
                             f"{_SDXL} text_encoder/config.json"),
        "text_encoder_2": Arch("transformers", "CLIPTextModelWithProjection", {  # OpenCLIP ViT-bigG/14's text tower
            "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120,
            "num_hidden_layers": 32, "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu",
            "projection_dim": 1280,
        }, f"{_SDXL} text_encoder_2/config.json"),
    },
}
PIPELINES["runwayml/stable-diffusion-v1-5"] = PIPELINES[_SD15]  # the original id of the same weights

# ------------------------------------------------------------------------------------------ reward models
# ImageReward = BLIP's ViT-L/16 at 224 px + BLIP's med BERT-base (cross-attending to the ViT) + a 5-layer head;
# the ViT shape is that of ImageReward.pt (blip.visual_encoder.*), the text one of THUDM/ImageReward med_config.json.
IMAGEREWARD = Arch("promptloop", "ImageRewardModel", {
    "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
               "image_size": 224, "patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-6},
    "med": {"vocab_size": 30524, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
            "layer_norm_eps": 1e-12, "pad_token_id": 0},
}, "THUDM/ImageReward ImageReward.pt (ViT shapes) + med_config.json", extra={"quant_skip": ("head",)})

# CLIP towers of the CLIP-based rewards (transformers' CLIPModel)
CLIP_VIT_L14 = Arch("transformers", "CLIPModel", {  # clipscore, aesthetic
    "model_type": "clip", "projection_dim": 768,
    "text_config": {k: v for k, v in _CLIP_L_TEXT.items() if k != "projection_dim"},
    "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "quick_gelu"},
}, "openai/clip-vit-large-patch14 config.json")
CLIP_VIT_H14 = Arch("transformers", "CLIPModel", {  # pickscore; hpsv2 (OpenCLIP ViT-H-14 renamed onto CLIPModel)
    "model_type": "clip", "projection_dim": 1024,
    "text_config": {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                    "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu"},
    "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                      "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
}, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K config.json (= yuvalkirstain/PickScore_v1, xswu/HPSv2's ViT-H-14)")
CLIP_ARCHS: dict[str, Arch] = {
    "openai/clip-vit-large-patch14": CLIP_VIT_L14,
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": CLIP_VIT_H14,
    "yuvalkirstain/PickScore_v1": CLIP_VIT_H14,
}

QWEN2_VL_7B = {  # Qwen/Qwen2-VL-7B-Instruct config.json (HPSv3's base model)
    "model_type": "qwen2_vl", "tie_word_embeddings": False,
    "text_config": {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-6,
                    "max_position_embeddings": 32768, "tie_word_embeddings": False},
    "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "hidden_act": "quick_gelu", "mlp_ratio": 4,
                      "num_heads": 16, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2,
                      "temporal_patch_size": 2},
}
# HPSv3 = Qwen2VLModel (no lm_head) + its reward head; the checkpoint's embeddings were resized to the tokenizer
# plus <|Reward|>: Qwen2-VL's 151,657 tokens + 1 (1.5 M parameters fewer than the base's 152,064 rows)
HPSV3 = Arch("promptloop", "HPSv3Model", {
    "qwen2_vl": {**QWEN2_VL_7B, "text_config": {**QWEN2_VL_7B["text_config"], "vocab_size": 151658}},
}, "MizzenAI/HPSv3 HPSv3.safetensors on Qwen/Qwen2-VL-7B-Instruct config.json", extra={"quant_skip": ("rm_head",)})

# aesthetic = a CLIP model (default ViT-L/14) + the LAION improved-aesthetic-predictor MLP on its embedding
REWARD_CLIP_DEFAULTS = {"clipscore": "openai/clip-vit-large-patch14", "aesthetic": "openai/clip-vit-large-patch14",
                        "pickscore": "yuvalkirstain/PickScore_v1"}  # the rewards' default `model_name_or_path`
REWARDS: dict[str, Arch] = {"imagereward": IMAGEREWARD, "hpsv2": CLIP_VIT_H14, "hpsv3": HPSV3}
PARAMETER_FREE_REWARDS = ("proxy",)  # built-in rewards without weights (numpy); the worlds' rewards are too
