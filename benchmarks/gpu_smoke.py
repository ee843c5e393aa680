"""Smoke check of the real-model path on a CUDA GPU in bf16; prints one JSON object.

What CI checks on CPU in fp32 (tests/test_loop.py, tests/test_policy.py, tests/test_train_e2e.py), run
once on a GPU with bf16 weights and autocast, offline, with tiny random models of the real classes:

1. `loop`: for tiny SD 1.x / SDXL / SD3 / FLUX pipelines in bf16 on CUDA, PromptLoop latents equal
   plain sampling up to the swap step and differ after it; images are finite.
1b. `generic`: the 12 generic-route tiny pipelines (img2img / ControlNet variants, PixArt-Sigma, Sana,
   Sana-Sprint, Lumina2, CogView4, Chroma, AuraFlow) moved to the device in bf16 (float32 on CPU): null
   policy == plain pipeline, latents equal up to the swap and differ after it, a negative-prompt action
   where the family has CFG; `--only generic` runs just this part (it also runs on CPU).
2. `policy`: tiny Qwen2.5-VL and LLaVA policies in bf16 on CUDA: generation's log-probs vs the one-pass
   `logprobs` (max abs difference; bf16, so reported rather than held to the fp32 1e-5).
3. `grpo`: two GRPO steps, tiny SDXL + tiny Qwen2.5-VL with LoRA + tiny CLIP-score reward, bf16 weights
   and `accelerate.mixed_precision=bf16`, a checkpoint, then `resume=true` from it (nothing left to do,
   same adapter weights).
4. `rewards` (issue 19): tiny ImageReward (BLIP) and HPSv2 (CLIP) checkpoints under the official key
   names, scored on CUDA in bfloat16 and float32: max abs score difference and the load time.
5. `memory`: `promptloop plan`'s bytes against what loading really allocates: CLIP ViT-L/14 at its real size
   (random weights, saved in bf16 to a temp folder) loaded as the clipscore reward in bfloat16, 8 bit and 4 bit
   (bitsandbytes, where installed): CUDA `memory_allocated` growth (on CPU: the tensors' bytes) vs the plan's
   bytes for that reward row(s). Also runs on CPU (`--only memory --device cpu`, about 2 GB of RAM).

    python benchmarks/gpu_smoke.py --out /tmp/gpu_smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
STEPS = 6


def check_loop(device: str) -> dict[str, Any]:
    from promptloop.loop import PromptLoopSampler
    from promptloop.policy.base import FixedPromptPolicy
    from promptloop.testing.pipelines import TINY_PIPELINES, tiny_call_kwargs

    queries, new = ["a red cat", "a green tree"], ["a blue square", "a yellow star"]
    out: dict[str, Any] = {}
    for family, build in TINY_PIPELINES.items():
        pipe = build(seed=0, device=device, dtype=torch.bfloat16)
        kw = {**tiny_call_kwargs(family), "num_inference_steps": STEPS, "output_type": "np", "record_latents": True}
        t0 = time.perf_counter()
        plain = PromptLoopSampler(pipe, None)(queries, mode="none", generator=torch.Generator(device).manual_seed(0), **kw)
        swap = 2
        loop = PromptLoopSampler(pipe, FixedPromptPolicy(new))(
            queries, mode="feedback", refinement_steps=[swap], generator=torch.Generator(device).manual_seed(0), **kw)
        out[family] = {
            "latent_dtype": str(loop.latents.dtype),
            "equal_up_to_swap": bool(torch.equal(loop.latents[: swap + 1], plain.latents[: swap + 1])),
            "differs_after_swap": bool(all(not torch.equal(loop.latents[t, k], plain.latents[t, k])
                                           for t in range(swap + 1, STEPS) for k in range(len(queries)))),
            "images_finite": bool(torch.isfinite(torch.as_tensor(loop.images)).all()),
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return out


def check_generic(device: str) -> dict[str, Any]:
    import numpy as np

    from promptloop.loop import PromptLoopSampler
    from promptloop.policy.base import FixedPromptPolicy, NullPolicy, PolicyOutput
    from promptloop.testing.generic_pipelines import GENERIC_PIPELINES, NO_CFG, generic_call_kwargs
    from promptloop.testing.generic_pipelines_more import (
        MORE_GENERIC_PIPELINES,
        MORE_NO_NEGATIVE,
        TRUE_CFG,
        more_generic_call_kwargs,
    )

    class Negative:
        def propose(self, inputs: Any) -> PolicyOutput:
            return PolicyOutput(prompts=list(inputs.current_prompts), negative_prompts=["blurry dark"] * 2)

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    queries, new, steps, swap = ["a red cat", "a green tree"], ["a big blue square", "a small yellow star"], 4, 1
    out: dict[str, Any] = {}
    for name, build in {**GENERIC_PIPELINES, **MORE_GENERIC_PIPELINES}.items():
        try:
            pipe = build(seed=0).to(device, dtype)
            call_kwargs = more_generic_call_kwargs(name) if name in MORE_GENERIC_PIPELINES else generic_call_kwargs(name, len(queries))
            kw = {**call_kwargs, "num_inference_steps": steps, "output_type": "np", "record_latents": True}
            t0 = time.perf_counter()
            sampler = PromptLoopSampler(pipe)

            def gen() -> torch.Generator:
                return torch.Generator(device).manual_seed(0)

            plain = sampler(queries, mode="none", generator=gen(), **kw)
            null = sampler(queries, policy=NullPolicy(), refinement_steps=[swap], generator=gen(), **kw)
            loop = sampler(queries, policy=FixedPromptPolicy(new), refinement_steps=[swap], generator=gen(), **kw)
            row: dict[str, Any] = {
                "null_equals_plain": bool(np.array_equal(null.images, plain.images)),
                "equal_up_to_swap": bool(torch.equal(loop.latents[: swap + 1], plain.latents[: swap + 1])),
                "differs_after_swap": bool(not torch.equal(loop.latents[-1], plain.latents[-1])),
                "images_finite": bool(np.isfinite(np.asarray(loop.images, dtype=np.float32)).all()),
            }
            if name not in NO_CFG | MORE_NO_NEGATIVE:
                # true-CFG families encode the negative in its own call: start with one as long as the swap's
                extra = {"negative_prompt": ["", ""], "true_cfg_scale": 2.0} if name == "flux_img2img" else \
                    {"negative_prompt": ["dark blurry"] * 2} if name in TRUE_CFG else {}
                neg = sampler(queries, policy=Negative(), refinement_steps=[swap], generator=gen(), **kw, **extra)
                base = sampler(queries, mode="none", generator=gen(), **kw, **extra) if extra else plain
                row["negative_changes_image"] = bool(not np.array_equal(neg.images, base.images))
            row["seconds"] = round(time.perf_counter() - t0, 2)
            out[name] = row
        except Exception as e:  # report every pipeline, even when one breaks
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    return out


def check_policy(device: str) -> dict[str, Any]:
    from PIL import Image

    from promptloop.policy.base import PolicyInput
    from promptloop.testing.policies import tiny_llava_policy, tiny_qwen25vl_policy

    out: dict[str, Any] = {}
    previews = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    inp = PolicyInput(["a red circle", "a blue box on the left"], ["a red circle", "a blue box"], 0.5, previews)
    for name, build in (("qwen25vl", tiny_qwen25vl_policy), ("llava", tiny_llava_policy)):
        policy = build(seed=0)
        policy.model.to(device=device, dtype=torch.bfloat16)
        gen = policy.propose(inp, temperature=1.0, seed=0)
        again = policy.logprobs(inp, gen.completion_ids, temperature=1.0)
        diff = max(float((a.cpu().float() - b.float()).abs().max()) for a, b in zip(again, gen.logprobs, strict=True)
                   if len(a))
        out[name] = {"dtype": str(policy.dtype), "device": str(policy.device), "logprob_max_abs_diff": diff,
                     "completion_tokens": [len(c) for c in gen.completion_ids]}
    return out


def check_grpo(device: str, work: Path) -> dict[str, Any]:
    from promptloop.testing.rewards import tiny_clip_dir
    from promptloop.train import PromptLoopTrainer, load_config
    from promptloop.train.logging import read_metrics

    clip = tiny_clip_dir(work)
    prompts = work / "prompts.txt"
    prompts.write_text("a red circle\na blue square on the left\na cat next to a tree\n")
    overrides = [
        f"output_dir={work / 'run'}", "pipeline.name_or_path=tiny:sdxl", "policy.name_or_path=tiny:qwen25vl",
        "pipeline.dtype=bfloat16", "policy.dtype=bfloat16", "accelerate.mixed_precision=bf16",
        "pipeline.num_inference_steps=4", "loop.num_refinements=2", f"data.train={prompts}", "data.eval=null",
        "grpo.queries_per_step=2", "grpo.num_generations=2", "grpo.num_iterations=2", "grpo.beta=0.05",
        "rewards={clipscore: 1.0}", f"reward_kwargs={{clipscore: {{model_name_or_path: '{clip}'}}}}",
        "steps=2", "logging.progress_bar=false", "policy.lora_r=4",
    ]
    t0 = time.perf_counter()
    trainer = PromptLoopTrainer(load_config(None, overrides))
    result = trainer.train()
    seconds = time.perf_counter() - t0
    recs = [r for r in read_metrics(result.metrics_path) if r["kind"] == "train"]
    lora = {n: p.detach().float().cpu().clone() for n, p in trainer.policy.model.named_parameters() if "lora_" in n}
    again = PromptLoopTrainer(load_config(None, [*overrides, "resume=true"]))
    resumed = again.train()
    lora2 = {n: p.detach().float().cpu() for n, p in again.policy.model.named_parameters() if "lora_" in n}
    keep = ("reward/clipscore/mean", "reward/total/std", "kl", "clip_fraction", "fallback_rate",
            "ratio_first_pass_max_dev", "time/rollout_s", "time/update_s")
    return {
        "device": str(trainer.accelerator.device), "mixed_precision": trainer.accelerator.mixed_precision,
        "policy_dtype": str(trainer.policy.dtype), "pipeline_dtype": str(trainer.pipe.unet.dtype),
        "steps": result.steps, "metrics": [{k: r.get(k) for k in ("step", *keep)} for r in recs],
        "checkpoint": result.checkpoint.name if result.checkpoint else None,
        "resumed_steps": resumed.steps,
        "resumed_lora_identical": all(torch.equal(lora[n], lora2[n]) for n in lora) and len(lora) > 0,
        "lora_moved": any(float(v.abs().sum()) > 0 for n, v in lora.items() if "lora_B" in n),
        "seconds": round(seconds, 1),
        "max_memory_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None,
    }


# --- issue 19: model rewards on the GPU -------------------------------------------------------------------------------
def check_rewards(device: str, work: Path) -> dict[str, Any]:
    from promptloop.rewards.adapters.hps import HPSv2Reward
    from promptloop.rewards.adapters.image_reward import ImageRewardReward
    from promptloop.testing.rewards import tiny_hps_dir, tiny_imagereward_dir

    images = torch.rand(4, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    queries = ["a red circle", "a blue square", "a red circle", "a cat"]
    out: dict[str, Any] = {}
    for name, cls, folder in (("imagereward", ImageRewardReward, tiny_imagereward_dir(work / "ir")),
                              ("hpsv2", HPSv2Reward, tiny_hps_dir(work / "hps"))):
        scores = {}
        for dtype in ("float32", "bfloat16"):
            t0 = time.perf_counter()
            reward = cls(folder, tokenizer_name_or_path=str(folder / "tokenizer"), device=device, dtype=dtype,
                         local_files_only=True).load()
            load_s = time.perf_counter() - t0
            scores[dtype] = reward(images, queries).scores.float().cpu()
        out[name] = {"load_s_bf16": round(load_s, 3), "scores_fp32": scores["float32"].tolist(),
                     "max_abs_diff_bf16": float((scores["float32"] - scores["bfloat16"]).abs().max())}
    return out


def _resident_bytes(model: torch.nn.Module) -> int:
    """Bytes of a loaded model's tensors: parameters, buffers and bitsandbytes' scales (SCB, absmax, code)."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.nbytes
    for m in model.modules():
        w = getattr(m, "weight", None)
        scb, state = getattr(w, "SCB", None), getattr(w, "quant_state", None)
        if scb is not None:
            total += scb.nbytes
        if state is not None:
            total += state.absmax.nbytes + state.code.nbytes
    return total


def check_memory(device: str, work: Path) -> dict[str, Any]:
    import importlib.util

    from promptloop.plan import build_meta, plan_config
    from promptloop.plan.archs import CLIP_VIT_L14
    from promptloop.rewards import get_reward
    from promptloop.rewards.adapters import model_rewards_registered
    from promptloop.testing.rewards import write_tiny_clip_tokenizer
    from promptloop.train.config import TrainConfig

    folder = work / "clip-vit-l14-random"
    if not (folder / "config.json").is_file():
        from transformers import CLIPTokenizer

        model = build_meta(CLIP_VIT_L14).to_empty(device="cpu")
        torch.manual_seed(0)
        for prm in model.parameters():
            torch.nn.init.normal_(prm, std=0.02)
        model.to(torch.bfloat16).save_pretrained(folder)
        del model
        write_tiny_clip_tokenizer(folder)  # a small BPE: only the model's size matters here
        CLIPTokenizer.from_pretrained(str(folder), model_max_length=77).save_pretrained(str(folder))
        (folder / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224},
            "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_normalize": True}))
    out: dict[str, Any] = {}
    modes = [None] + (["8bit", "4bit"] if importlib.util.find_spec("bitsandbytes") else [])
    for quantization in modes:
        options = {"model_name_or_path": str(folder), "dtype": "bfloat16", "quantization": quantization}
        cfg = TrainConfig(rewards={"clipscore": 1.0}, reward_kwargs={"clipscore": options}).validate()
        cfg.pipeline.name_or_path, cfg.policy.name_or_path = "tiny:sd", "tiny:llava"
        planned = plan_config(cfg, [1])["reward_bytes"]
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
        with model_rewards_registered():
            reward = get_reward("clipscore", device=device, local_files_only=True, **options).load()
        model = reward.embedder.model
        loaded = (torch.cuda.memory_allocated() - before) if cuda else _resident_bytes(model)
        out[quantization or "bfloat16"] = {"planned_bytes": planned, "loaded_bytes": int(loaded),
                                          "tensor_bytes": _resident_bytes(model),
                                          "loaded_over_planned": round(loaded / planned, 4)}
        del reward, model
        if cuda:
            torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="folder for the JSON result and the GRPO run (default: a temp dir)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=None, choices=["loop", "generic", "policy", "grpo", "rewards", "memory"], help="run one part only")
    args = ap.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="gpu_smoke_"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"device": args.device, "torch": torch.__version__,
                              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    parts = (("loop", lambda: check_loop(args.device)), ("generic", lambda: check_generic(args.device)),
             ("policy", lambda: check_policy(args.device)), ("grpo", lambda: check_grpo(args.device, work)),
             ("rewards", lambda: check_rewards(args.device, work)), ("memory", lambda: check_memory(args.device, work)))
    for name, fn in parts:
        if args.only is not None and name != args.only:
            continue
        try:
            result[name] = fn()
        except Exception as e:  # report every part, even when one breaks
            result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    text = json.dumps(result, indent=2, default=str)
    (work / "gpu_smoke.json").write_text(text)
    print(text)
    failed = [k for k, _ in parts if k in result and ("error" in result[k] or any(
        isinstance(v, dict) and "error" in v for v in result[k].values()))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
