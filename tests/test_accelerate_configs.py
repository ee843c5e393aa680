"""The shipped Accelerate launch configs (configs/accelerate/) parse with Accelerate's own loader, and the trainer
accepts FSDP2 for full fine-tuning (tests/test_train_fsdp.py runs it) and refuses, in one line, what it cannot run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from promptloop.train.trainer import TrainError, check_distributed_type

FOLDER = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXPECTED = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp.yaml": DistributedType.FSDP,
            "deepspeed_zero2.yaml": DistributedType.DEEPSPEED, "deepspeed_zero3.yaml": DistributedType.DEEPSPEED}


def test_the_folder_holds_exactly_the_documented_files() -> None:
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerates_loader(name: str) -> None:
    path = FOLDER / name
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    assert DistributedType(cfg.distributed_type) == EXPECTED[name]  # a valid distributed type, the intended one
    assert cfg.num_machines == 1 and cfg.num_processes >= 2 and cfg.mixed_precision == "bf16"
    header = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
    assert len(header) >= 3 and "Use it" in " ".join(header)  # when to use it
    if name == "fsdp.yaml":
        fsdp = cfg.fsdp_config
        assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True  # FSDP2, full shard
        assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        from transformers import Qwen2_5_VLForConditionalGeneration

        # the wrapped classes are the policy's own blocks (the units transformers never splits)
        assert set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")) == set(
            Qwen2_5_VLForConditionalGeneration._no_split_modules)
    if name.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-6])


def _accelerator(kind: DistributedType, fsdp_version: int = 2) -> SimpleNamespace:
    """What the trainer reads of an Accelerator: its distributed type and, under FSDP, the plugin in its state."""
    plugin = FullyShardedDataParallelPlugin(fsdp_version=fsdp_version) if kind == DistributedType.FSDP else None
    return SimpleNamespace(distributed_type=kind, state=SimpleNamespace(fsdp_plugin=plugin))


@pytest.mark.parametrize("kind", [DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM])
def test_trainer_refuses_engine_modes_with_one_line(kind: DistributedType) -> None:
    with pytest.raises(TrainError, match=f"distributed type {kind.value} is not supported.*fsdp.yaml") as e:
        check_distributed_type(_accelerator(kind), "full")
    assert "\n" not in str(e.value)


def test_trainer_takes_fsdp2_for_full_fine_tuning_only() -> None:
    check_distributed_type(_accelerator(DistributedType.FSDP), "full")
    with pytest.raises(TrainError, match="LoRA.*ddp.yaml"):
        check_distributed_type(_accelerator(DistributedType.FSDP), "lora")
    with pytest.raises(TrainError, match="fsdp_version: 2"):
        check_distributed_type(_accelerator(DistributedType.FSDP, fsdp_version=1), "full")


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_trainer_accepts_data_parallel_modes(kind: DistributedType, finetune: str) -> None:
    check_distributed_type(_accelerator(kind), finetune)
