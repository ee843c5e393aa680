"""Run `promptloop.train` under Accelerate's FSDP2 state on CPU processes (launched by tests/test_train_fsdp.py).

Accelerate enables FSDP only on GPUs (on CPU processes it sets up MULTI_CPU and ignores an FSDP plugin), so this
script builds the Accelerator of a CPU launch and then puts into its state exactly what Accelerate sets under
`configs/accelerate/fsdp.yaml` on GPUs: distributed type FSDP and an FSDP2 plugin (full shard, transformer-based
wrap, full state dicts). Everything after that is the real code path: `accelerator.prepare`, FSDP2's
`fully_shard` on gloo, the trainer's gathered sampling, gradient scaling and full-state checkpoints.

Usage: python fsdp_cpu_launch.py CONFIG.yaml [key=value ...]
"""

from __future__ import annotations

import sys

from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from promptloop.train import load_config, train


def main(argv: list[str]) -> None:
    config = load_config(argv[0], argv[1:])
    accelerator = Accelerator(cpu=True, project_dir=config.output_dir)
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
        state_dict_type="FULL_STATE_DICT", cpu_ram_efficient_loading=False)
    accelerator.state.distributed_type = DistributedType.FSDP
    train(config, accelerator=accelerator)


if __name__ == "__main__":
    main(sys.argv[1:])
