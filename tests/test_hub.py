"""Trained policies on the Hub, offline: the Hub is a local folder laid out like huggingface_hub's cache of a repo
(`promptloop.testing.hub.local_hub`), so pushing and loading by Hub id run huggingface_hub's own download code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from promptloop.cli import main
from promptloop.hub import HubError, push_folder, resolve_policy
from promptloop.integrity import MANIFEST_FILE, IntegrityError, write_manifest
from promptloop.policy.base import PolicyInput
from promptloop.policy.vlm import VLMPolicy
from promptloop.testing.hub import local_hub, snapshot
from promptloop.testing.policies import tiny_llava_policy
from promptloop.train.config_load import load_config
from promptloop.train.trainer import train


def _inputs() -> PolicyInput:
    previews = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    return PolicyInput(previews=previews, queries=["a red circle", "a blue square"],
                       current_prompts=["a red circle", "a blue square"], progress=0.5)


def _same_proposals(a: VLMPolicy, b: VLMPolicy) -> bool:
    x, y = a.propose(_inputs(), seed=5), b.propose(_inputs(), seed=5)
    return x.prompts == y.prompts and all(torch.equal(p, q) for p, q in zip(x.completion_ids, y.completion_ids, strict=True))


def test_model_card_is_not_locked_by_the_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    tiny_llava_policy(seed=0).save_pretrained(folder)
    card = (folder / "README.md").read_text()
    assert "PromptLoop" in card and "How to load" in card and "Model Card for Model ID" not in card
    assert "README.md" not in json.loads((folder / MANIFEST_FILE).read_text())["files"]
    (folder / "README.md").write_text(card + "\nEdited on the Hub.\n")
    VLMPolicy.from_pretrained(folder)  # an edited card loads
    manifest = json.loads((folder / MANIFEST_FILE).read_text())  # a manifest of before the change lists the card
    manifest["files"]["README.md"] = {"size": 1, "sha256": "0" * 64}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    VLMPolicy.from_pretrained(folder)
    write_manifest(folder)
    (folder / "promptloop_policy.json").write_text((folder / "promptloop_policy.json").read_text() + " ")
    with pytest.raises(IntegrityError, match="promptloop_policy.json"):  # everything else stays locked
        VLMPolicy.from_pretrained(folder)


def test_full_policy_pushed_and_loaded_by_hub_id(tmp_path: Path) -> None:
    policy = tiny_llava_policy(seed=0, temperature=0.7, max_prompt_tokens=17)
    with local_hub(tmp_path / "hub") as hub:
        url = policy.push_to_hub("me/tiny-llava")
        assert url.endswith("me/tiny-llava")
        files = {p.name for p in snapshot(hub, "me/tiny-llava").iterdir()}
        assert {"model.safetensors", "promptloop_policy.json", MANIFEST_FILE, "README.md"} <= files
        loaded = VLMPolicy.from_pretrained("me/tiny-llava")
        assert loaded.name_or_path == "me/tiny-llava" and loaded.temperature == 0.7 and loaded.max_prompt_tokens == 17
        assert _same_proposals(loaded, policy)
        assert resolve_policy("me/not-pushed") == "me/not-pushed"  # no such repo: left to transformers
        (snapshot(hub, "me/tiny-llava") / "README.md").write_text("edited")
        VLMPolicy.from_pretrained("me/tiny-llava")
        weights = snapshot(hub, "me/tiny-llava") / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
        with pytest.raises(IntegrityError, match="model.safetensors"):  # the manifest is checked on a Hub id too
            VLMPolicy.from_pretrained("me/tiny-llava")


def test_trained_adapter_on_the_hub_with_its_model_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run with hub.push_to_hub: the base from the Hub, the adapter pushed with a model card (base, pipeline,
    reward, config, metrics with the base row, a trajectory strip, how to load), loaded back by its Hub id."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\na yellow star\n")
    with local_hub(tmp_path / "hub") as hub:
        tiny_llava_policy(seed=0).push_to_hub("me/tiny-base")
        out = tmp_path / "run"
        cfg = load_config(None, [
            f"output_dir={out}", "policy.name_or_path=me/tiny-base", "pipeline.name_or_path=tiny:sd",
            "pipeline.num_inference_steps=4", "loop.num_refinements=2", f"data.train={prompts}", f"data.eval={prompts}",
            "eval.every=1", "eval.num_queries=2", "eval.trajectories=2", "grpo.queries_per_step=2",
            "grpo.num_generations=2", "steps=1", "rewards={proxy: 1.0}", "logging.progress_bar=false",
            "logging.plot=false", "push_to_hub=true", "hub_model_id=me/tiny-promptloop"])
        result = train(cfg)
        assert "pushed" in capsys.readouterr().out
        repo = snapshot(hub, "me/tiny-promptloop")
        card = (repo / "README.md").read_text()
        assert card == (out / "policy" / "README.md").read_text()
        for text in ("base_model: me/tiny-base", "a LoRA adapter on the vision-language model `me/tiny-base`",
                     "| pipeline | `tiny:sd`, 4 steps", "| reward | `proxy` x 1 |", "| refinements | 2 per image",
                     "| reward | plain pipeline | with this policy | margin |", "![previews and the prompts chosen from "
                     "them](trajectory.png)", 'VLMPolicy.from_pretrained("me/tiny-promptloop"', "## Training config",
                     "num_generations: 2  #"):
            assert text in card, text
        base_row = next(line for line in card.splitlines() if line.startswith("| proxy |"))
        assert f"{result.eval_metrics['eval/base/proxy/mean']:.4g}" in base_row
        assert (repo / "trajectory.png").is_file() and (repo / "adapter_model.safetensors").is_file()
        loaded = VLMPolicy.from_pretrained("me/tiny-promptloop")
        assert loaded.has_lora and loaded.name_or_path == "me/tiny-base"
        assert _same_proposals(loaded, VLMPolicy.from_pretrained(out / "policy"))
        # the command line pushes a saved folder as a new commit of the same repo
        first = snapshot(hub, "me/tiny-promptloop")
        (out / "policy" / "README.md").write_text(card + "\nRevised.\n")
        assert main(["push", str(out / "policy"), "me/tiny-promptloop", "--json"]) == 0
        assert snapshot(hub, "me/tiny-promptloop") != first
        assert (snapshot(hub, "me/tiny-promptloop") / "README.md").read_text().endswith("Revised.\n")


def test_push_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HubError, match="is not a folder"):
        push_folder(tmp_path / "missing", "me/x")
    with local_hub(tmp_path / "hub"):
        assert main(["push", str(tmp_path), "me/x"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a saved policy folder (no promptloop_policy.json)" in err
    # without the local Hub (offline): the upload fails, in one line naming the repo and what to do
    folder = tmp_path / "p"
    tiny_llava_policy(seed=0).save_pretrained(folder)
    capsys.readouterr()
    assert main(["push", str(folder), "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "to the Hub repo me/x failed" in err and "promptloop push" in err
