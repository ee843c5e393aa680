"""The checks of a loaded `TrainConfig`: ranges and consistency across fields, each error naming the field."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

from promptloop.models import parse_model_ref
from promptloop.train.config import MAX_MICRO_BATCH, MAX_TRAJECTORIES_PER_STEP, TRACKERS, ConfigError, TrainConfig
from promptloop.validation import CONFIG_LIMITS, InputError, check_limit, check_number


# ----------------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------------
def _is_path(name: str) -> bool:
    """Whether a model name is meant as a local folder: not 'world', 'world:PATH' (checked by the backbone loader),
    'tiny:...' or a Hub id ('org/name': one slash at most)."""
    return parse_model_ref(name).kind == "folder"


def validate(cfg: TrainConfig, source: str = "config") -> None:
    """Range and consistency checks; raises ConfigError('<source>: <field>: <problem>')."""

    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key}: {msg}")

    def finite(obj: Any, prefix: str) -> None:  # every float field: a finite number (nan / inf are typos)
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                finite(v, f"{prefix}{f.name}.")
            elif isinstance(v, float):
                try:
                    check_number(v, f"{prefix}{f.name}")
                except InputError as e:
                    raise ConfigError(f"{source}: {e}") from None

    finite(cfg, "")
    check(cfg.steps >= 1, "steps", f"must be >= 1, got {cfg.steps}")
    check(cfg.seed >= 0, "seed", f"must be >= 0, got {cfg.seed}")
    check(bool(cfg.output_dir.strip()), "output_dir", "must not be empty")
    for key, value in (("output_dir", cfg.output_dir), ("resume", cfg.resume), ("data.train", cfg.data.train),
                       ("data.eval", cfg.data.eval), ("policy.adapter_path", cfg.policy.adapter_path),
                       ("policy.name_or_path", cfg.policy.name_or_path),
                       ("pipeline.name_or_path", cfg.pipeline.name_or_path)):
        check(not (isinstance(value, str) and "\x00" in value), key, "NUL byte in the path")
    for key, value in (("policy.adapter_path", cfg.policy.adapter_path), ("policy.name_or_path", cfg.policy.name_or_path),
                       ("pipeline.name_or_path", cfg.pipeline.name_or_path)):
        check(not (value and _is_path(value) and not Path(value).is_dir()), key,
              f"no such folder: {value} (a local model folder, or a Hub id such as org/name)")
    check(bool(cfg.rewards), "rewards", "name at least one reward, e.g. {alignment: 1.0}")
    for name, w in cfg.rewards.items():
        check(math.isfinite(w), f"rewards.{name}", f"weight must be finite, got {w}")
    for name in cfg.reward_kwargs:
        check(name in cfg.rewards, f"reward_kwargs.{name}", f"options for a reward without a weight; rewards: "
                                                            f"{sorted(cfg.rewards)}")
    p = cfg.pipeline
    check(p.num_inference_steps >= 2, "pipeline.num_inference_steps", f"must be >= 2, got {p.num_inference_steps}")
    check(p.guidance_scale is None or p.guidance_scale >= 0, "pipeline.guidance_scale", "must be >= 0")
    for k in ("height", "width"):
        v = getattr(p, k)
        check(v is None or (v > 0 and v % 8 == 0), f"pipeline.{k}", f"must be a positive multiple of 8, got {v}")
    pol = cfg.policy
    check(pol.lora_r >= 1, "policy.lora_r", f"must be >= 1, got {pol.lora_r}")
    check(pol.lora_alpha >= 1, "policy.lora_alpha", f"must be >= 1, got {pol.lora_alpha}")
    check(pol.temperature > 0, "policy.temperature", f"must be > 0 for GRPO (sampling), got {pol.temperature}")
    check(0 < pol.top_p <= 1, "policy.top_p", f"must be in (0, 1], got {pol.top_p}")
    check(pol.max_new_tokens is None or pol.max_new_tokens >= 1, "policy.max_new_tokens", "must be >= 1")
    check(pol.max_prompt_tokens is None or pol.max_prompt_tokens >= 1, "policy.max_prompt_tokens", "must be >= 1")
    check(not (pol.adapter_path and pol.finetune == "full"), "policy.adapter_path",
          "an adapter to start from needs finetune: lora")
    check(pol.quantization == "none" or pol.finetune == "lora", "policy.quantization",
          "quantizes the frozen base of a LoRA run; full fine-tuning trains every weight (use quantization: none)")
    check(pol.quantization == "none" or parse_model_ref(pol.name_or_path).kind != "tiny", "policy.quantization",
          "needs a policy loaded from a folder or Hub id (tiny:* policies are built in memory)")
    lp = cfg.loop
    check(1 <= lp.num_refinements <= p.num_inference_steps - 1, "loop.num_refinements",
          f"must be in 1..{p.num_inference_steps - 1} (pipeline.num_inference_steps - 1), got {lp.num_refinements}")
    check(lp.mode != "feed-forward" or lp.num_refinements == 1, "loop.num_refinements",
          "feed-forward mode makes exactly one rewrite: set loop.num_refinements: 1")
    check(lp.preview_size is None or lp.preview_size >= 8, "loop.preview_size", "must be >= 8")
    check(not lp.rewrite_first or lp.mode == "feedback", "loop.rewrite_first",
          f"applies to mode: feedback only (mode is {lp.mode!r})")
    if pol.lora_target_modules is not None:
        try:
            re.compile(pol.lora_target_modules)
        except re.error as e:
            check(False, "policy.lora_target_modules", f"not a valid regular expression ({e})")
    d = cfg.data
    check(bool(d.train), "data.train", "must name a prompt source")
    sources = [src for src in (d.train, d.eval) if src is not None]
    check(d.column is None or not all(src.startswith("world:") or src.lower().endswith(".txt") for src in sources),
          "data.column", f"names a field of .jsonl / .csv / hf: sources, and {' / '.join(map(repr, sources))} have none "
                         "(remove data.column)")
    check(d.max_train_prompts is None or d.max_train_prompts >= 1, "data.max_train_prompts", "must be >= 1")
    g = cfg.grpo
    check(g.queries_per_step >= 1, "grpo.queries_per_step", f"must be >= 1, got {g.queries_per_step}")
    check(g.num_generations >= 2, "grpo.num_generations",
          f"must be >= 2 (a group of one has no spread, so zero advantage), got {g.num_generations}")
    check(g.groups_per_rollout_call >= 1, "grpo.groups_per_rollout_call", "must be >= 1")
    check(g.num_iterations >= 1, "grpo.num_iterations", f"must be >= 1, got {g.num_iterations}")
    check(0 < g.clip_eps < 1, "grpo.clip_eps", f"must be in (0, 1), got {g.clip_eps}")
    check(g.clip_eps_high is None or g.clip_eps_high > 0, "grpo.clip_eps_high", "must be > 0")
    check(g.beta >= 0, "grpo.beta", f"must be >= 0, got {g.beta}")
    check(1 <= g.micro_batch_size <= MAX_MICRO_BATCH, "grpo.micro_batch_size",
          f"must be in 1..{MAX_MICRO_BATCH}, got {g.micro_batch_size}")
    n_traj = g.queries_per_step * g.num_generations
    check(n_traj <= MAX_TRAJECTORIES_PER_STEP, "grpo.queries_per_step",
          f"x grpo.num_generations = {n_traj} trajectories per step, the limit is {MAX_TRAJECTORIES_PER_STEP}")
    if p.height and p.width:  # decoded images + previews held per step, float32
        need = n_traj * (lp.num_refinements + 1) * p.height * p.width * 3 * 4
        ram = _physical_memory()
        check(ram is None or need <= ram // 2, "grpo.queries_per_step",
              f"{n_traj} trajectories of {p.height}x{p.width} images with {lp.num_refinements} previews need about "
              f"{need / 2**30:.1f} GiB, more than half of this machine's {(ram or 0) / 2**30:.1f} GiB: lower "
              "grpo.queries_per_step or grpo.num_generations")
    check(g.learning_rate > 0, "grpo.learning_rate", f"must be > 0, got {g.learning_rate}")
    check(g.weight_decay >= 0, "grpo.weight_decay", "must be >= 0")
    check(0 <= g.adam_beta1 < 1 and 0 <= g.adam_beta2 < 1, "grpo.adam_beta1/adam_beta2", "must be in [0, 1)")
    check(g.adam_eps > 0, "grpo.adam_eps", "must be > 0")
    check(g.max_grad_norm is None or g.max_grad_norm > 0, "grpo.max_grad_norm", "must be > 0 or null")
    check(g.warmup_steps >= 0, "grpo.warmup_steps", "must be >= 0")
    names = [cfg.logging.report_to] if isinstance(cfg.logging.report_to, str) else cfg.logging.report_to
    bad = [n for n in names if n not in ("none", *TRACKERS)]
    check(not bad, "logging.report_to", f"expected none, {', '.join(TRACKERS)} or a list of them, got {bad[0]!r}"
          if bad else "")
    check(not ("none" in names and len(names) > 1), "logging.report_to", f"'none' together with trackers: {names}")
    e = cfg.eval
    check(e.every >= 0, "eval.every", "must be >= 0")
    check(e.num_queries >= 1, "eval.num_queries", "must be >= 1")
    check(e.seeds_per_query >= 1, "eval.seeds_per_query", "must be >= 1")
    check(e.num_queries * e.seeds_per_query <= MAX_TRAJECTORIES_PER_STEP, "eval.num_queries",
          f"x eval.seeds_per_query = {e.num_queries * e.seeds_per_query}, the limit is {MAX_TRAJECTORIES_PER_STEP}")
    check(e.every == 0 or d.eval is not None, "eval.every", "evaluation needs data.eval")
    check(e.num_refinements is None or 1 <= e.num_refinements <= p.num_inference_steps - 1, "eval.num_refinements",
          f"must be in 1..{p.num_inference_steps - 1}")
    c = cfg.checkpoint
    check(c.every >= 0, "checkpoint.every", "must be >= 0")
    check(c.keep >= 0, "checkpoint.keep", "must be >= 0")
    check(not (cfg.resume and cfg.overwrite), "overwrite", "cannot be combined with resume")
    h = cfg.hub
    check(h.hub_model_id is None or bool(re.fullmatch(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*", h.hub_model_id)),
          "hub.hub_model_id", f"expected 'owner/name' or 'name' (letters, digits, -, _, .), got {h.hub_model_id!r}")
    check(not h.push_to_hub or cfg.checkpoint.save_final_policy, "hub.push_to_hub",
          "pushes the final policy: needs checkpoint.save_final_policy: true")
    check_ranges(cfg, source)


def check_ranges(cfg: TrainConfig, source: str = "config") -> None:
    """Every numeric field against its range in `validation.LIMITS` (kinds by `validation.CONFIG_LIMITS`): finite
    but absurd values (grpo.learning_rate=100, seed=2**64) are refused before anything loads."""
    values: list[tuple[str, Any, str]] = []
    for dotted, kind in CONFIG_LIMITS.items():
        if dotted == "rewards.*":
            values += [(f"rewards.{name}", w, kind) for name, w in cfg.rewards.items()]
            continue
        obj: Any = cfg
        for part in dotted.split("."):
            obj = getattr(obj, part)
        values.append((dotted, obj, kind))
    for name, value, kind in values:
        if value is None:
            continue
        try:
            check_limit(value, kind, name)
        except InputError as e:
            raise ConfigError(f"{source}: {e}") from None


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


