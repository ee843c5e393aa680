"""Sharded full fine-tuning (FSDP2) on two CPU processes: the same run as one unsharded process, each process
holding half of the policy, its optimizer state and the reference; checkpoints written whole, resumed into shards.

Accelerate enables FSDP only on GPUs, so the two gloo processes run `tests/fsdp_cpu_launch.py`, which gives the
Accelerator of a CPU launch the FSDP2 state Accelerate sets on GPUs (see its docstring); the rest is the real path.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from promptloop.train import load_config, read_metrics, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
seed: 3
steps: 3
rewards: {proxy: 1.0}
pipeline: {name_or_path: "tiny:sd", num_inference_steps: 3}
policy: {name_or_path: "tiny:llava", finetune: full}
loop: {num_refinements: 2}
data: {train: PROMPTS, eval: null}
grpo: {queries_per_step: 2, num_generations: 2, num_iterations: 2, beta: 0.04, micro_batch_size: 3,
       learning_rate: 0.0005}
logging: {progress_bar: false, plot: false}
checkpoint: {every: 1, keep: 0, save_final_policy: true}
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               ACCELERATE_USE_CPU="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(cfg_file: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the `accelerate` launcher is not installed")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(ROOT / "tests" / "fsdp_cpu_launch.py"), str(cfg_file), *overrides]
    return subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)


def _close(a: list[dict], b: list[dict], rel: float) -> None:
    assert [(r["step"], r["kind"]) for r in a] == [(r["step"], r["kind"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k.startswith("time/"):
                continue
            if isinstance(ra[k], float):
                assert ra[k] == pytest.approx(rb[k], rel=rel, abs=1e-6), (ra["step"], k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], (ra["step"], k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fsdp")
    prompts = d / "prompts.txt"
    prompts.write_text("a red circle\na blue square left of a green triangle\na small yellow disc\n")
    cfg_file = d / "full.yaml"
    cfg_file.write_text(CONFIG.replace("PROMPTS", str(prompts)))
    train(load_config(cfg_file, [f"output_dir={d / 'single'}"]))
    proc = _launch(cfg_file, f"output_dir={d / 'sharded'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"config": cfg_file, "single": d / "single", "sharded": d / "sharded", "dir": d}


def test_two_sharded_processes_train_as_one_unsharded(runs: dict[str, Path]) -> None:
    single = read_metrics(runs["single"] / "metrics.jsonl")
    sharded = read_metrics(runs["sharded"] / "metrics.jsonl")
    assert all(r["ratio_first_pass_max_dev"] == 0.0 for r in sharded if r["kind"] == "train")
    _close(sharded, single, rel=1e-3)
    # the final policies agree weight for weight: the sharded one was gathered whole and saved from the main process
    from promptloop.policy.vlm import VLMPolicy

    a = VLMPolicy.from_pretrained(runs["single"] / "policy").model.state_dict()
    b = VLMPolicy.from_pretrained(runs["sharded"] / "policy").model.state_dict()
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-4
    config = json.loads((runs["sharded"] / "policy" / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]  # not the FSDP subclass


def test_sharded_checkpoint_is_written_whole_and_resumes_into_shards(runs: dict[str, Path]) -> None:
    step2 = runs["sharded"] / "checkpoints" / "step-00000002"
    state = json.loads((step2 / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["optimizer_layout"] == "by_name"
    optim = torch.load(step2 / "optimizer.pt", weights_only=True)
    assert optim["state"] and all(isinstance(k, str) for k in optim["state"])  # whole, keyed by parameter name
    resumed = runs["dir"] / "resumed"
    shutil.copytree(runs["sharded"], resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000003")
    shutil.rmtree(resumed / "policy")
    proc = _launch(runs["config"], f"output_dir={resumed}", "resume=true")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stdout
    _close(read_metrics(resumed / "metrics.jsonl"), read_metrics(runs["sharded"] / "metrics.jsonl"), rel=1e-6)


def test_a_sharded_checkpoint_is_not_resumed_unsharded(runs: dict[str, Path]) -> None:
    from promptloop.train import CheckpointError

    resumed = runs["dir"] / "unsharded"
    shutil.copytree(runs["sharded"], resumed)
    with pytest.raises(CheckpointError, match="sharded \\(FSDP\\) run; resume it with configs/accelerate/fsdp.yaml"):
        train(load_config(runs["config"], [f"output_dir={resumed}", "resume=true", "steps=4"]))
