"""Process-count invariance (accelerate launch, 2 CPU processes) and kill -9 / resume of promptloop.train.

Both compare metrics.jsonl (timings excluded) with an uninterrupted single-process run of the same config.
Note: with accelerate 1.15 `accelerate launch --num_processes 2 --cpu` starts ONE process (multi-CPU needs
MPI); two gloo processes on CPU are launched with `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
--num_processes 2` (torchrun), which is what this test does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptloop.train import load_config, read_metrics, train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
seed: 7
steps: 4
rewards: {proxy: 1.0, alignment: 0.5}
pipeline: {name_or_path: "tiny:sd", num_inference_steps: 4}
policy: {name_or_path: "tiny:llava", lora_r: 4}
loop: {num_refinements: 2}
data: {train: PROMPTS, eval: null}
grpo: {queries_per_step: 2, num_generations: 2, num_iterations: 2, beta: 0.04, micro_batch_size: 3,
       learning_rate: 0.001}
logging: {progress_bar: false, plot: false}
checkpoint: {every: 1, keep: 0, save_final_policy: false}
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _compare(a: list[dict], b: list[dict]) -> None:
    assert [(r["step"], r["kind"]) for r in a] == [(r["step"], r["kind"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        keys = {k for k in ra if not k.startswith("time/")}
        assert keys == {k for k in rb if not k.startswith("time/")}
        for k in keys:
            if isinstance(ra[k], float) or isinstance(rb[k], float):
                assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (ra["step"], k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], (ra["step"], k)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    d = tmp_path_factory.mktemp("dist")
    prompts = d / "prompts.txt"  # world queries, so that the alignment reward applies
    from promptloop.world.shapes.prompts import prompt_set

    prompts.write_text("".join(it.caption + "\n" for it in prompt_set("train")[:5]))
    cfg_file = d / "tiny.yaml"
    cfg_file.write_text(CONFIG.replace("PROMPTS", str(prompts)))
    train(load_config(cfg_file, [f"output_dir={d / 'reference'}"]))
    return cfg_file, read_metrics(d / "reference" / "metrics.jsonl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(setup: tuple[Path, list[dict]], tmp_path: Path) -> None:
    cfg_file, reference = setup
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the `accelerate` launcher is not installed")
    out = tmp_path / "two"
    env = {**_env(), "ACCELERATE_USE_CPU": "1"}
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "promptloop.train",
           str(cfg_file), f"output_dir={out}", "steps=2"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = read_metrics(out / "metrics.jsonl")
    _compare(recs, reference[:2])
    # both processes wrote their RNG state into the (atomic) checkpoint
    assert sorted(p.name for p in (out / "checkpoints" / "step-00000002" / "rng").iterdir()) == ["rank-0.pt",
                                                                                                  "rank-1.pt"]


def test_kill9_then_resume_matches_uninterrupted(setup: tuple[Path, list[dict]], tmp_path: Path) -> None:
    cfg_file, reference = setup
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "promptloop.train", str(cfg_file), f"output_dir={out}"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "checkpoints" / "step-00000001"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed: " + (proc.stderr.read().decode()[-2000:]
                                                                              if proc.stderr else "")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert 1 <= max(done) < 4, done  # killed mid-run
    res = subprocess.run([*cmd, "--resume"], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout
    _compare(read_metrics(out / "metrics.jsonl"), reference)
