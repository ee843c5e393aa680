"""`promptloop plan`: parameter counts from configs on the meta device equal those of materialised models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from promptloop.cli import main
from promptloop.plan import (
    DTYPE_BYTES,
    GB,
    build_meta,
    count_params,
    lora_params,
    pipeline_archs,
    plan,
    plan_config,
    policy_arch,
)
from promptloop.plan.archs import IMAGEREWARD, PIPELINES, QWEN25_VL_3B, Arch
from promptloop.train.config_load import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _real(model: torch.nn.Module) -> int:
    assert all(p.device.type != "meta" for p in model.parameters())
    return count_params(model)


def _materialise(arch: Arch) -> torch.nn.Module:
    """The same architecture built for real (random weights)."""
    torch.manual_seed(0)
    if arch.library == "diffusers":
        import diffusers

        return getattr(diffusers, arch.cls).from_config(dict(arch.config))
    if arch.library == "transformers":
        import transformers
        from transformers import AutoConfig

        cfg = dict(arch.config)
        return getattr(transformers, arch.cls)(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    from transformers import BlipVisionConfig

    from promptloop.rewards.adapters.image_reward import ImageRewardModel, text_config_from_med

    vision = BlipVisionConfig(**arch.config["vision"])
    return ImageRewardModel(vision, text_config_from_med(arch.config["med"], vision.hidden_size))


def _shrunk(arch: Arch, **changes: dict) -> Arch:
    cfg = copy.deepcopy(arch.config)
    for key, value in changes.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return Arch(arch.library, arch.cls, cfg, arch.source, arch.dtype)


TINY_QWEN = _shrunk(QWEN25_VL_3B,  # the embedded 3B entry (tied embeddings), scaled down
                    text_config={"vocab_size": 300, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 2,
                                 "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                                     "mrope_section": [2, 1, 1]}},
                    vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 24, "num_heads": 2,
                                   "out_hidden_size": 32, "fullatt_block_indexes": [1]})
SDXL = PIPELINES["stabilityai/stable-diffusion-xl-base-1.0"]
TINY_SDXL_UNET = _shrunk(SDXL["unet"], block_out_channels=[32, 64, 64], attention_head_dim=[2, 4, 4],
                         transformer_layers_per_block=[1, 1, 2], cross_attention_dim=32, norm_num_groups=8,
                         addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 16,
                         layers_per_block=1)
TINY_VAE = _shrunk(SDXL["vae"], block_out_channels=[8, 16], norm_num_groups=4,
                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
TINY_BIGG = _shrunk(SDXL["text_encoder_2"], vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                    num_attention_heads=2, projection_dim=8)
TINY_IMAGEREWARD = _shrunk(IMAGEREWARD, vision={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                                "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
                           med={"vocab_size": 120, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 32, "max_position_embeddings": 40})


@pytest.mark.parametrize("arch", [TINY_QWEN, TINY_SDXL_UNET, TINY_VAE, TINY_BIGG, TINY_IMAGEREWARD],
                         ids=["qwen25vl", "sdxl-unet", "vae", "clip-bigG-text", "imagereward"])
def test_meta_count_equals_materialised_count(arch: Arch) -> None:
    meta = build_meta(arch)
    assert all(p.device.type == "meta" for p in meta.parameters())
    assert count_params(meta) == _real(_materialise(arch))


def test_tied_embeddings_count_once() -> None:
    tied = build_meta(TINY_QWEN)
    untied = build_meta(_shrunk(TINY_QWEN, tie_word_embeddings=False,
                                text_config={"tie_word_embeddings": False}))
    assert count_params(untied) - count_params(tied) == 300 * 32  # one lm_head of vocab x hidden


@pytest.mark.parametrize("name", ["tiny:llava", "tiny:qwen25vl", "tiny:qwen2vl", "tiny:qwen3vl", "tiny:gemma3",
                                  "tiny:smolvlm", "tiny:llava_onevision"])
def test_tiny_policies_and_their_lora_match_the_real_ones(name: str) -> None:
    from promptloop.testing.policies import TINY_POLICIES

    real = TINY_POLICIES[name.split(":")[1]](seed=0)
    meta = build_meta(policy_arch(name))
    assert count_params(meta) == _real(real.model)
    for regex in (None, r".*(language_model|text_model).*\.(gate_proj|down_proj)"):
        expected = lora_params(meta, 4, regex)
        real_lora = copy.deepcopy(real)
        real_lora.enable_lora(r=4, alpha=8, target_modules=regex)
        n = sum(p.numel() for n_, p in real_lora.model.named_parameters() if "lora_" in n_)
        assert expected == n > 0


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_tiny_pipelines_match_the_real_ones(family: str) -> None:
    from promptloop.testing.pipelines import TINY_PIPELINES

    pipe = TINY_PIPELINES[family](seed=0, device="cpu")
    archs = pipeline_archs(f"tiny:{family}")
    assert set(archs) >= {"unet", "vae", "text_encoder"}
    for part, arch in archs.items():
        assert count_params(build_meta(arch)) == _real(getattr(pipe, part)), part


def test_world_recipe_counts_the_loaded_world_models() -> None:
    from promptloop.world.backbone import load_backbone

    pipe = load_backbone()
    archs = pipeline_archs("world")
    counted = {part: count_params(build_meta(a)) for part, a in archs.items()}
    assert counted["unet"] == _real(pipe.unet) and counted["vae"] == _real(pipe.vae)
    assert counted["text_encoder"] + counted["text_binder"] == _real(pipe.text_encoder)  # MiniLM + its binder
    from promptloop.train.components import load_policy

    cfg = load_config(CONFIGS / "world.yaml")
    assert count_params(build_meta(policy_arch("world"))) == _real(load_policy(cfg.policy, "cpu").model)


def test_embedded_architectures_give_the_published_sizes() -> None:
    # parameter counts published for these checkpoints (model cards / safetensors index totals)
    assert count_params(build_meta(QWEN25_VL_3B)) == 3_754_622_976
    assert count_params(build_meta(SDXL["unet"])) == 2_567_463_684
    assert count_params(build_meta(SDXL["text_encoder"])) == 123_060_480
    assert count_params(build_meta(SDXL["text_encoder_2"])) == 694_659_840
    assert count_params(build_meta(SDXL["vae"])) == 83_653_863


def _tiny_config(tmp_path: Path, finetune: str = "lora") -> Path:
    f = tmp_path / f"tiny_{finetune}.yaml"
    f.write_text("pipeline: {name_or_path: 'tiny:sd', dtype: bfloat16}\n"
                 f"policy: {{name_or_path: 'tiny:qwen25vl', finetune: {finetune}, lora_r: 4}}\n"
                 "rewards: {alignment: 1.0}\ngrpo: {beta: 0.04}\n")
    return f


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_scenarios_add_up(tmp_path: Path, finetune: str) -> None:
    rec = plan_config(load_config(_tiny_config(tmp_path, finetune)), [1, 2, 4], 80.0, "tiny")
    rows = {c["name"]: c for c in rec["components"]}
    for c in rows.values():
        assert c["bytes"] == c["params"] * DTYPE_BYTES[c["dtype"]]
    assert all(rows[k]["dtype"] == "bfloat16" for k in rows if k.startswith("pipeline."))
    n_train = rows["policy.lora"]["params"] if finetune == "lora" else rows["policy"]["params"]
    assert rows["trainable.grads"]["params"] == n_train and rows["trainable.adamw"]["params"] == 2 * n_train
    assert ("reference" in rows) == (finetune == "full")  # LoRA's reference is the same weights, adapter off
    if finetune == "lora":
        assert rows["policy.lora"]["dtype"] == "float32"
    side = rec["policy_side_bytes"]
    assert side == sum(c["bytes"] for k, c in rows.items() if not k.startswith("pipeline."))
    parts = [c["bytes"] for k, c in rows.items() if k.startswith("pipeline.")]
    pipe, weights = rec["pipeline_bytes"], rec["policy_weight_bytes"]
    assert pipe == sum(parts) and weights == rows["policy"]["bytes"] and rec["reward_bytes"] == 0
    assert rec["cpu_bytes_offload"] == pipe - max(parts)
    for n in (1, 2, 4):
        assert rec["per_gpu_bytes"]["replicated"][str(n)] == pipe + side
        assert rec["per_gpu_bytes"]["offload"][str(n)] == max(parts) + side
        if finetune == "lora":  # LoRA runs are not sharded
            assert rec["per_gpu_bytes"]["fsdp"][str(n)] is None and rec["fits"]["fsdp"][str(n)] is None
            continue
        # FSDP: the shards, plus the policy's weights gathered whole while it samples
        assert rec["per_gpu_bytes"]["fsdp"][str(n)] == pipe + -(-side // n) + weights
        assert rec["per_gpu_bytes"]["fsdp_offload"][str(n)] == max(parts) + -(-side // n) + weights
    tight = plan_config(load_config(_tiny_config(tmp_path, finetune)), [1, 4], (max(parts) + side) / GB * 1.0001,
                        "tiny")
    assert tight["fits"]["offload"]["1"] and not tight["fits"]["replicated"]["1"]
    assert tight["smallest_fit"] == "offload on 1 GPU"
    if finetune == "full":
        snug = (max(parts) + -(-side // 4) + weights) / GB * 1.0001
        tight = plan_config(load_config(_tiny_config(tmp_path, finetune)), [1, 2, 4], snug, "tiny")
        assert tight["smallest_fit"] == "fsdp+offload on 4 GPUs" and not tight["fits"]["fsdp"]["4"]


def test_cli_json_and_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = str(_tiny_config(tmp_path))
    assert main(["plan", cfg, "--gpus", "1,2", "--budget-gb", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpus"] == [1, 2] and out["budget_gb"] == 40 and out["recipes"][0]["config"] == cfg
    assert main(["plan", cfg]) == 0
    text = capsys.readouterr().out
    assert "policy.lora" in text and "fsdp+offload" in text and "8 GPUs" in text and "n/a" in text
    assert "smallest set-up under 80 GB: replicated on 1 GPU" in text


def test_shipped_recipes_fit_an_80gb_gpu_replicated() -> None:
    out = plan([CONFIGS / "sdxl_imagereward.yaml"], gpus=[1, 4])
    rec = out["recipes"][0]
    assert rec["fits"]["replicated"]["1"]
    assert rec["per_gpu_bytes"]["offload"]["4"] < rec["per_gpu_bytes"]["replicated"]["4"]
    assert rec["fits"]["fsdp"]["4"] is None and rec["smallest_fit"] == "replicated on 1 GPU"
    names = [c["name"] for c in rec["components"]]
    assert names[:4] == ["pipeline.unet", "pipeline.vae", "pipeline.text_encoder", "pipeline.text_encoder_2"]
    assert "reward.imagereward" in names


@pytest.mark.parametrize("argv,message", [
    (["plan", "/no/such.yaml"], "config file not found"),
    (["plan", "--gpus", "0"], "expected comma-separated positive integers"),
    (["plan", "--budget-gb", "0"], "expected a positive finite number"),
    (["plan", "UNKNOWN"], "policy 'acme/unknown-vlm': no config found"),
    (["plan", "BADREWARD"], "reward 'pickscore': model 'acme/clip': no config found"),
])
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                      message: str) -> None:
    unknown = tmp_path / "u.yaml"
    unknown.write_text("policy: {name_or_path: acme/unknown-vlm}\n")
    bad_reward = tmp_path / "r.yaml"
    bad_reward.write_text("pipeline: {name_or_path: 'tiny:sd'}\npolicy: {name_or_path: 'tiny:llava'}\n"
                          "rewards: {pickscore: 1.0}\nreward_kwargs: {pickscore: {model_name_or_path: acme/clip}}\n")
    argv = [{"UNKNOWN": str(unknown), "BADREWARD": str(bad_reward)}.get(a, a) for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_full_fine_tuning_of_a_7b_policy_needs_sharding(tmp_path: Path) -> None:
    f = tmp_path / "full7b.yaml"
    f.write_text("pipeline: {name_or_path: stabilityai/stable-diffusion-xl-base-1.0, dtype: bfloat16}\n"
                 "policy: {name_or_path: Qwen/Qwen2.5-VL-7B-Instruct, finetune: full, dtype: bfloat16}\n"
                 "rewards: {imagereward: 1.0}\ngrpo: {beta: 0.04}\n")
    rec = plan([f], gpus=[1, 2, 4])["recipes"][0]
    weights = rec["policy_weight_bytes"]
    assert rec["policy_side_bytes"] == 5 * weights  # weights + grads + 2 AdamW moments + the reference, all bf16
    assert not rec["fits"]["replicated"]["4"] and rec["fits"]["fsdp"]["4"]
    assert rec["smallest_fit"] in ("fsdp on 2 GPUs", "fsdp+offload on 2 GPUs", "fsdp on 4 GPUs")
