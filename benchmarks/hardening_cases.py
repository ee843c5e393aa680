"""The bad-input cases listed in issue 21, run as a user would (subprocess CLI calls); prints one row each.

    python benchmarks/hardening_cases.py [SRC]     # SRC: a promptloop `src` folder (default: this checkout's)

Each row: case | exit code (and whether a traceback ended it) | seconds | the last stderr line that matters
(plus what the case needs: the guidance recorded, the checkpoint resumed from, the metrics rows kept).
Point SRC at an older checkout's `src` to measure the behaviour before the hardening. Takes ~3-4 min on
2 CPU cores (each call imports torch; the training cases run tiny random models for 1-3 steps).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "world"
TRAIN = ["train", "pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava", "pipeline.num_inference_steps=4",
         "loop.num_refinements=2", "data.train=world:train", "data.eval=null", "grpo.queries_per_step=2",
         "grpo.num_generations=2", "logging.progress_bar=false", "logging.plot=false", "checkpoint.every=1",
         "checkpoint.keep=0", "checkpoint.save_final_policy=false"]


def cli(src: str, *args: str | bytes, timeout: int = 90) -> tuple[str, float, str, str]:
    """(exit code or 'timeout', seconds, stderr, stdout) of `promptloop ARGS` with promptloop from `src`."""
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", "import sys; from promptloop.cli import main; sys.exit(main())",
                            *args], cwd=ROOT, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t, f"still running after {timeout} s", ""
    return str(p.returncode), time.perf_counter() - t, p.stderr.decode(errors="replace"), p.stdout.decode(errors="replace")


def row(name: str, res: tuple[str, float, str, str], extra: str = "") -> None:
    code, seconds, err, _ = res
    keep = [ln for ln in err.replace("\r", "\n").splitlines()
            if ln.strip() and "it/s]" not in ln and "Warning" not in ln and not ln.startswith(" ")]
    line = " || ".join(ln for ln in keep if "warning:" in ln or "error:" in ln) or (keep[-1] if keep else "")
    tb = " (traceback)" if "Traceback" in err else ""
    print(f"{name} | exit {code}{tb} | {seconds:.1f} s | {line[:400]}{' | ' + extra if extra else ''}", flush=True)


def resumed(res: tuple[str, float, str, str]) -> str:
    return " ".join(ln for ln in (res[3] + res[2]).splitlines() if "resumed from" in ln)


def main() -> None:
    src = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "src")
    w = Path(tempfile.mkdtemp(prefix="hardening-"))
    shutil.rmtree(shutil.copytree(ASSETS / "backbone", w / "no_binder") / "text_binder")
    f = shutil.copytree(ASSETS / "backbone", w / "flipped") / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1000] ^= 0x10
    f.write_bytes(bytes(data))
    for src_name, name, weights in (("policy", "pol_trunc", "model.safetensors"),
                                    ("policy_grpo", "ada_trunc", "adapter_model.safetensors")):
        f = shutil.copytree(ASSETS / src_name, w / name) / weights
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    evil = shutil.copytree(ASSETS / "policy", w / "evil")
    cfg = json.loads((evil / "promptloop_policy.json").read_text())
    (evil / "promptloop_policy.json").write_text(json.dumps({**cfg, "validator": "promptloop.cli:main"}))
    (evil / "promptloop_manifest.json").unlink(missing_ok=True)  # an attacker would drop it
    (w / "a_file").write_text("x")
    (w / "long.txt").write_text(" ".join(["red"] * 3000) + "\n")

    gen = ["generate", "a red circle", "--steps", "4", "--refine", "1", "--json"]
    for name, extra in (("generate --guidance nan", ["--guidance", "nan"]), ("generate --guidance -5", ["--guidance", "-5"]),
                        ("generate --guidance inf", ["--guidance", "inf"]),
                        ("backbone without text_binder/", ["--pipeline", f"world:{w / 'no_binder'}"]),
                        ("backbone with one flipped byte", ["--pipeline", f"world:{w / 'flipped'}"]),
                        ("truncated policy safetensors", ["--policy", str(w / "pol_trunc")]),
                        ("truncated adapter safetensors", ["--policy", str(w / "ada_trunc")]),
                        ("policy json names promptloop.cli:main", ["--policy", str(w / "evil")]),
                        ("--device bogus", ["--device", "bogus"]), ("--device cuda (no GPU)", ["--device", "cuda"])):
        res = cli(src, *gen, "--out", str(w / "g"), *extra)
        recorded = ""
        if res[0] == "0":
            recorded = f"exit 0, recorded guidance {json.loads(res[3].splitlines()[-1])['guidance']}"
        row(name, res, recorded)
    row("--out is an existing file", cli(src, *gen, "--out", str(w / "a_file")))
    row("non-UTF-8 argv", cli(src, "generate", b"a red \xff circle", "--steps", "4", "--out", str(w / "g")))

    row("train config error (grpo.beta=-1)", cli(src, *TRAIN, "grpo.beta=-1", f"output_dir={w / 'c'}"))
    row("train grpo.learning_rate=.inf", cli(src, *TRAIN, "grpo.learning_rate=.inf", "steps=2", f"output_dir={w / 'l'}"))
    row("train unknown reward_kwargs key", cli(src, *TRAIN, "reward_kwargs={alignment: {bogus: 1}}", "steps=1",
                                               f"output_dir={w / 'k'}"))
    row("train 3000-word prompt line", cli(src, *TRAIN, "rewards={proxy: 1.0}", f"data.train={w / 'long.txt'}", "steps=1",
                                           f"output_dir={w / 'p'}", timeout=60))
    run = w / "run"
    row("train base run (2 steps, checkpoint every step)", cli(src, *TRAIN, "steps=2", f"output_dir={run}"))
    for d in ("explicit", "below", "broken", "metrics"):
        shutil.copytree(run, w / d)
    first = w / "explicit" / "checkpoints" / "step-00000001"
    res = cli(src, *TRAIN, "steps=2", f"output_dir={w / 'explicit'}", f"resume={first}", "--resume")
    row("resume=PATH(step 1) --resume", res, resumed(res))
    row("steps=1 below the checkpoint (2) --resume", cli(src, *TRAIN, "steps=1", f"output_dir={w / 'below'}", "--resume"))
    (w / "broken" / "checkpoints" / "step-00000002" / "trainer_state.json").write_text("{broken")
    res = cli(src, *TRAIN, "steps=2", f"output_dir={w / 'broken'}", "--resume")
    row("broken latest checkpoint --resume", res, resumed(res))
    m = w / "metrics" / "metrics.jsonl"
    lines = m.read_text().splitlines()
    m.write_text(lines[0][:20] + "\n" + "\n".join(lines[1:]) + "\n")
    res = cli(src, *TRAIN, "steps=3", f"output_dir={w / 'metrics'}", "--resume")
    kept = [json.loads(ln)["step"] for ln in m.read_text().splitlines() if ln.startswith("{") and ln.endswith("}")]
    row("metrics.jsonl cut mid-file, then --resume", res, f"train rows kept: steps {kept}")
    shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
