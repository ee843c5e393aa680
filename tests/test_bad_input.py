"""Bad-input suite (issue 21): every case ends in exit code 2 and one specific `error:` line, no traceback.

Table-driven, in process. CLI and config cases call `promptloop.cli.main`; model folders, images and
rewards are driven through the same `run_command` error path the CLI uses (so the exit code and the line
are the ones a user sees). Model folders are copies of the shipped ones with one defect each.
"""

from __future__ import annotations

import errno
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from promptloop.cli import _known_errors, main
from promptloop.cli_runner import run_command

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "world"
TINY_TRAIN = ["pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava", "pipeline.num_inference_steps=4",
              "loop.num_refinements=2", "data.eval=null", "grpo.queries_per_step=2", "grpo.num_generations=2",
              "logging.progress_bar=false", "logging.plot=false", "rewards={proxy: 1.0}"]


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = int(e.code or 0)
    _, err = capsys.readouterr()
    return code, err


def _assert_one_line(code: int, err: str, message: str) -> None:
    err = err.replace("\r", "\n")  # progress bars (model loading) are not error lines
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("promptloop.train: warning", "  "))
             and "Warning" not in ln and "it/s]" not in ln]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "error:" in lines[0] and message in lines[0], lines[0]


def _check_all(cases: list[tuple[str, Any, str]], run: Callable[[Any], tuple[int, str]]) -> None:
    """Run each (name, input, message) case; the failure names the case."""
    for name, given, message in cases:
        code, err = run(given)
        try:
            _assert_one_line(code, err, message)
        except AssertionError as e:
            raise AssertionError(f"case {name!r}: {e}") from None


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prompt files, YAML configs and plain files with one defect each."""
    d = tmp_path_factory.mktemp("bad")
    (d / "a_file").write_text("x")
    (d / "prompts.pdf").write_text("a red circle\n")
    (d / "bad.jsonl").write_text('{"prompt": "a red circle"}\n{oops\n')
    (d / "nonstr.jsonl").write_text('{"prompt": 3}\n')
    (d / "bad.csv").write_text("prompt,extra\na red circle,1\na blue square\n")
    (d / "latin1.txt").write_bytes("a red circle\nun caf\xe9\n".encode("latin-1"))
    (d / "long.txt").write_text("a red circle\n" + " ".join(["red"] * 3000) + "\n")
    (d / "wide.txt").write_text("a red circle\n" + "x" * 2500 + "\n")
    (d / "long_only.txt").write_text(" ".join(["red"] * 3000) + "\n")
    (d / "wide_only.txt").write_text("x" * 2500 + "\n")
    (d / "empty.txt").write_text("# only a comment\n\n")
    (d / "nul.txt").write_text("a red\x00 circle\n")
    (d / "bad.yaml").write_text("grpo: {beta: [1,\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    (d / "unknown.yaml").write_text("grpo:\n  betta: 0.1\n")
    (d / "inf.yaml").write_text("grpo:\n  learning_rate: .inf\n")
    (d / "a_folder").mkdir()
    (d / "regex.yaml").write_text("policy: {lora_target_modules: '['}\n")
    (d / "dup.yaml").write_text("grpo: {beta: 0.1}\ngrpo: {learning_rate: 0.001}\n")
    (d / "latin1.yaml").write_bytes("steps: 3 # caf\xe9\n".encode("latin-1"))
    return d


def _cases_cli(f: Path) -> list[tuple[str, list[str], str]]:
    g = ["generate", "a red circle"]
    cuda = torch.cuda.is_available()
    return [
        ("guidance nan", [*g, "--guidance", "nan"], "--guidance: expected a finite number >= 0, got nan"),
        ("guidance -5", [*g, "--guidance", "-5"], "expected a finite number >= 0, got -5"),
        ("guidance inf", [*g, "--guidance", "inf"], "expected a finite number >= 0, got inf"),
        ("guidance text", [*g, "--guidance", "strong"], "got 'strong'"),
        ("room guidance nan", ["world", "room", "--guidance", "nan"], "expected a finite number >= 0, got nan"),
        ("backbone-eval guidance -1", ["world", "backbone-eval", "--guidance", "-1"], "expected a finite number >= 0"),
        ("compare guidance inf", ["eval", "compare", "--guidance", "inf"], "expected a finite number >= 0, got inf"),
        ("device bogus", [*g, "--device", "bogus"], "--device: unknown device 'bogus'"),
        ("device cuda:99", [*g, "--device", "cuda:99"],
         "only" if cuda else "no CUDA GPU is available here"),
        ("device cuda", [*g, "--device", "cuda" if not cuda else "mps"],
         "no CUDA GPU is available here" if not cuda else "MPS is not available"),
        ("device xla", [*g, "--device", "meta"], "unsupported device 'meta'"),
        ("dtype int8", [*g, "--dtype", "int8"], "invalid choice: 'int8'"),
        ("num-images 0", [*g, "--num-images", "0"], "expected a positive integer, got 0"),
        ("steps 1", [*g, "--steps", "1", "--refine", "0"], "--steps must be at least 2"),
        ("query 3000 words", ["generate", " ".join(["red"] * 3000)], "query: the prompt has 3000 words, the limit is 200"),
        ("query 2500 chars", ["generate", "x" * 2500], "query: the prompt has 2500 characters, the limit is 2000"),
        ("query NUL", ["generate", "a red\x00 circle"], "query: NUL byte in the prompt"),
        ("negative prompt 300 words", [*g, "--negative-prompt", " ".join(["blur"] * 300)],
         "--negative-prompt: the prompt has 300 words"),
        ("argv not UTF-8", ["generate", "a red \udcff circle"], "argument 2 ('a red \ufffd circle') is not valid UTF-8"),
        ("train argv not UTF-8", ["train", "output_dir=/tmp/\udcfe"], "is not valid UTF-8"),
        ("out is a file", [*g, "--out", str(f / "a_file")], f"--out {f / 'a_file'}: exists and is a file, not a folder"),
        ("out below a file", [*g, "--out", str(f / "a_file" / "sub")], "is a file, not a folder"),
        ("unknown command", ["paint"], "invalid choice: 'paint'"),
        ("prompts set bogus", ["world", "prompts", "bogus"], "invalid choice: 'bogus'"),
        ("overhead batch 0", ["bench", "overhead", "--batch", "0"], "expected a positive integer, got 0"),
        ("manifests not a folder", ["world", "write-manifests", str(f / "a_file")], "not a folder"),
    ]


def _cases_config(f: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    t = ["train", f"output_dir={tmp / 'cfg'}"]
    return [
        ("lr inf", [*t, "grpo.learning_rate=.inf"], "grpo.learning_rate: expected a finite number, got inf"),
        ("beta nan", [*t, "grpo.beta=.nan"], "grpo.beta: expected a finite number, got nan"),
        ("adam_eps inf (yaml)", ["train", str(f / "inf.yaml")], "grpo.learning_rate: expected a finite number, got inf"),
        ("guidance_scale -1", [*t, "pipeline.guidance_scale=-1"], "pipeline.guidance_scale: must be >= 0"),
        ("temperature 0", [*t, "policy.temperature=0"], "policy.temperature: must be > 0"),
        ("top_p 2", [*t, "policy.top_p=2"], "policy.top_p: must be in (0, 1]"),
        ("unknown key", [*t, "bogus=1"], "unknown key 'bogus'"),
        ("unknown key in yaml", ["train", str(f / "unknown.yaml")], "unknown key 'betta'"),
        ("yaml not valid", ["train", str(f / "bad.yaml")], "not valid YAML"),
        ("yaml a list", ["train", str(f / "list.yaml")], "the top level must be a mapping"),
        ("config missing", ["train", str(f / "missing.yaml")], "config file not found"),
        ("num_generations 1", [*t, "grpo.num_generations=1"], "grpo.num_generations: must be >= 2"),
        ("steps 0", [*t, "steps=0"], "steps: must be >= 1, got 0"),
        ("batch too large", [*t, "grpo.queries_per_step=1000", "grpo.num_generations=100"],
         "100000 trajectories per step, the limit is 4096"),
        ("micro batch too large", [*t, "grpo.micro_batch_size=5000"], "grpo.micro_batch_size: must be in 1..1024"),
        ("batch against memory", [*t, "pipeline.height=4096", "pipeline.width=4096", "grpo.queries_per_step=64",
                                  "grpo.num_generations=16"], "GiB, more than half of this machine's"),
        ("eval batch too large", [*t, "eval.num_queries=100", "eval.seeds_per_query=100"],
         "eval.seeds_per_query = 10000, the limit is 4096"),
        ("resume + overwrite", [*t, "resume=true", "overwrite=true"], "overwrite: cannot be combined with resume"),
        ("reward weight nan", [*t, "rewards={alignment: .nan}"], "rewards.alignment: weight must be finite, got nan"),
        ("kwargs without weight", [*t, "reward_kwargs={proxy: {}}"], "options for a reward without a weight"),
        ("refinements > steps", [*t, "loop.num_refinements=50"], "loop.num_refinements: must be in 1..19"),
        ("height not /8", [*t, "pipeline.height=30"], "pipeline.height: must be a positive multiple of 8"),
        ("output_dir a file", ["train", f"output_dir={f / 'a_file'}"], "output_dir " + str(f / "a_file") +
         ": exists and is a file"),
        ("steps type", [*t, "steps=many"], "steps: expected an integer, got 'many'"),
    ]


def _cases_prompts(f: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    t = ["train", f"output_dir={tmp / 'prm'}", *TINY_TRAIN]
    return [
        ("prompt file missing", [*t, f"data.train={f / 'nope.txt'}"], "prompt file not found"),
        ("prompt file type", [*t, f"data.train={f / 'prompts.pdf'}"], "unknown prompt file type '.pdf'"),
        ("jsonl bad line", [*t, f"data.train={f / 'bad.jsonl'}"], "bad.jsonl:2: not valid JSON"),
        ("jsonl non-string", [*t, f"data.train={f / 'nonstr.jsonl'}"], "field 'prompt' is not a string: 3"),
        ("csv row width", [*t, f"data.train={f / 'bad.csv'}"], "bad.csv:3: 1 fields, the header has 2"),
        ("txt not UTF-8", [*t, f"data.train={f / 'latin1.txt'}"], "not UTF-8 text"),
        # an over-long prompt is skipped (test_overlong_training_prompts_are_skipped_with_a_count); only over-long ones:
        ("txt 3000 words", [*t, f"data.train={f / 'long_only.txt'}"],
         "holds no prompts (1 over the length limits; prompt 1: the prompt has 3000 words, the limit is 200)"),
        ("txt 2500 chars", [*t, f"data.train={f / 'wide_only.txt'}"], "prompt 1: the prompt has 2500 characters"),
        ("txt NUL", [*t, f"data.train={f / 'nul.txt'}"], "NUL byte in prompt"),
        ("no prompts", [*t, f"data.train={f / 'empty.txt'}"], "holds no prompts"),
        ("world set bogus", [*t, "data.train=world:bogus"], "prompt source 'world:bogus'"),
    ]


def _cases_ranges(tmp: Path) -> list[tuple[str, list[str], str]]:
    """Finite but absurd numbers (issue 33): refused by their range in validation.LIMITS, naming the flag or field."""
    t = ["train", f"output_dir={tmp / 'rng'}"]
    g = ["generate", "a red circle"]
    return [
        ("lr 100", [*t, "grpo.learning_rate=100"], "grpo.learning_rate: expected a finite number > 0 and <= 1, got 100"),
        ("lr 1e308", [*t, "grpo.learning_rate=1e308"], "grpo.learning_rate: expected a finite number > 0 and <= 1, "
                                                      "got 1e+308"),
        ("seed 2^64", [*t, f"seed={2**64}"], "seed: expected an integer >= 0 and <= 4294967295, got 18446744073709551616"),
        ("guidance_scale 1e6", [*t, "pipeline.guidance_scale=1e6"], "pipeline.guidance_scale: expected a finite number "
                                                                     ">= 0 and <= 100"),
        ("reward weight 1e9", [*t, "rewards={proxy: 1e9}"], "rewards.proxy: expected a finite number >= -1000 and <= 1000"),
        ("trajectories 10^6", [*t, "eval.trajectories=1000000"], "eval.trajectories: expected an integer >= 0 and <= "
                                                                  "100000"),
        ("temperature 1e9", [*t, "policy.temperature=1e9"], "policy.temperature: expected a finite number > 0 and <= 100"),
        ("max_new_tokens 10^9", [*t, "policy.max_new_tokens=1000000000"], "policy.max_new_tokens: expected an integer"),
        ("gen guidance 1e6", [*g, "--guidance", "1e6"], "argument --guidance: expected a finite number >= 0 and <= 100, "
                                                         "got 1000000"),
        ("gen seed 2^64", [*g, "--seed", str(2**64)], "argument --seed: expected an integer >= 0 and <= 4294967295"),
        ("gen images 10^9", [*g, "--num-images", "1000000000"], "argument --num-images: expected an integer >= 1 and "
                                                                 "<= 4096"),
        ("gen steps 10^5", [*g, "--steps", "100000"], "--steps: expected an integer >= 2 and <= 1000, got 100000"),
        ("gen last seed", [*g, "--seed", str(2**32 - 1), "--num-images", "2"], "(the last image's seed): expected an "
                                                                                "integer >= 0 and <= 4294967295"),
        ("room n 10^9", ["world", "room", "--n", "1000000000"], "argument --n: expected an integer >= 1 and <= 100000"),
        ("shift 1e9", ["world", "backbone-eval", "--timestep-shift", "1e9"], "argument --timestep-shift: expected a "
                                                                              "finite number > 0 and <= 100"),
        ("port 70000", ["app", "--port", "70000"], "argument --port: expected an integer >= 1 and <= 65535"),
        ("gpus 10^8", ["plan", "--gpus", "1,100000000"], "GPU count: expected an integer >= 1 and <= 65536"),
        ("budget 1e300", ["plan", "--budget-gb", "1e300"], "argument --budget-gb: expected a finite number > 0"),
        ("backbone lr 100", ["world", "train-backbone", "--lr", "100"], "argument --lr: expected a finite number > 0 "
                                                                          "and <= 1, got 100"),
        ("repeats 10^6", ["bench", "overhead", "--repeats", "1000000"], "argument --repeats: expected an integer"),
        ("compare refine > steps", ["eval", "compare", "--refine", "30", "--steps", "20"],
         "--refine 30 is more than the 19 refinements 20 steps allow"),
    ]


def _cases_paths_and_yaml(f: Path, tmp: Path) -> list[tuple[str, list[str], str]]:
    """Issue 33: YAML and path oddities, across the commands: each names the option or file and what was expected."""
    t = ["train", f"output_dir={tmp / 'pth'}"]
    g = ["generate", "a red circle"]
    a_file = str(f / "a_file")
    return [
        ("config a folder", ["train", str(f / "a_folder")], f"config {f / 'a_folder'}: is a folder, not a YAML file"),
        ("config not UTF-8", ["train", str(f / "latin1.yaml")], "latin1.yaml: not UTF-8 text (invalid continuation "
                                                                 "byte at byte"),
        ("config key twice", ["train", str(f / "dup.yaml")], "dup.yaml: not valid YAML: key 'grpo' is given twice "
                                                              "(lines 1 and 2)"),
        ("override key twice", [*t, "rewards={proxy: 1, proxy: 2}"], "key 'proxy' is given twice"),
        ("plan: key twice", ["plan", str(f / "dup.yaml")], "key 'grpo' is given twice"),
        ("plan: config a folder", ["plan", str(f / "a_folder")], "is a folder, not a YAML file"),
        ("prompt source a folder", [*t, *TINY_TRAIN, f"data.train={f / 'a_folder'}"],
         "is a folder, not a prompt file (.txt, .jsonl or .csv)"),
        ("--output-dir empty", ["train", "--output-dir", ""], "--output-dir: the path is empty"),
        ("output_dir blank", ["train", "output_dir=' '"], "output_dir: must not be empty"),
        ("adapter_path missing", [*t, "policy.adapter_path=/nonexistent/adapter"],
         "policy.adapter_path: no such folder: /nonexistent/adapter"),
        ("policy folder missing", [*t, "policy.name_or_path=./no/such/policy"], "policy.name_or_path: no such folder"),
        ("generate --out empty", [*g, "--out", ""], "--out: the path is empty"),
        ("generate --pipeline missing", [*g, "--pipeline", "/nonexistent"], "--pipeline '/nonexistent': no such folder"),
        ("demo --out empty", ["demo", "--out", ""], "--out: the path is empty"),
        ("demo --out a file", ["demo", "--out", a_file], f"--out {a_file}: exists and is a file"),
        ("train-policy --out a file", ["world", "train-policy", "--out", a_file], f"--out {a_file}: exists and is a "
                                                                                   "file"),
        ("train-backbone --work-dir a file", ["world", "train-backbone", "--work-dir", a_file],
         f"--work-dir {a_file}: exists and is a file"),
        ("train-backbone --init-from missing", ["world", "train-backbone", "--work-dir", str(tmp / "wd"), "--init-from",
                                                "/nonexistent"], "--init-from /nonexistent: no such backbone folder"),
        ("compare --adapter missing", ["eval", "compare", "--adapter", "/nonexistent"],
         "--adapter /nonexistent: no such adapter folder"),
        ("app --runs-root empty", ["app", "--runs-root", ""], "--runs-root: the path is empty"),
        ("app --runs-root a file", ["app", "--runs-root", a_file], f"--runs-root {a_file}: exists and is a file"),
        ("app --device bogus", ["app", "--device", "bogus"], "--device: unknown device 'bogus'"),
        ("lora regex", [*t, "policy.lora_target_modules='['"], "policy.lora_target_modules: not a valid regular "
                                                                "expression (unterminated character set"),
        ("plan: lora regex", ["plan", str(f / "regex.yaml")], "policy.lora_target_modules: not a valid regular"),
        ("column of a .txt", [*t, f"data.train={f / 'empty.txt'}", "data.eval=null", "data.column=caption"],
         "data.column: names a field of .jsonl / .csv / hf: sources"),
    ]


def test_cli_config_and_prompt_file_cases(capsys: pytest.CaptureFixture[str], files: Path, tmp_path: Path) -> None:
    cases = _cases_cli(files) + _cases_config(files, tmp_path) + _cases_prompts(files, tmp_path) + \
        _cases_ranges(tmp_path) + _cases_paths_and_yaml(files, tmp_path)
    assert len(cases) >= 101
    _check_all(cases, lambda argv: _cli(capsys, argv))


def test_overlong_training_prompts_are_skipped_with_a_count(capsys: pytest.CaptureFixture[str], files: Path,
                                                            tmp_path: Path) -> None:
    """Prompts over 200 words, 2000 characters or 512 policy tokens are skipped with one warning and a count; the
    run goes on with the others (and every prompt over the limits is still an error, above)."""
    many_tokens = ",".join(["red"] * 300)  # one word of 1199 characters, 599 tokens of the tiny policy
    source = tmp_path / "mixed.txt"
    source.write_text("\n".join(["a red circle", " ".join(["red"] * 3000), many_tokens, "x" * 2500, "a blue square"]))
    code = main(["train", f"output_dir={tmp_path / 'run'}", *TINY_TRAIN, "steps=1", f"data.train={source}", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("promptloop.train: warning: data.train")]
    assert len(warnings) == 1, err
    assert f"data.train {str(source)!r}: skipped 3 of 5 prompts over the length limits (prompt 2: the prompt has " \
           "3000 words, the limit is 200; prompt 3: the prompt has " in warnings[0]
    assert "tokens, the limit is 512; prompt 4: the prompt has 2500 characters, the limit is 2000)" in warnings[0]
    assert json.loads(out.strip().splitlines()[-1])["skipped_prompts"] == {"train": 3}
    from promptloop.train.data import load_prompts

    loaded = load_prompts(str(source))
    assert list(loaded) == ["a red circle", many_tokens, "a blue square"] and loaded.positions == [1, 3, 5]
    assert load_prompts(str(source), limit=2) == ["a red circle", many_tokens]


def test_filesystem_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(code: int) -> Callable[..., Any]:
        def mkstemp(*a: Any, **k: Any) -> Any:
            raise OSError(code, "refused", str(k.get("dir", "")))
        return mkstemp

    cases = [(errno.EROFS, "read-only file system (choose a writable output folder)"),
             (errno.EACCES, "permission denied"), (errno.ENOSPC, "no space left on device")]
    for code, message in cases:
        with monkeypatch.context() as m:
            m.setattr(tempfile, "mkstemp", refuse(code))
            got, err = _cli(capsys, ["generate", "a red circle", "--out", str(tmp_path / "ro")])
            _assert_one_line(got, err, f"--out {tmp_path / 'ro'}: cannot write there")
            _assert_one_line(got, err, message)
            got, err = _cli(capsys, ["train", f"output_dir={tmp_path / 'ro2'}"])
            _assert_one_line(got, err, message)

    # an input this user may not read: no hint about output folders (issue 33); as root, chmod would not stop a read
    unreadable = tmp_path / "secret.yaml"
    unreadable.write_text("steps: 3\n")
    real_read = Path.read_bytes

    def refuse_read(self: Path) -> bytes:
        if self == unreadable:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read(self)

    with monkeypatch.context() as m:
        m.setattr(Path, "read_bytes", refuse_read)
        got, err = _cli(capsys, ["train", str(unreadable)])
    _assert_one_line(got, err, f"{unreadable}: permission denied (check its permissions)")
    assert "output folder" not in err

    def disk_full() -> dict[str, Any]:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/image_0.png")

    assert run_command("promptloop", disk_full, _known_errors, False) == 2
    _assert_one_line(2, capsys.readouterr().err, "/data/out/image_0.png: no space left on device (free some space")


# ----------------------------------------------------------------------------------------------------------------------
# model folders, policy outputs, images, rewards: through the CLI's error path
# ----------------------------------------------------------------------------------------------------------------------
def _flip(path: Path, at: int = -1000) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("folders")
    out: dict[str, Path] = {}

    def copy(src: str, name: str) -> Path:
        out[name] = shutil.copytree(ASSETS / src, d / name)
        return out[name]

    shutil.rmtree(copy("backbone", "no_binder") / "text_binder")
    b = copy("backbone", "binder_false")
    index = json.loads((b / "model_index.json").read_text())
    (b / "model_index.json").write_text(json.dumps({**index, "promptloop_text_binder": False}))
    (b / "promptloop_manifest.json").unlink()
    _flip(copy("backbone", "flipped") / "unet" / "diffusion_pytorch_model.safetensors")
    (copy("backbone", "lost_file") / "vae" / "config.json").unlink()
    (copy("backbone", "bad_manifest") / "promptloop_manifest.json").write_text("{nope")
    _truncate(copy("policy", "pol_trunc") / "model.safetensors")
    p = copy("policy", "pol_trunc_nomanifest")
    _truncate(p / "model.safetensors")
    (p / "promptloop_manifest.json").unlink()
    _truncate(copy("policy_grpo", "ada_trunc") / "adapter_model.safetensors")
    for name, value in (("evil", "promptloop.cli:main"), ("evil_os", "os:system")):
        p = copy("policy", name)
        cfg = json.loads((p / "promptloop_policy.json").read_text())
        (p / "promptloop_policy.json").write_text(json.dumps({**cfg, "validator": value}))
        (p / "promptloop_manifest.json").unlink()  # the attack does not need to keep the manifest
    p = copy("policy", "json_broken")
    (p / "promptloop_policy.json").write_text("{")
    (p / "promptloop_manifest.json").unlink()
    p = copy("policy", "bad_header")
    (p / "model.safetensors").write_bytes(struct.pack("<Q", 10**9) + b"{}")
    (p / "promptloop_manifest.json").unlink()
    _issue33_folders(copy)
    return out


def _edit_json(folder: Path, file: str, change: Callable[[dict[str, Any]], Any], manifest: bool = True) -> None:
    """Change one JSON file of a model folder (its manifest rewritten when `manifest`, so that only the change is
    wrong)."""
    from promptloop.integrity import write_manifest

    data = json.loads((folder / file).read_text())
    change(data)
    (folder / file).write_text(json.dumps(data))
    if manifest:
        write_manifest(folder)


def _issue33_folders(copy: Callable[[str, str], Path]) -> None:
    """Folders with one defect each for issue 33: integrity without a manifest, manifest entries leading out,
    wrong types in the folders' own JSON files, adapters whose base is not where they record it, nan weights."""
    from safetensors.torch import load_file, save_file

    from promptloop.integrity import MANIFEST_FILE, write_manifest

    p = copy("policy", "flipped_no_manifest")  # the issue's case: delete the manifest, then flip a weight byte
    (p / MANIFEST_FILE).unlink()
    _flip(p / "model.safetensors")
    p = copy("policy", "hub_style")  # not written by promptloop: loads, with a warning
    (p / "promptloop_policy.json").unlink()
    (p / MANIFEST_FILE).unlink()
    for name, entry in (("escape", "../../../../etc/hostname"), ("absolute", "/etc/hostname")):
        p = copy("policy", name)
        _edit_json(p, MANIFEST_FILE, lambda m, e=entry: m["files"].__setitem__(e, {"size": 1}), manifest=False)
    p = copy("policy", "link_out")
    (p / "notes.txt").symlink_to("/etc/hostname")
    write_manifest(p)
    p = copy("policy", "no_size")
    _edit_json(p, MANIFEST_FILE, lambda m: m["files"]["config.json"].pop("size"), manifest=False)
    edits: dict[str, tuple[str, str, Callable[[dict[str, Any]], Any]]] = {
        "cfg_type": ("policy", "config.json", lambda c: c["text_config"].__setitem__("hidden_size", "big")),
        "cfg_negative": ("policy", "config.json", lambda c: c["text_config"].__setitem__("vocab_size", -1)),
        "tok_fields": ("policy", "tokenizer.json", lambda c: c.pop("added_tokens")),
        "gen_eos": ("policy", "generation_config.json", lambda c: c.__setitem__("eos_token_id", "x")),
        "pol_temperature": ("policy", "promptloop_policy.json", lambda c: c.__setitem__("temperature", "hot")),
        "pol_top_p": ("policy", "promptloop_policy.json", lambda c: c.__setitem__("top_p", 5)),
        "pol_instruction": ("policy", "promptloop_policy.json", lambda c: c.__setitem__("instruction", 3)),
        "pol_template": ("policy", "promptloop_policy.json", lambda c: c["instruction"].__setitem__("template", 3)),
        "ada_relative": ("policy_grpo", "promptloop_policy.json",
                         lambda c: c.update(base_model="../nowhere", base_model_kind="relative")),
        "ada_kind": ("policy_grpo", "promptloop_policy.json", lambda c: c.update(base_model_kind="bogus")),
        "ada_name": ("policy_grpo", "promptloop_policy.json", lambda c: c.update(base_model="shapes")),
        "ada_legacy": ("policy_grpo", "promptloop_policy.json",
                       lambda c: (c.update(base_model="assets/world/nowhere"), c.pop("base_model_kind"))),
        "bb_shift": ("backbone", "scheduler/scheduler_config.json", lambda c: c.__setitem__("timestep_shift", "x")),
        "bb_steps": ("backbone", "scheduler/scheduler_config.json",
                     lambda c: c.__setitem__("num_train_timesteps", "many")),
        "bb_sample": ("backbone", "unet/config.json", lambda c: c.__setitem__("sample_size", "big")),
        "bb_channels": ("backbone", "vae/config.json", lambda c: c.__setitem__("block_out_channels", [32, -64, 64])),
        "bb_binder": ("backbone", "model_index.json", lambda c: c.__setitem__("promptloop_text_binder", "yes")),
    }
    for name, (src, file, change) in edits.items():
        _edit_json(copy(src, name), file, change)
    (copy("backbone", "bb_no_manifest") / MANIFEST_FILE).unlink()
    p = copy("policy_grpo", "ada_nan")  # what a diverged run saved before issue 33
    weights = load_file(str(p / "adapter_model.safetensors"))
    save_file({k: v * float("nan") for k, v in weights.items()}, str(p / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    write_manifest(p)


def _api_error(capsys: pytest.CaptureFixture[str], call: Callable[[], Any]) -> tuple[int, str]:
    code = run_command("promptloop", lambda: (call(), None)[1], _known_errors, False)
    return code, capsys.readouterr().err


def test_model_folder_cases(capsys: pytest.CaptureFixture[str], folders: dict[str, Path]) -> None:
    from promptloop.policy.vlm import VLMPolicy
    from promptloop.world.backbone import load_backbone

    cases: list[tuple[str, Callable[[], Any], str]] = [
        ("backbone without text binder", lambda: load_backbone(folders["no_binder"]),
         "lacks 'text_binder/', which its model_index.json requires"),
        ("binder present, index says none", lambda: load_backbone(folders["binder_false"]),
         "holds 'text_binder/' but its model_index.json records promptloop_text_binder: false"),
        ("backbone flipped byte", lambda: load_backbone(folders["flipped"]),
         "unet/diffusion_pytorch_model.safetensors does not match its recorded sha256"),
        ("backbone file missing", lambda: load_backbone(folders["lost_file"]), "file vae/config.json is missing"),
        ("backbone manifest broken", lambda: load_backbone(folders["bad_manifest"]),
         "promptloop_manifest.json is not a valid manifest"),
        ("policy truncated", lambda: VLMPolicy.from_pretrained(folders["pol_trunc"]),
         "model.safetensors has 2173692 bytes, expected 4347384"),
        ("policy truncated, no manifest", lambda: VLMPolicy.from_pretrained(folders["pol_trunc_nomanifest"]),
         "safetensors file has 2173692 bytes, its header describes 4347384 (truncated)"),
        ("adapter truncated", lambda: VLMPolicy.from_pretrained(folders["ada_trunc"]),
         "adapter_model.safetensors has 174344 bytes, expected 348688"),
        ("policy names promptloop.cli:main", lambda: VLMPolicy.from_pretrained(folders["evil"]),
         "validator 'promptloop.cli:main' is not a registered policy callable"),
        ("policy names os:system", lambda: VLMPolicy.from_pretrained(folders["evil_os"]),
         "validator 'os:system' is not a registered policy callable"),
        ("policy json broken", lambda: VLMPolicy.from_pretrained(folders["json_broken"]),
         "promptloop_policy.json: not valid JSON"),
        ("safetensors header", lambda: VLMPolicy.from_pretrained(folders["bad_header"]),
         "not a valid safetensors file"),
    ]
    _check_all(cases, lambda call: _api_error(capsys, call))


def test_issue33_model_folder_cases(capsys: pytest.CaptureFixture[str], folders: dict[str, Path],
                                   tmp_path: Path) -> None:
    """Integrity without a manifest, manifest entries leading out, the folders' own JSON files, adapter bases,
    nan weights, a checkpoint's file list: one line each, naming the file and the field."""
    from promptloop.policy.vlm import VLMPolicy
    from promptloop.train.checkpoint import read_state
    from promptloop.world.backbone import load_backbone

    def pol(name: str) -> Callable[[], Any]:
        return lambda: VLMPolicy.from_pretrained(folders[name])

    def bb(name: str) -> Callable[[], Any]:
        return lambda: load_backbone(folders[name])

    cp = tmp_path / "checkpoints" / "step-00000001"
    cp.mkdir(parents=True)
    (cp / "trainer_state.json").write_text(json.dumps({"format": 1, "files": {"../../../../etc/hostname": {"size": 1}}}))
    f = folders
    cases: list[tuple[str, Callable[[], Any], str]] = [
        ("manifest deleted, byte flipped", pol("flipped_no_manifest"),
         f"policy folder {f['flipped_no_manifest']}: promptloop_manifest.json is missing, so its files cannot be "
         "verified"),
        ("backbone manifest deleted", bb("bb_no_manifest"), "promptloop_manifest.json is missing"),
        ("manifest entry ../", pol("escape"), "manifest entry '../../../../etc/hostname' is not a relative path inside "
                                              "the folder"),
        ("manifest entry absolute", pol("absolute"), "manifest entry '/etc/hostname' is not a relative path inside"),
        ("manifest entry a link out", pol("link_out"), "manifest entry 'notes.txt' leads outside the folder"),
        ("manifest entry without size", pol("no_size"), "manifest entry 'config.json': field 'size': expected a byte "
                                                         "count, got None"),
        ("checkpoint file list ../", lambda: read_state(cp), "manifest entry '../../../../etc/hostname' is not a "
                                                              "relative path inside the folder"),
        ("config.json wrong type", pol("cfg_type"), f"{f['cfg_type'] / 'config.json'}: field 'hidden_size': "),
        ("config.json negative size", pol("cfg_negative"), f"{f['cfg_negative'] / 'config.json'}: field "
                                                             "'text_config.vocab_size': expected a size >= 0, got -1"),
        ("tokenizer.json field", pol("tok_fields"), f"{f['tok_fields'] / 'tokenizer.json'}: field 'added_tokens' is "
                                                     "missing"),
        ("generation_config eos", pol("gen_eos"), f"{f['gen_eos'] / 'generation_config.json'}: field 'eos_token_id': "
                                                   "expected a token id"),
        ("policy temperature type", pol("pol_temperature"), "promptloop_policy.json: field 'temperature': expected a "
                                                             "number, got 'hot'"),
        ("policy top_p range", pol("pol_top_p"), "promptloop_policy.json: field 'top_p': expected a number in (0, 1], "
                                                  "got 5"),
        ("policy instruction type", pol("pol_instruction"), "promptloop_policy.json: field 'instruction': expected an "
                                                             "object, got 3"),
        ("policy instruction field", pol("pol_template"), "promptloop_policy.json: field 'instruction.template': "
                                                           "expected a string, got 3"),
        ("adapter base relative, missing", pol("ada_relative"), "base_model '../nowhere' (relative to the adapter "
                                                                 "folder) is"),
        ("adapter base kind", pol("ada_kind"), "base_model_kind: expected one of registered, relative, hub, got "
                                                "'bogus'"),
        ("adapter base name", pol("ada_name"), "base_model 'shapes' is not a registered base model (registered: "
                                                "world, world:v3)"),
        ("adapter old base missing", pol("ada_legacy"), "base_model 'assets/world/nowhere' is not found next to"),
        ("adapter nan weights", pol("ada_nan"), f"adapter folder {f['ada_nan']}: weight "),
        ("scheduler shift type", bb("bb_shift"), "scheduler_config.json: field 'timestep_shift': expected a number, "
                                                  "got 'x'"),
        ("scheduler steps type", bb("bb_steps"), "scheduler_config.json: field 'num_train_timesteps': expected an "
                                                  "integer, got 'many'"),
        ("unet config type", bb("bb_sample"), "unet/config.json: field 'sample_size': expected an integer or a list or "
                                               "null, got 'big'"),
        ("vae negative channels", bb("bb_channels"), "vae/config.json: field 'block_out_channels': expected a size >= "
                                                      "0"),
        ("model_index binder type", bb("bb_binder"), "model_index.json: field 'promptloop_text_binder': expected true, "
                                                      "false or null, got 'yes'"),
    ]
    _check_all(cases, lambda call: _api_error(capsys, call))


def test_a_folder_promptloop_did_not_write_loads_with_one_warning(capsys: pytest.CaptureFixture[str],
                                                                  folders: dict[str, Path]) -> None:
    from promptloop.policy.vlm import VLMPolicy

    code = run_command("promptloop", lambda: (VLMPolicy.from_pretrained(folders["hub_style"]), None)[1],
                       _known_errors, False)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if "warning:" in ln]
    assert code == 0
    assert warnings == [f"promptloop: warning: policy folder {folders['hub_style']} has no promptloop_manifest.json: "
                        "its files cannot be verified"]


def test_generate_refuses_bad_folders_end_to_end(capsys: pytest.CaptureFixture[str], folders: dict[str, Path],
                                                 tmp_path: Path) -> None:
    g = ["generate", "a red circle", "--steps", "4", "--refine", "1", "--out", str(tmp_path / "g")]
    code, err = _cli(capsys, [*g, "--pipeline", f"world:{folders['no_binder']}"])
    _assert_one_line(code, err, "lacks 'text_binder/'")
    code, err = _cli(capsys, [*g, "--policy", str(folders["ada_trunc"])])
    _assert_one_line(code, err, "adapter_model.safetensors has 174344 bytes")


def test_shipped_folders_carry_valid_manifests(capsys: pytest.CaptureFixture[str]) -> None:
    from promptloop.integrity import MANIFEST_FILE

    for name in ("backbone", "policy", "policy_feedforward", "policy_grpo"):
        assert (ASSETS / name / MANIFEST_FILE).is_file(), name
    assert main(["world", "write-manifests", "--check", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out).values()) == {"ok"}


def test_images_rewards_and_policy_output_cases(capsys: pytest.CaptureFixture[str]) -> None:
    from promptloop.loop.sampler import PromptLoopSampler
    from promptloop.policy.base import PolicyInput, PolicyOutput
    from promptloop.rewards import CombinedReward, get_reward
    from promptloop.testing.pipelines import tiny_sd_pipeline

    q = ["a red circle", "a blue square"]
    ok = np.zeros((2, 32, 32, 3), dtype=np.float32)

    class ShortPolicy:  # returns one prompt for a batch of two
        def propose(self, inp: PolicyInput) -> PolicyOutput:
            return PolicyOutput(prompts=[inp.current_prompts[0]])

    pipe = tiny_sd_pipeline()
    cases: list[tuple[str, Callable[[], Any], str]] = [
        ("image 4x4", lambda: CombinedReward({"proxy": 1.0})(np.zeros((2, 4, 4, 3), np.float32), q),
         "reward images: image height 4 px is outside 8..4096 px"),
        ("tensor 5000 wide", lambda: CombinedReward({"proxy": 1.0})(torch.zeros(2, 3, 8, 5000), q),
         "image width 5000 px is outside 8..4096 px"),
        ("count mismatch", lambda: CombinedReward({"proxy": 1.0})(ok, q[:1]), "2 images for 1 queries"),
        ("not a batch", lambda: CombinedReward({"proxy": 1.0})(np.zeros((32, 32, 3), np.float32), q),
         "expected a batch (N, 3, H, W) or (N, H, W, 3)"),
        ("unknown reward", lambda: get_reward("beauty"), "unknown reward 'beauty'"),
        ("unknown reward option", lambda: CombinedReward({"alignment": 1.0}, reward_kwargs={"alignment": {"bogus": 1}}),
         "reward_kwargs.alignment: unknown option(s) 'bogus'"),
        ("sampler guidance nan", lambda: PromptLoopSampler(pipe, None, mode="none")(q, num_inference_steps=2,
                                                                                   guidance_scale=float("nan")),
         "guidance_scale: expected a finite number >= 0, got nan"),
        ("policy output count", lambda: PromptLoopSampler(pipe, ShortPolicy(), mode="feedback", num_refinements=1)(
            q, num_inference_steps=3), "policy returned 1 prompts for a batch of 2"),
    ]
    _check_all(cases, lambda call: _api_error(capsys, call))


def test_config_errors_come_before_heavy_imports() -> None:
    """`promptloop train` reports a config error without importing torch, diffusers or transformers."""
    import subprocess
    import sys

    code = ("import sys; from promptloop.cli import main; rc = main(['train', 'grpo.learning_rate=.inf']); "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; print(rc, heavy)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "2 []", p.stdout
    assert p.stderr.strip() == ("promptloop: error: defaults + overrides: grpo.learning_rate: expected a finite "
                                "number, got inf")


# ----------------------------------------------------------------------------------------------------------------------
# ranges (issue 33): one table, every number covered, the docs page current
# ----------------------------------------------------------------------------------------------------------------------
def test_every_number_a_user_gives_has_a_range_and_the_docs_page_is_current() -> None:
    import argparse
    import dataclasses
    import typing

    from promptloop.cli import CHECKED_ELSEWHERE, build_parser, limit_uses
    from promptloop.train.config import TrainConfig
    from promptloop.validation import CONFIG_LIMITS, LIMITS, limits_markdown

    numeric = []

    def fields(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                fields(tp, f"{prefix}{f.name}.")
            elif {int, float} & set(typing.get_args(tp) or (tp,)) and tp is not bool:
                numeric.append(f"{prefix}{f.name}")

    fields(TrainConfig, "")
    assert len(numeric) >= 35 and sorted(set(numeric) - {k.removesuffix(".*") for k in CONFIG_LIMITS}) == []
    assert all(kind in LIMITS for kind in [*CONFIG_LIMITS.values(), *CHECKED_ELSEWHERE])
    unchecked = []

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}")
            elif getattr(action.type, "__name__", "") in ("positive_int", "non_negative_int", "positive_float",
                                                          "non_negative_float", "unit_float", "integer", "number"):
                if getattr(action.type, "limit", None) is None:
                    unchecked.append(f"{prefix} {action.option_strings[0]}")

    walk(build_parser(), "promptloop")
    assert unchecked == ["promptloop generate --steps"]  # checked by GenerateRequest's validate (CHECKED_ELSEWHERE)
    page = Path(__file__).resolve().parents[1] / "docs" / "limits.md"
    assert page.read_text() == limits_markdown(limit_uses()), "regenerate docs/limits.md (see its first lines)"


def test_a_full_disk_while_writing_images_leaves_no_partial_files(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                 size_limit: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real write failure (a file-size limit, see conftest.size_limit) inside PIL's PNG writer: one line naming
    the image, and none of the call's files stays behind."""
    out = tmp_path / "gen"
    g = ["generate", "a red circle", "--pipeline", "tiny:sd", "--policy", "tiny:llava", "--steps", "4", "--refine", "1",
         "--out", str(out)]
    assert _cli(capsys, g)[0] == 0
    written = sorted(p.name for p in out.iterdir())
    assert {"image_0.png", "preview_0_0.png", "trajectory.png", "record.json"} <= set(written)
    for p in out.iterdir():
        p.unlink()
    import promptloop.generate

    write_outputs = promptloop.generate._write_outputs

    def on_a_full_disk(*a: Any) -> None:
        size_limit(200)  # every PNG is larger (armed once sampling is done: the limit caps pytest's own files too)
        write_outputs(*a)

    monkeypatch.setattr(promptloop.generate, "_write_outputs", on_a_full_disk)
    code, err = _cli(capsys, g)
    size_limit(None)
    errors = [ln for ln in err.splitlines() if "error:" in ln]  # the tiny models' own warnings aside
    assert code == 2 and "Traceback" not in err and len(errors) == 1, err
    assert errors[0] == (f"promptloop: error: {out / 'image_0.png'}: file too large (the file-size limit) (free some "
                         "space or choose another output folder)")
    assert list(out.iterdir()) == []


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path: Path) -> None:
    """Issue 33: files saved by editors that write a UTF-8 BOM read like any other (the BOM was taken silently into
    the first prompt of a .txt, and hid the header of a .csv)."""
    from promptloop.train.data import load_prompts

    for name, text in (("p.txt", "a red circle\n"), ("p.csv", "prompt\na red circle\n"),
                       ("p.jsonl", '{"prompt": "a red circle"}\n')):
        (tmp_path / name).write_text("\ufeff" + text, encoding="utf-8")
        assert load_prompts(str(tmp_path / name)) == ["a red circle"], name
