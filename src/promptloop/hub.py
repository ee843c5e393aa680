"""Trained policies on the Hugging Face Hub: model cards, pushing, and Hub ids through the project's own loader.

- `model_card(...)` writes the README.md of a policy folder: what it is (a PromptLoop refinement policy), its base
  VLM, how it was trained (pipeline, reward, the GRPO settings, the whole config), its metrics (the held-out rows,
  the plain pipeline's beside them), a trajectory strip and how to load it. `VLMPolicy.save_pretrained` writes a
  short one (so no folder carries PEFT's empty template); the trainer writes the full one for OUTPUT_DIR/policy.
- `push_folder(folder, repo_id)` creates the repo (when missing) and uploads a saved policy folder in one commit
  (`VLMPolicy.push_to_hub`, `hub.push_to_hub` of the training config and `promptloop push` call it).
- `resolve_policy(name, revision)`: a Hub id of a PromptLoop policy repo (one with `promptloop_policy.json` or
  `adapter_config.json`) becomes its local snapshot (downloaded into huggingface_hub's cache, or read from it
  offline), so that `VLMPolicy.from_pretrained` / `load_adapter` read its policy JSON, find an adapter's base and
  check its integrity manifest exactly as for a local folder. Any other Hub id (a plain VLM) is returned as it is,
  for transformers to load.

The model card is not part of the integrity manifest (`promptloop.integrity.UNLOCKED`): it may be edited on the Hub.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"
TRAJECTORY_FILE = "trajectory.png"
POLICY_FILES = ("promptloop_policy.json", "adapter_config.json")  # either marks a repo saved by VLMPolicy / PEFT
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PAPER = "https://arxiv.org/abs/2510.00430"


class HubError(RuntimeError):
    """A Hub operation that failed (the message says what to do)."""


def looks_like_repo_id(name: str | Path) -> bool:
    """Whether `name` reads as a Hub repo id ("owner/name") and is not a local path."""
    text = str(name)
    return bool(_REPO_ID.match(text)) and ".." not in text and not Path(text).expanduser().exists()


def resolve_policy(name: str | Path, revision: str | None = None) -> str | Path:
    """The local snapshot of a PromptLoop policy repo on the Hub, or `name` unchanged (a local path, or a Hub id
    that holds no PromptLoop / PEFT policy files, which transformers loads itself)."""
    if isinstance(name, Path) or not looks_like_repo_id(name):
        return name
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for filename in POLICY_FILES:
        try:
            hf_hub_download(name, filename, revision=revision)
        except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError, HFValidationError):
            continue  # not there (or not reachable and not cached): transformers reports what it finds
        return Path(snapshot_download(name, revision=revision))
    return name


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, commit_message: str | None = None,
                token: str | None = None) -> str:
    """Create the model repo `repo_id` (when missing) and upload every file of `folder` in one commit; returns the
    repo's URL. Errors (no token, no network, no rights) become a one-line `HubError`."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"push to {repo_id}: {folder} is not a folder")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        full_id = getattr(url, "repo_id", None) or repo_id  # "name" alone: the Hub puts it in your namespace
        api.upload_folder(repo_id=full_id, folder_path=str(folder), repo_type="model",
                          commit_message=commit_message or "Upload PromptLoop policy")
    except Exception as e:  # network, authentication, rights: one line naming the repo
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HubError(f"push of {folder} to the Hub repo {repo_id} failed: {type(e).__name__}: {text} (log in with "
                       "`hf auth login` or set HF_TOKEN; push again later with `promptloop push FOLDER REPO_ID`)") from e
    return str(url)


# ----------------------------------------------------------------------------------------------------------------------
# model card
# ----------------------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _metrics_table(eval_metrics: Mapping[str, Any]) -> list[str]:
    """The held-out rows as a table: reward | plain pipeline | with the policy | margin."""
    keys = sorted({k[len("eval/"):-len("/mean")] for k in eval_metrics
                   if k.startswith("eval/") and k.endswith("/mean") and not k.startswith("eval/base/")})
    if not keys:
        return []
    lines = ["| reward | plain pipeline | with this policy | margin |", "|---|---|---|---|"]
    for key in keys:
        base = eval_metrics.get(f"eval/base/{key}/mean")
        mean = eval_metrics[f"eval/{key}/mean"]
        margin = eval_metrics.get(f"eval/{key}/minus_base")
        lines.append(f"| {key} | {'-' if base is None else _fmt(base)} | {_fmt(mean)} | "
                     f"{'-' if margin is None else f'{margin:+.4g}'} |")
    return lines


def model_card(
    *,
    base_model: str | None,
    adapter: bool,
    repo_id: str | None = None,
    config: Mapping[str, Any] | None = None,
    config_yaml: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    eval_metrics: Mapping[str, Any] | None = None,
    trajectory: bool = False,
) -> str:
    """The README.md of a policy folder (see the module docstring). `config`: the training config as a dict
    (`TrainConfig.to_dict()`), `config_yaml` its commented YAML; `metrics` / `eval_metrics`: the last training and
    evaluation records; `trajectory`: the folder holds `trajectory.png`."""
    name = repo_id or "PATH_OR_REPO_ID"
    pipeline = (config or {}).get("pipeline", {})
    policy_cfg = (config or {}).get("policy", {})
    loop = (config or {}).get("loop", {})
    grpo = (config or {}).get("grpo", {})
    rewards = (config or {}).get("rewards", {})
    front = ["---", "library_name: peft" if adapter else "library_name: transformers", "pipeline_tag: image-text-to-text",
             "tags:", "- promptloop", "- prompt-refinement", "- text-to-image", "- grpo"]
    if adapter:
        front.append("- lora")
    if base_model and not Path(base_model).is_absolute():
        front.append(f"base_model: {base_model}")
    front.append("---")
    what = "a LoRA adapter on" if adapter else "a fine-tuned"
    lines = [*front, "", f"# {repo_id.split('/')[-1] if repo_id else 'PromptLoop policy'}", "",
             f"A [PromptLoop]({_PAPER}) refinement policy: {what} the vision-language model "
             f"`{base_model or 'named in promptloop_policy.json'}` that rewrites a text-to-image prompt *during* "
             "sampling. At each refinement step it sees the decoded estimate of the final image (the x0 preview), the "
             "user's query and the prompt in force, and writes the prompt for the remaining steps. The diffusion "
             "model and the reward stay frozen; the policy was trained with GRPO on the reward of the final image.",
             ""]
    if config:
        lines += ["| | |", "|---|---|",
                  f"| base VLM | `{base_model or '-'}` |",
                  f"| trained as | {'LoRA (r ' + str(policy_cfg.get('lora_r')) + ')' if adapter else 'all weights'} |",
                  f"| pipeline | `{pipeline.get('name_or_path')}`, {pipeline.get('num_inference_steps')} steps, "
                  f"guidance {pipeline.get('guidance_scale') if pipeline.get('guidance_scale') is not None else 'default'} |",
                  "| reward | " + ", ".join(f"`{k}` x {_fmt(v)}" for k, v in rewards.items()) + " |",
                  f"| refinements | {loop.get('num_refinements')} per image, mode {loop.get('mode')} |",
                  f"| GRPO | {config.get('steps')} step{'' if config.get('steps') == 1 else 's'} of "
                  f"{grpo.get('queries_per_step')} queries x "
                  f"{grpo.get('num_generations')} trajectories, lr {_fmt(grpo.get('learning_rate'))}, beta "
                  f"{_fmt(grpo.get('beta'))}, clip {_fmt(grpo.get('clip_eps'))}, loss {grpo.get('loss_type')} |",
                  ""]
    table = _metrics_table(eval_metrics or {})
    if table:
        step = (eval_metrics or {}).get("step")
        lines += ["## Metrics", "", f"Held-out queries{f' at step {step}' if step is not None else ''} (the same "
                  "queries and seeds for both rows):", "", *table, ""]
    if metrics and "reward/total/mean" in metrics:
        lines += [f"Last training batch: reward {_fmt(metrics['reward/total/mean'])}, KL {_fmt(metrics.get('kl'))}, "
                  f"fallback rate {_fmt(metrics.get('fallback_rate'))}.", ""]
    if trajectory:
        lines += ["## A trajectory", "", f"![previews and the prompts chosen from them]({TRAJECTORY_FILE})", "",
                  "Each row: the x0 previews at the refinement steps with the prompt the policy wrote from each, then "
                  "the final image with its reward.", ""]
    pipe_id = pipeline.get("name_or_path") or "stabilityai/stable-diffusion-xl-base-1.0"
    n_ref = loop.get("num_refinements") or 5
    lines += ["## How to load", "", "```python", "import torch", "from diffusers import DiffusionPipeline",
              "from promptloop.loop import PromptLoopSampler", "from promptloop.policy import VLMPolicy", "",
              f'pipe = DiffusionPipeline.from_pretrained("{pipe_id}", dtype=torch.bfloat16).to("cuda")',
              f'policy = VLMPolicy.from_pretrained("{name}", dtype=torch.bfloat16).to("cuda")',
              f"sampler = PromptLoopSampler(pipe, policy, num_refinements={n_ref})",
              'out = sampler(prompt="a corgi astronaut on the moon")',
              "out.images[0].save(\"corgi.png\")", "```", "",
              f"`VLMPolicy.from_pretrained` reads `promptloop_policy.json` (instruction, sampling settings"
              f"{', the base model of the adapter' if adapter else ''}) and checks `promptloop_manifest.json` "
              "(sizes and sha256 of the weights; this card is not in it). From the command line:", "", "```bash",
              f'promptloop generate "a corgi astronaut on the moon" --pipeline {pipe_id} --policy {name} --refine '
              f"{n_ref} --dtype bfloat16", "```", ""]
    if config_yaml:
        lines += ["## Training config", "", "<details><summary>the whole config (promptloop train)</summary>", "",
                  "```yaml", config_yaml.rstrip(), "```", "", "</details>", ""]
    lines += ["## Citation", "", "PromptLoop: plug-and-play prompt refinement via latent feedback for diffusion model "
              f"alignment (Lee & Ye, {_PAPER}). This policy was trained with the open-source PromptLoop library.", ""]
    return "\n".join(lines)


def write_training_card(folder: str | Path, *, config: Any, metrics: Mapping[str, Any] | None,
                        eval_metrics: Mapping[str, Any] | None, trajectory_png: str | Path | None,
                        repo_id: str | None = None) -> Path:
    """Write the full model card (and `trajectory.png`, copied from the last evaluation's grid) into a saved policy
    folder after training; returns the card's path. `config`: the run's TrainConfig."""
    import shutil

    from promptloop.train.config import dump_yaml

    folder = Path(folder)
    saved = json.loads((folder / "promptloop_policy.json").read_text())
    adapter = (folder / "adapter_config.json").exists() and not (folder / "config.json").exists()
    if trajectory_png is not None and Path(trajectory_png).is_file():
        shutil.copyfile(trajectory_png, folder / TRAJECTORY_FILE)
    import dataclasses

    shown = dataclasses.replace(config, output_dir=Path(config.output_dir).name)  # no local path in a public card
    text = model_card(base_model=saved.get("base_model") or (None if adapter else config.policy.name_or_path),
                      adapter=adapter, repo_id=repo_id, config=shown.to_dict(), config_yaml=dump_yaml(shown),
                      metrics=metrics, eval_metrics=eval_metrics, trajectory=(folder / TRAJECTORY_FILE).is_file())
    path = folder / CARD_FILE
    path.write_text(text)
    return path


__all__ = [
    "CARD_FILE",
    "TRAJECTORY_FILE",
    "HubError",
    "looks_like_repo_id",
    "model_card",
    "push_folder",
    "resolve_policy",
    "write_training_card",
]
