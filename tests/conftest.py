"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

# transformers' and diffusers' log handlers are made on first use, on the sys.stderr of that moment: make them now,
# on pytest's stream, not inside a test on its capsys stream (closed after that test: a later warning would print
# '--- Logging error' with a traceback into another test's stderr)
transformers_logging.get_logger("transformers")
diffusers_logging.get_logger("diffusers")


@pytest.fixture
def size_limit() -> Iterator[Any]:
    """`size_limit(n)` caps the size of the files this process writes from then on at n bytes (None: no cap again;
    the cap ends with the test too; RLIMIT_FSIZE): a write past it fails inside torch.save, safetensors or PIL with EFBIG, as a full disk fails
    with ENOSPC."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us

    def arm(nbytes: int | None) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft if nbytes is None else nbytes, hard))

    yield arm
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)


def tiny_v3_backbone_config(root: Path, name: str, **kw: object) -> Any:
    """A few-step `BackboneTrainConfig` of world v3 (random-quality weights: for code paths, not figures)."""
    from promptloop.world.train_backbone import BackboneTrainConfig

    base = dict(world="v3", work_dir=str(root / f"{name}_work"), out_dir=str(root / name), vae_steps=2, vae_batch=2,
                scale_renders=8, pool_size=8, unet_steps=2, batch=2, warmup=1, decoder_steps=1, checkpoint_every=1)
    return BackboneTrainConfig(**{**base, **kw})


def tiny_v3_grpo(root: Path, policy: Any, backbone: Path, *overrides: str) -> tuple[Path, Path]:
    """Two GRPO steps of the tiny `policy` (saved to ROOT/policy) on the tiny v3 `backbone` by configs/world_v3.yaml
    plus `overrides`: (base policy folder, run folder ROOT/run)."""
    from promptloop.train import load_config, train

    policy.save_pretrained(root / "policy")
    out = root / "run"
    base = [f"output_dir={out}", f"pipeline.name_or_path=world:{backbone}", f"policy.name_or_path={root / 'policy'}",
            "pipeline.num_inference_steps=4", "loop.num_refinements=2", "eval.every=2", "eval.num_queries=2",
            "grpo.queries_per_step=2", "grpo.num_generations=2", "steps=2", "logging.progress_bar=false",
            "checkpoint.every=0", "eval.trajectories=0", "logging.plot=false"]
    train(load_config(Path(__file__).resolve().parents[1] / "configs" / "world_v3.yaml", [*base, *overrides]))
    return root / "policy", out


@pytest.fixture(scope="session")
def tiny_v3_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world-v3 backbone folder trained by the shared training code, shared by the v3 test files."""
    from promptloop.world.train_backbone import train_backbone

    return train_backbone(tiny_v3_backbone_config(tmp_path_factory.mktemp("v3"), "scratch"))


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """`run_cli(*argv)`: (exit code, stdout, stderr) of `promptloop ARGV` in this process, argparse's exits
    included."""
    from promptloop.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse exits
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
