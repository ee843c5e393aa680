"""Config loading/validation and prompt sources of promptloop.train (fast, no models)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from promptloop.train.config import ConfigError, TrainConfig, dump_yaml, field_help
from promptloop.train.config_load import load_config
from promptloop.train.data import PromptFileError, PromptOrder, load_prompts

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load_and_comment_every_field(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert isinstance(cfg, TrainConfig)
    lines = (CONFIGS / name).read_text().splitlines()
    body = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    assert all("  # " in ln for ln in body), [ln for ln in body if "  # " not in ln]
    assert len(body) == len(field_help()) + len([f for f in dataclasses.fields(TrainConfig)
                                                  if dataclasses.is_dataclass(getattr(cfg, f.name))])


def test_recipes_match_the_paper_setting() -> None:
    sd15, sdxl, world = (load_config(CONFIGS / n) for n in ("sd15_imagereward.yaml", "sdxl_imagereward.yaml",
                                                            "world.yaml"))
    assert sd15.pipeline.name_or_path == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the maintained copy
    assert sdxl.pipeline.name_or_path == "stabilityai/stable-diffusion-xl-base-1.0"
    for c in (sd15, sdxl):
        assert c.policy.name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct" and c.policy.finetune == "lora"
        assert c.rewards == {"imagereward": 1.0} and c.accelerate.mixed_precision == "bf16"
    assert world.rewards == {"alignment": 1.0} and world.data.eval == "world:heldout"
    qlora, full = (load_config(CONFIGS / n) for n in ("sdxl_hpsv3_qlora7b.yaml", "sdxl_hpsv3_full7b_fsdp.yaml"))
    for c in (qlora, full):
        assert c.policy.name_or_path == "Qwen/Qwen2.5-VL-7B-Instruct" and c.rewards == {"hpsv3": 1.0}
        assert c.reward_kwargs == {"hpsv3": {"dtype": "bfloat16"}}
    assert (qlora.policy.finetune, qlora.policy.quantization) == ("lora", "4bit")
    assert (full.policy.finetune, full.policy.quantization, full.pipeline.offload) == ("full", "none", "model")


def test_every_dataclass_field_has_help() -> None:
    assert all(h.strip() for h in field_help().values())


def test_dump_yaml_round_trips() -> None:
    cfg = load_config(None, ["grpo.beta=0.1", "rewards={proxy: 0.5, alignment: 1.0}", "pipeline.height=64"])
    again = yaml.safe_load(dump_yaml(cfg))
    assert again == cfg.to_dict()


def test_overrides_dotted_and_types(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    # YAML 1.1 reads 1e-4 as a string
    f.write_text("steps: 3\nrewards: {alignment: 1.0}\ngrpo:\n  learning_rate: 1e-4\n")
    cfg = load_config(f, ["grpo.beta=0", "rewards.proxy=0.25", "resume=true", "policy.max_new_tokens=null"])
    assert cfg.steps == 3 and cfg.grpo.learning_rate == 1e-4 and cfg.grpo.beta == 0.0
    assert cfg.rewards == {"alignment": 1.0, "proxy": 0.25} and cfg.resume is True
    assert load_config(None, ["resume=runs/x/checkpoints/step-00000001"]).resume == "runs/x/checkpoints/step-00000001"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("grpo:\n  bta: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'bta'"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"override.*unknown key 'nope'"):
        load_config(None, ["pipeline.nope=1"])


@pytest.mark.parametrize("override,match", [
    ("steps=abc", "steps: expected an integer"),
    ("grpo.beta=[1]", "grpo.beta: expected a number"),
    ("loop.mode=sideways", "loop.mode: expected one of"),
    ("logging.progress_bar=3", "expected true or false"),
    ("steps=0", "steps: must be >= 1"),
    ("grpo.num_generations=1", "grpo.num_generations: must be >= 2"),
    ("grpo.clip_eps=1.5", r"grpo.clip_eps: must be in \(0, 1\)"),
    ("grpo.beta=-1", "grpo.beta: must be >= 0"),
    ("loop.num_refinements=30", "loop.num_refinements: must be in 1..19"),
    ("rewards={}", "rewards: name at least one reward"),
    ("stepz", "not of the form key=value"),
])
def test_bad_values_are_clear(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


@pytest.mark.parametrize("text,mode", [("true", "group"), ("false", "none"), ("group", "group"), ("batch", "batch"),
                                       ("none", "none")])
def test_scale_rewards_modes_and_old_booleans(tmp_path: Path, text: str, mode: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f"grpo:\n  scale_rewards: {text}\n")
    assert load_config(f).grpo.scale_rewards == mode
    assert load_config(None, [f"grpo.scale_rewards={text}"]).grpo.scale_rewards == mode
    assert load_config(None).grpo.scale_rewards == "group"


@pytest.mark.parametrize("text", ["rows", "1", "0", "null", "[group]"])
def test_scale_rewards_bad_values_are_one_clear_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(f"grpo:\n  scale_rewards: {text}\n")
    msg = r"grpo\.scale_rewards: expected one of 'group' \| 'batch' \| 'none'.*old forms.*true = 'group', false = 'none'"
    with pytest.raises(ConfigError, match=msg) as e:
        load_config(f)
    assert "c.yaml" in str(e.value) and "\n" not in str(e.value)


def test_old_checkpoint_identity_with_boolean_scale_rewards_still_matches(tmp_path: Path) -> None:
    from promptloop.train.checkpoint import CheckpointError, check_identity

    current = {"grpo": {"scale_rewards": "group", "beta": 0.04}}
    check_identity(tmp_path, {"grpo": {"scale_rewards": True, "beta": 0.04}}, current)
    with pytest.raises(CheckpointError, match="scale_rewards"):
        check_identity(tmp_path, {"grpo": {"scale_rewards": False, "beta": 0.04}}, current)


def test_rewrite_first_needs_feedback_mode() -> None:
    assert load_config(None, ["loop.rewrite_first=true"]).loop.rewrite_first is True
    with pytest.raises(ConfigError, match="loop.rewrite_first: applies to mode: feedback only"):
        load_config(None, ["loop.rewrite_first=true", "loop.mode=no-feedback"])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------------------------------- prompts
def test_prompt_files(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("# comment\na red cat\n\n a blue dog \n")
    (tmp_path / "p.jsonl").write_text('{"caption": "a red cat"}\n"a blue dog"\n\n')
    (tmp_path / "p.csv").write_text('id,prompt\n1,a red cat\n2,"a blue, dog"\n')
    assert load_prompts(str(tmp_path / "p.txt")) == ["a red cat", "a blue dog"]
    assert load_prompts(str(tmp_path / "p.jsonl")) == ["a red cat", "a blue dog"]
    assert load_prompts(str(tmp_path / "p.csv")) == ["a red cat", "a blue, dog"]
    assert load_prompts(str(tmp_path / "p.csv"), limit=1) == ["a red cat"]
    world = load_prompts("world:heldout")
    assert len(world) == 1024 and world[:2] == load_prompts("world:heldout", limit=2)


def test_malformed_prompt_files_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok"}\n{"prompt": oops}\n')
    with pytest.raises(PromptFileError, match=r"bad\.jsonl:2: not valid JSON"):
        load_prompts(str(tmp_path / "bad.jsonl"))
    (tmp_path / "nokey.jsonl").write_text('{"prompt": "ok"}\n{"other": "x"}\n')
    with pytest.raises(PromptFileError, match=r"nokey\.jsonl:2: no field"):
        load_prompts(str(tmp_path / "nokey.jsonl"))
    (tmp_path / "bad.csv").write_text("id,prompt\n1,ok\n2,too,many\n")
    with pytest.raises(PromptFileError, match=r"bad\.csv:3: 3 fields, the header has 2"):
        load_prompts(str(tmp_path / "bad.csv"))
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(PromptFileError, match=r"bad\.txt: not UTF-8"):
        load_prompts(str(tmp_path / "bad.txt"))
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompts(str(tmp_path / "missing.txt"))
    with pytest.raises(PromptFileError, match="unknown prompt set"):
        load_prompts("world:nope")


def test_hf_source_without_datasets_is_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(PromptFileError, match="needs the `datasets` package"):
        load_prompts("hf:yuvalkirstain/pickapic_v2:train:caption")


def test_prompt_order_is_a_function_of_the_position() -> None:
    prompts = [f"p{i}" for i in range(5)]
    a, b = PromptOrder(prompts, seed=3), PromptOrder(prompts, seed=3)
    seq = a.take(0, 12)
    assert seq == [x for s in range(0, 12, 4) for x in b.take(s, 4)][:12]
    assert sorted(seq[:5]) == prompts and sorted(seq[5:10]) == prompts
    assert PromptOrder(prompts, seed=3, shuffle=False).take(3, 4) == ["p3", "p4", "p0", "p1"]


def test_lazy_exports_of_promptloop_train_resolve() -> None:
    """`promptloop.train` lists its names twice (the literal `__all__` linters read, and the lazy map): same set,
    and every name resolves to the object of the module the map names."""
    import importlib

    import promptloop.train as train_pkg

    assert set(train_pkg.__all__) == set(train_pkg._MODULE_OF)
    for name, module in train_pkg._MODULE_OF.items():
        assert getattr(train_pkg, name) is getattr(importlib.import_module(f"promptloop.train.{module}"), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        train_pkg.nope  # noqa: B018


# ----------------------------------------------------------------------------------------------------------------------
# TRL's names
# ----------------------------------------------------------------------------------------------------------------------
def _notes(err: str) -> list[str]:
    return [ln.removeprefix("promptloop.train: note: ") for ln in err.splitlines() if ln.startswith("promptloop.train: note:")]


def test_trl_names_set_their_fields_with_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A flat TRL-style config (the names a `trl.GRPOConfig` user types) loads onto our fields, each name with one
    note naming the field; TRL's values with another spelling here are translated."""
    trl_style = {"epsilon": 0.3, "epsilon_high": 0.28, "max_completion_length": 32, "max_steps": 7,
                 "lr_scheduler_type": "constant_with_warmup", "report_to": ["none"], "learning_rate": 5e-5,
                 "num_generations": 6, "beta": 0.0, "bf16": True, "save_total_limit": None, "adam_epsilon": 1e-6,
                 "temperature": 0.9, "eval_steps": 0, "seed": 3}
    path = tmp_path / "trl.yaml"
    path.write_text(yaml.safe_dump(trl_style))
    cfg = load_config(path)
    g = cfg.grpo
    assert (g.clip_eps, g.clip_eps_high, g.lr_schedule, g.learning_rate, g.num_generations, g.beta, g.adam_eps) == (
        0.3, 0.28, "constant", 5e-5, 6, 0.0, 1e-6)
    assert (cfg.policy.max_new_tokens, cfg.policy.temperature, cfg.steps, cfg.seed) == (32, 0.9, 7, 3)
    assert cfg.logging.trackers() == [] and cfg.accelerate.mixed_precision == "bf16" and cfg.checkpoint.keep == 0
    notes = _notes(capsys.readouterr().err)
    assert "epsilon (TRL's name) sets grpo.clip_eps" in notes
    assert "max_completion_length (TRL's name) sets policy.max_new_tokens" in notes
    assert "max_steps (TRL's name) sets steps" in notes and "report_to (TRL's name) sets logging.report_to" in notes
    assert len(notes) == len(trl_style) - 1  # seed is our name too
    # inside a section, and as overrides (which override the field, also when the file names it our way)
    path.write_text(yaml.safe_dump({"grpo": {"epsilon": 0.1, "clip_eps_high": 0.3}, "policy": {"max_completion_length": 9}}))
    cfg = load_config(path, ["epsilon_high=0.25", "grpo.epsilon=0.15", "lr_scheduler_type=cosine"])
    assert (cfg.grpo.clip_eps, cfg.grpo.clip_eps_high, cfg.grpo.lr_schedule, cfg.policy.max_new_tokens) == (
        0.15, 0.25, "cosine", 9)
    assert "grpo.epsilon (TRL's name) sets grpo.clip_eps" in _notes(capsys.readouterr().err)
    load_config(path, quiet=True)
    assert _notes(capsys.readouterr().err) == []
    # TrainingArguments' usual pair: bf16 true and fp16 false (false sets nothing, also as an override)
    path.write_text(yaml.safe_dump({"bf16": True, "fp16": False}))
    assert load_config(path, ["fp16=false"]).accelerate.mixed_precision == "bf16"
    assert "fp16: false (TRL's name) sets nothing (accelerate.mixed_precision stays as configured)" in _notes(
        capsys.readouterr().err)


def test_trl_names_errors(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump({"epsilon": 0.3, "grpo": {"clip_eps": 0.2}}))
    with pytest.raises(ConfigError, match=r"epsilon \(TRL's name\) and grpo.clip_eps both given, with different values"):
        load_config(path)
    with pytest.raises(ConfigError, match="per_device_train_batch_size.*TRL's name; here: grpo.queries_per_step"):
        load_config(None, ["per_device_train_batch_size=8"])
    with pytest.raises(ConfigError, match="grpo.lr_schedule: expected one of"):
        load_config(None, ["lr_scheduler_type=cosine_with_restarts"])
    with pytest.raises(ConfigError, match="grpo.clip_eps: must be in"):
        load_config(None, ["epsilon=2"])


def test_report_to_takes_a_tracker_or_a_list(tmp_path: Path) -> None:
    assert load_config(None, ["logging.report_to=wandb"]).logging.trackers() == ["wandb"]
    assert load_config(None, ["logging.report_to=[tensorboard, wandb]"]).logging.trackers() == ["tensorboard", "wandb"]
    assert load_config(None, ["report_to=[]"], quiet=True).logging.trackers() == []
    with pytest.raises(ConfigError, match="logging.report_to: expected none, tensorboard, wandb, trackio or a list"):
        load_config(None, ["logging.report_to=all"])
    with pytest.raises(ConfigError, match="'none' together with trackers"):
        load_config(None, ["logging.report_to=[none, wandb]"])
    text = dump_yaml(load_config(None, ["logging.report_to=[tensorboard, wandb]"]))
    assert load_config(None, [f"logging.report_to={yaml.safe_load(text)['logging']['report_to']}"]).logging.trackers() \
        == ["tensorboard", "wandb"]


def test_no_public_class_named_like_trls() -> None:
    """TRL's GRPOConfig / GRPOTrainer are other classes with other signatures: ours are GRPOSettings (the `grpo`
    section) and PromptLoopTrainer, and the old names say so."""
    import promptloop.train as train_pkg

    assert not {"GRPOConfig", "GRPOTrainer"} & set(train_pkg.__all__)
    for old, new in (("GRPOTrainer", "PromptLoopTrainer"), ("GRPOConfig", "GRPOSettings")):
        with pytest.raises(AttributeError, match=f"promptloop.train.{old} is now {new}"):
            getattr(train_pkg, old)
