"""`PromptLoopTrainer`: PromptLoop's online GRPO, with a clear rollout / score / update split.

One step:
1. rollout — the step's `queries_per_step` queries (a deterministic function of the step) are split into
   contiguous whole groups per process; each query gets `num_generations` trajectories with their own
   seeds, a random refinement schedule (seeded) and `num_refinements` policy decisions each.
2. score — the terminal reward of each trajectory is the weighted sum of the named rewards, judged
   against the ORIGINAL query; advantages are centred within each group and scaled by the group's std,
   the whole step's std (gathered over processes) or not at all (`grpo.scale_rewards`); groups never
   straddle processes, so this is the same as normalising the gathered batch.
3. update — `num_iterations` optimizer passes over all K actions of every trajectory: token-level
   PPO-clipped surrogate minus beta * k3 KL to the reference policy; old log-probs are the detached
   log-probs of the first pass's own forward (the policy has not changed since sampling; as TRL does), so
   the first-pass ratio is exactly 1 in every dtype; the sampling-time log-probs only feed the metric
   `sampling_logprob_max_dev` (how far sampling and training forwards disagree numerically). The loss is the token mean over the whole global batch:
   micro-batches contribute sum/N_global and the gradients are summed over processes, which equals the
   single-process gradient (no DDP wrapper, so VLMPolicy keeps its plain model).

Accelerate provides device placement, mixed precision (autocast + fp16 loss scaling), process groups
for reductions and gathers, and trackers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from promptloop.fs_errors import output_dir
from promptloop.train import checkpoint as ckpt
from promptloop.train import run_folder, sharding
from promptloop.train.advantages import group_advantages, group_stats
from promptloop.train.components import ReferencePolicy, load_pipeline, load_policy, prepare_policy
from promptloop.train.config import TrainConfig
from promptloop.train.data import (
    PromptFileError,
    PromptOrder,
    Prompts,
    is_world_query,
    load_prompts,
    skip_overlong_tokens,
)
from promptloop.train.faults import fault_point
from promptloop.train.logging import PLOT_FILE, MetricsLogger, mean_ci, plot_reward_curve, query_means
from promptloop.train.loss import grpo_loss
from promptloop.train.rollout import RolloutBatch, derive_seed, micro_batches, policy_input, run_rollout
from promptloop.world import get_world, world_name_of_pipeline

# config sections that define a run: a checkpoint written under other values cannot be resumed
_IDENTITY_KEYS = ("seed", "rewards", "reward_kwargs", "pipeline", "policy", "loop", "grpo")
_IDENTITY_DATA_KEYS = ("train", "column", "max_train_prompts", "shuffle")


class TrainError(RuntimeError):
    """A run that cannot start as configured (e.g. an output folder holding another run)."""


class DivergenceError(TrainError):
    """Training whose loss, gradients or weights became nan / inf (the message names the step and the last good
    checkpoint); nothing of that step is saved."""


@dataclass
class TrainResult:
    """What `train` returns."""

    output_dir: Path
    steps: int  # steps completed
    metrics: dict[str, Any]  # the last training record
    eval_metrics: dict[str, Any] | None  # the last evaluation record
    metrics_path: Path
    checkpoint: Path | None  # the last checkpoint
    policy_path: Path | None  # the saved final policy
    plot_path: Path | None
    skipped_prompts: dict[str, int] = field(default_factory=dict)  # over-long prompts skipped, per data.train / eval


def check_distributed_type(accelerator: Any, finetune: str) -> None:
    """Refuse, as a TrainError, the Accelerate modes the trainer cannot run (see `promptloop.train.sharding`):
    DeepSpeed / Megatron, FSDP1, and FSDP for LoRA runs."""
    try:
        sharding.check_distributed(accelerator, finetune)
    except sharding.ShardingError as e:
        raise TrainError(str(e)) from None


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(correction=0))


class PromptLoopTrainer:
    """Online GRPO of a PromptLoop refinement policy against a frozen diffusion pipeline.

    Args:
        config: the run's TrainConfig.
        pipeline, policy, reward: ready-made parts (default: built from the config).
        accelerator: an `accelerate.Accelerator` (default: built from `config.accelerate` / logging).
    """

    def __init__(self, config: TrainConfig, *, pipeline: Any = None, policy: Any = None, reward: Any = None,
                 accelerator: Any = None) -> None:
        self.config = cfg = config.validate()
        self.output_dir = output_dir(cfg.output_dir, "output_dir")
        self.accelerator = acc = accelerator or self._make_accelerator(cfg)
        check_distributed_type(acc, cfg.policy.finetune)
        self.sharded = sharding.is_sharded_run(acc)
        world = acc.num_processes
        if int(os.environ.get("WORLD_SIZE", "1")) != world:
            raise TrainError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but Accelerate set up {world} process(es): every "
                             "process would train alone. On CPU launch with `ACCELERATE_USE_CPU=1 accelerate launch "
                             "--multi_gpu --num_processes N ...`")
        g = cfg.grpo
        if g.queries_per_step % world:
            raise TrainError(f"grpo.queries_per_step={g.queries_per_step} is not divisible by the {world} processes")
        local_groups = g.queries_per_step // world
        if local_groups % g.groups_per_rollout_call and acc.is_main_process:
            print(f"promptloop.train: note: {local_groups} groups per process is not a multiple of "
                  f"grpo.groups_per_rollout_call={g.groups_per_rollout_call}; results then depend on the process count",
                  file=sys.stderr)
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
        device = acc.device
        # the world a world backbone was trained on (its prompt sets, its alignment monitor); the default one otherwise
        self.world = world_name_of_pipeline(cfg.pipeline.name_or_path)
        self.train_prompts = load_prompts(cfg.data.train, cfg.data.column, cfg.data.max_train_prompts,  # fails fast
                                          world=self.world)
        if pipeline is None:
            pipeline, self.call_kwargs = load_pipeline(cfg.pipeline, device)
        else:
            self.call_kwargs = {k: v for k, v in (("height", cfg.pipeline.height), ("width", cfg.pipeline.width))
                                if v is not None}
        self.pipe = pipeline
        self.call_kwargs["num_inference_steps"] = cfg.pipeline.num_inference_steps
        if cfg.pipeline.guidance_scale is not None:
            self.call_kwargs["guidance_scale"] = cfg.pipeline.guidance_scale
        if cfg.pipeline.negative_prompt is not None:
            self.call_kwargs["negative_prompt"] = cfg.pipeline.negative_prompt
        self.policy = policy if policy is not None else load_policy(cfg.policy, device)
        self.trainable = prepare_policy(self.policy, cfg, self.pipe)
        self.reference = ReferencePolicy(self.policy, frozen_copy=cfg.policy.finetune == "full") if g.beta > 0 else None
        if reward is None:
            from promptloop.rewards import CombinedReward

            reward = CombinedReward(cfg.rewards, normalise=False, reward_kwargs=cfg.reward_kwargs).preflight()
        self.reward = reward
        self._alignment: Any = None
        self._base_eval: dict[str, float] | None = None  # the evaluation's base row, computed once
        self._eval_query_means: dict[str, dict[str, Any]] = {}  # prefix -> score -> per-query means (np arrays)
        from promptloop.loop.sampler import PromptLoopSampler

        self.sampler = PromptLoopSampler(self.pipe, self.policy, mode=cfg.loop.mode,  # type: ignore[arg-type]
                                         num_refinements=cfg.loop.num_refinements, schedule="random",
                                         preview=cfg.loop.preview, preview_size=cfg.loop.preview_size,
                                         rewrite_first=cfg.loop.rewrite_first)
        self.eval_prompts: list[str] = []
        if cfg.eval.every > 0 and cfg.data.eval:
            self.eval_prompts = load_prompts(cfg.data.eval, cfg.data.column, cfg.eval.num_queries, world=self.world)
        # over-long prompts (words and characters while loading, policy tokens here) are skipped with a count
        self.skipped_prompts: dict[str, int] = {}
        for key in ("train", "eval"):
            prompts = getattr(self, f"{key}_prompts")
            if not isinstance(prompts, Prompts):
                continue
            if getattr(self.policy, "tokenizer", None) is not None:
                prompts = skip_overlong_tokens(prompts, self.policy.tokenizer)
                if not prompts:
                    raise PromptFileError(f"data.{key} {getattr(cfg.data, key)!r}: every prompt is over the length "
                                          f"limits ({prompts.skip_message()})")
                setattr(self, f"{key}_prompts", prompts)
            message = prompts.skip_message(f"data.{key} {getattr(cfg.data, key)!r}")
            if message is not None:
                self.skipped_prompts[key] = len(prompts.skipped)
                if acc.is_main_process:
                    print(f"promptloop.train: warning: {message}", file=sys.stderr)
        self.order = PromptOrder(self.train_prompts, cfg.seed, cfg.data.shuffle)
        self.eval_alignment = cfg.eval.alignment == "always" or (
            cfg.eval.alignment == "auto" and bool(self.eval_prompts)
            and all(is_world_query(q, self.world) for q in self.eval_prompts))
        raw_opt = torch.optim.AdamW(self.trainable, lr=g.learning_rate, betas=(g.adam_beta1, g.adam_beta2),
                                    eps=g.adam_eps, weight_decay=g.weight_decay)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(raw_opt, self._lr_lambda)
        if self.sharded:  # FSDP2: policy, its optimizer state and the reference copy sharded over the processes
            if self.reference is not None and self.reference.copy is not None:
                sharding.shard_frozen(acc, self.reference.copy.model)
            self.policy.model, self.optimizer = sharding.shard_trainable(acc, self.policy.model, raw_opt)
            self.trainable = [p for p in self.policy.model.parameters() if p.requires_grad]
        else:
            self.optimizer = acc.prepare_optimizer(raw_opt, device_placement=True)
        self.step = 0
        self.logger = MetricsLogger(self.output_dir, acc, bool(cfg.logging.trackers()))
        self.last_checkpoint: Path | None = None

    # ------------------------------------------------------------------------------------------------------------------
    # setup helpers
    # ------------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _make_accelerator(cfg: TrainConfig) -> Any:
        from accelerate import Accelerator

        if cfg.accelerate.mixed_precision == "fp16" and (cfg.accelerate.cpu or not torch.cuda.is_available()):
            raise TrainError("accelerate.mixed_precision: fp16 needs a CUDA GPU; use bf16 or no on CPU")
        log_with = cfg.logging.trackers() or None
        for module in log_with or []:
            try:
                __import__(module if module != "tensorboard" else "torch.utils.tensorboard")
            except ImportError:
                raise TrainError(f"logging.report_to: {module} needs the `{module}` package "
                                 f"(pip install {module}), or set logging.report_to: none") from None
        return Accelerator(mixed_precision=cfg.accelerate.mixed_precision, cpu=cfg.accelerate.cpu, log_with=log_with,
                           project_dir=cfg.output_dir)

    def _lr_lambda(self, opt_step: int) -> float:
        g = self.config.grpo
        total = max(1, self.config.steps * g.num_iterations)
        if g.warmup_steps and opt_step < g.warmup_steps:
            return (opt_step + 1) / (g.warmup_steps + 1)
        if g.lr_schedule == "constant":
            return 1.0
        frac = min(1.0, (opt_step - g.warmup_steps) / max(1, total - g.warmup_steps))
        if g.lr_schedule == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    def identity(self) -> dict[str, Any]:
        """The config parts a resumed run must share with its checkpoint (JSON-normalised)."""
        d = self.config.to_dict()
        ident = {k: d[k] for k in _IDENTITY_KEYS}
        ident["data"] = {k: d["data"][k] for k in _IDENTITY_DATA_KEYS}
        ident["policy"] = {k: v for k, v in ident["policy"].items() if k != "gradient_checkpointing"}
        ident["grpo"] = {k: v for k, v in ident["grpo"].items() if k not in ("micro_batch_size",)}
        ident["pipeline"] = {k: v for k, v in ident["pipeline"].items() if k != "offload"}  # same images either way
        return json.loads(json.dumps(ident))

    def _local_groups(self, queries: list[str], offset: int = 0) -> list[tuple[int, str]]:
        """The contiguous share of (global index, query) pairs of this process."""
        acc = self.accelerator
        n, w, r = len(queries), acc.num_processes, acc.process_index
        lo, hi = (n * r) // w, (n * (r + 1)) // w
        return [(offset + i, queries[i]) for i in range(lo, hi)]

    # ------------------------------------------------------------------------------------------------------------------
    # rollout / score / update
    # ------------------------------------------------------------------------------------------------------------------
    def step_queries(self, step: int) -> list[str]:
        """The global batch of queries of (0-based) step `step`."""
        q = self.config.grpo.queries_per_step
        return self.order.take(step * q, q)

    @torch.no_grad()
    def rollout(self, step: int) -> RolloutBatch:
        """Sample this process's groups of step `step` (G trajectories per query, random schedules)."""
        cfg = self.config
        groups = self._local_groups(self.step_queries(step))
        self.policy.model.eval()
        with self._sampling(), self.accelerator.autocast():
            return run_rollout(self.sampler, groups, cfg.grpo.num_generations, seed=cfg.seed, tag=f"step{step}",
                               num_refinements=cfg.loop.num_refinements, schedule="random",
                               groups_per_call=cfg.grpo.groups_per_rollout_call, mode=cfg.loop.mode,
                               call_kwargs=self.call_kwargs, shared_noise=cfg.grpo.shared_noise)

    def _sampling(self) -> Any:
        """The policy whole on every process while it samples (sharded runs; see `sharding.gathered`)."""
        if not self.sharded:
            return contextlib.nullcontext()
        plugin = self.accelerator.state.fsdp_plugin
        return sharding.gathered(self.policy.model, (self.policy,), bool(plugin.reshard_after_forward))

    @torch.no_grad()
    def score(self, batch: RolloutBatch) -> RolloutBatch:
        """Terminal rewards (weighted sum of the named rewards vs the original queries) and group advantages."""
        scores = self._evaluate_reward(self.reward, batch.images, batch.queries)
        batch.rewards = {k: v.detach().float().cpu() for k, v in scores.items()}
        scale = self.config.grpo.scale_rewards
        batch_std = None
        if scale == "batch":  # the std of the whole step's rewards, gathered in rank order (= one process's order)
            everything = self._gather([float(x) for x in batch.rewards["total"]])
            batch_std = float(torch.tensor(everything, dtype=torch.float32).std(correction=0))
        batch.advantages = group_advantages(batch.rewards["total"], batch.group_size, scale=scale,
                                            batch_std=batch_std)
        return batch

    @staticmethod
    def _evaluate_reward(reward: Any, images: list[Any], queries: list[str]) -> dict[str, torch.Tensor]:
        if hasattr(reward, "evaluate"):
            return dict(reward.evaluate(images, queries))
        out = reward(images, queries)
        if isinstance(out, dict):
            return dict(out)
        scores = out.scores if hasattr(out, "scores") else torch.as_tensor(out)
        return {"total": scores}

    def _global_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return [float(x) for x in t.cpu()]

    def _sync_gradients(self) -> None:
        """Sum the gradients over processes (each part is already divided by the global token count); FSDP's
        reduce-scatter has done it in sharded runs."""
        if self.accelerator.num_processes == 1 or self.sharded:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.trainable]
        bucket = 1 << 26
        start = 0
        while start < len(grads):
            group, n = [], 0
            while start < len(grads) and (not group or n + grads[start].numel() <= bucket):
                group.append(start)
                n += grads[start].numel()
                start += 1
            flat = torch.cat([grads[i].reshape(-1) for i in group])
            flat = self.accelerator.reduce(flat, reduction="sum")
            offset = 0
            for i in group:
                k = grads[i].numel()
                self.trainable[i].grad = flat[offset : offset + k].view_as(grads[i]).clone()
                offset += k

    def _logprobs(self, policy: Any, acts: list[Any], requires_grad: bool) -> list[torch.Tensor]:
        with self.accelerator.autocast():
            return policy.logprobs(policy_input(acts), [a.completion_ids for a in acts], requires_grad=requires_grad,
                                   temperature=self.config.policy.temperature)

    def _check_finite(self, loss: float, grad_norm: float, iteration: int, weights: bool = False) -> None:
        """DivergenceError when this optimizer pass's loss (summed over processes), the gradient norm or, with
        `weights`, any trainable weight is not finite; every process reaches the same verdict."""
        bad_weights = 0.0
        if weights:
            with torch.no_grad():
                bad_weights = float(sum(int((~torch.isfinite(sharding.local_part(p))).sum()) for p in self.trainable))
        loss_sum, bad = self._global_sum([loss, bad_weights]) if self.accelerator.num_processes > 1 else (loss,
                                                                                                          bad_weights)
        what = None
        if not math.isfinite(loss_sum):
            what = f"the loss is {loss_sum}"
        elif not math.isfinite(grad_norm):
            what = f"the gradient norm is {grad_norm}"
        elif bad:
            what = f"{int(bad)} trainable weight(s) are nan or inf after the optimizer step"
        if what is None:
            return
        step = self.step + 1
        last = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint is not None
                else "no checkpoint was written before it")
        pass_note = f" (optimizer pass {iteration + 1} of {self.config.grpo.num_iterations})" \
            if self.config.grpo.num_iterations > 1 else ""
        raise DivergenceError(f"training diverged at step {step}{pass_note}: {what}; nothing of step {step} was "
                              f"saved and no final policy was written; {last}")

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        """`num_iterations` optimizer passes over all refinement actions of the batch; returns update metrics."""
        cfg, g, acc = self.config, self.config.grpo, self.accelerator
        assert batch.advantages is not None, "score() the batch before update()"
        actions = batch.actions
        adv = batch.advantages
        mbs = micro_batches(actions, g.micro_batch_size)
        local_tokens = sum(a.num_tokens for a in actions)
        global_tokens, global_actions = self._global_sum([float(local_tokens), float(len(actions))])
        max_tokens = int(getattr(self.policy, "max_new_tokens", 0) or max([a.num_tokens for a in actions] + [1]))
        normaliser = {"dapo": global_tokens, "grpo": global_actions,
                      "dr_grpo": global_actions * max_tokens}[g.loss_type]
        if cfg.policy.gradient_checkpointing:
            self.policy.model.train()
        with torch.no_grad():
            if self.reference is not None:
                with self.reference.active() as ref:
                    for mb in mbs:
                        for a, lp in zip(mb, self._logprobs(ref, mb, False), strict=True):
                            a.ref_logprobs = lp.detach().float().cpu()
        # a micro-batch without tokens is skipped; in sharded runs only where it has none on any process (each
        # forward is a collective there, so every process must run the same ones)
        mb_tokens = [float(sum(a.num_tokens for a in mb)) for mb in mbs]
        skip = [n == 0 for n in (self._global_sum(mb_tokens) if self.sharded else mb_tokens)]
        scale = sharding.loss_scale(acc, self.sharded)
        sums = {"loss": 0.0, "ratio": 0.0, "clipped": 0.0, "kl": 0.0, "tokens": 0.0, "dev1": 0.0}
        first: dict[int, torch.Tensor] = {}  # id(action) -> its log-probs from the first pass's forward
        sample_dev = 0.0  # max |first-pass - sampling-time| log-prob: the sampler/trainer numeric mismatch
        grad_norms = []
        for it in range(g.num_iterations):
            loss_total = 0.0
            first_dev = 0.0
            for mb, skipped in zip(mbs, skip, strict=True):
                if skipped:
                    continue
                new = self._logprobs(self.policy, mb, True)
                if it == 0:  # the policy has not changed yet: old = this very forward, so the ratio is exactly 1
                    for a, n in zip(mb, new, strict=True):
                        first[id(a)] = n.detach().float()
                        if a.old_logprobs is not None and a.old_logprobs.numel():
                            sample_dev = max(sample_dev, float((first[id(a)].cpu() - a.old_logprobs).abs().max()))
                loss, st = grpo_loss(
                    [n.float() for n in new], [first[id(a)] for a in mb], [float(adv[a.traj]) for a in mb],
                    clip_eps=g.clip_eps, clip_eps_high=g.clip_eps_high, beta=g.beta,
                    logp_ref=[a.ref_logprobs for a in mb] if g.beta > 0 else None,  # type: ignore[misc]
                    normaliser=max(normaliser, 1.0), loss_type=g.loss_type, max_tokens=max_tokens)
                acc.backward(loss * scale if scale != 1.0 else loss)
                loss_total += float(loss.detach())
                sums["ratio"] += st.ratio_sum
                sums["clipped"] += st.clipped
                sums["kl"] += st.kl_sum
                sums["tokens"] += st.tokens
                if it == 0:
                    first_dev = max(first_dev, abs(st.ratio_max - 1.0), abs(st.ratio_min - 1.0))
            self._sync_gradients()
            if g.max_grad_norm is not None:
                norm = acc.clip_grad_norm_(self.trainable, g.max_grad_norm)
            else:
                acc.unscale_gradients()
                norm = torch.nn.utils.clip_grad_norm_(self.trainable, float("inf"))
            grad_norms.append(sharding.as_float(norm))
            scaled = getattr(acc, "scaler", None) is not None  # fp16: the loss scaler skips overflowing steps itself
            if not scaled:
                self._check_finite(loss_total, grad_norms[-1], it)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.lr_scheduler.step()
            self._check_finite(0.0, 0.0, it, weights=True)
            sums["loss"] += loss_total
            if it == 0:
                sums["dev1"] = first_dev
        self.policy.model.eval()
        loss_sum, ratio_sum, clipped, kl_sum, tokens = self._global_sum(
            [sums["loss"], sums["ratio"], sums["clipped"], sums["kl"], sums["tokens"]])
        dev1 = sums["dev1"]
        if acc.num_processes > 1:
            dev1 = float(acc.gather(torch.tensor([dev1], device=acc.device)).max())
            sample_dev = float(acc.gather(torch.tensor([sample_dev], device=acc.device)).max())
        tok = max(tokens, 1.0)
        return {
            "loss": loss_sum / g.num_iterations,
            "kl": kl_sum / tok,
            "clip_fraction": clipped / tok,
            "ratio_mean": ratio_sum / tok if tokens else 1.0,
            "ratio_first_pass_max_dev": dev1,
            "sampling_logprob_max_dev": sample_dev,
            "grad_norm": sum(grad_norms) / len(grad_norms),
            "lr": float(self.lr_scheduler.get_last_lr()[0]),
            "tokens": global_tokens,
        }

    # ------------------------------------------------------------------------------------------------------------------
    # metrics / evaluation
    # ------------------------------------------------------------------------------------------------------------------
    def _gather(self, values: list[Any]) -> list[Any]:
        if self.accelerator.num_processes == 1:
            return list(values)
        from accelerate.utils import gather_object

        return list(gather_object(list(values)))

    def batch_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """Reward mean/std per named reward (gathered), advantage and behaviour statistics."""
        out: dict[str, float] = {}
        per_traj = [{k: float(v[i]) for k, v in batch.rewards.items()} for i in range(batch.num_trajectories)]
        rows = self._gather(per_traj)
        for key in batch.rewards:
            mean, std = _mean_std([r[key] for r in rows])
            out[f"reward/{key}/mean"] = mean
            out[f"reward/{key}/std"] = std
        totals = torch.tensor([r["total"] for r in rows], dtype=torch.float64)
        out.update(group_stats(totals, batch.group_size))
        assert batch.advantages is not None
        adv = self._gather([float(a) for a in batch.advantages])
        out["advantage/abs_mean"] = float(torch.tensor(adv).abs().mean())
        acts = self._gather([(int(a.fallback), a.num_tokens) for a in batch.actions])
        out["fallback_rate"] = sum(f for f, _ in acts) / max(1, len(acts))
        out["completion_tokens/mean"] = sum(n for _, n in acts) / max(1, len(acts))
        words = self._gather([len(t.final_prompt.split()) for t in batch.trajectories])
        out["prompt_words/mean"] = sum(words) / max(1, len(words))
        changed = self._gather([int(t.final_prompt != t.query) for t in batch.trajectories])
        out["prompt_changed_rate"] = sum(changed) / max(1, len(changed))
        return out

    def _eval_scores(self, batch: RolloutBatch) -> dict[str, torch.Tensor]:
        """The training reward's parts and total on an evaluation batch, plus the world's alignment when asked."""
        scores = {k: v.detach().float().cpu() for k, v in
                  self._evaluate_reward(self.reward, batch.images, batch.queries).items()}
        if self.eval_alignment and "alignment" not in scores:
            if self._alignment is None:
                from promptloop.rewards import get_reward

                self._alignment = get_reward(get_world(self.world).ALIGNMENT_REWARD)
            scores["alignment"] = self._alignment(batch.images, batch.queries).scores.detach().float().cpu()
        return scores

    def _eval_means(self, scores: dict[str, torch.Tensor], n: int, prefix: str) -> dict[str, float]:
        """Mean, std and a 95 % bootstrap CI over held-out queries of each score (`KEY/ci_low`, `KEY/ci_high`);
        the per-query means are kept (`_eval_query_means[prefix]`) for the paired CI of the margin over base."""
        rows = self._gather([{k: float(v[i]) for k, v in scores.items()} for i in range(n)])
        out: dict[str, float] = {}
        per_query = self._eval_query_means.setdefault(prefix, {})
        for key in scores:
            values = [r[key] for r in rows]
            mean, std = _mean_std(values)
            out[f"{prefix}{key}/mean"] = mean
            out[f"{prefix}{key}/std"] = std
            per_query[key] = query_means(values, self.config.eval.seeds_per_query)
            out[f"{prefix}{key}/ci_low"], out[f"{prefix}{key}/ci_high"] = mean_ci(per_query[key], self.config.seed)
        return out

    @torch.no_grad()
    def evaluate_base(self) -> dict[str, float]:
        """The base row of the evaluation: the plain pipeline (no policy) on the same held-out queries and seeds.
        The pipeline and the reward are frozen, so it is computed once per run and repeated in every record."""
        cfg = self.config
        if self._base_eval is None:
            groups = self._local_groups(self.eval_prompts)
            batch = run_rollout(self.sampler, groups, cfg.eval.seeds_per_query, seed=cfg.seed, tag="eval",
                                num_refinements=0, schedule="uniform", groups_per_call=cfg.grpo.groups_per_rollout_call,
                                mode="none", call_kwargs=self.call_kwargs)
            self._base_eval = self._eval_means(self._eval_scores(batch), batch.num_trajectories, "eval/base/")
        return dict(self._base_eval)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out evaluation: uniform schedule, fixed seeds; the training reward (each named part and the
        total) and, for world queries, the world's alignment (over-optimisation monitor); beside each, the base row
        (`eval/base/...`: the plain pipeline on the same queries and seeds) and the policy's margin over it
        (`eval/{key}/minus_base`)."""
        cfg = self.config
        if not self.eval_prompts:
            return {}
        t0 = time.perf_counter()
        groups = self._local_groups(self.eval_prompts)
        self.policy.model.eval()
        n_ref = cfg.eval.num_refinements or cfg.loop.num_refinements
        with self._sampling(), self.accelerator.autocast():
            batch = run_rollout(self.sampler, groups, cfg.eval.seeds_per_query, seed=cfg.seed, tag="eval",
                                num_refinements=n_ref, schedule="uniform",
                                groups_per_call=cfg.grpo.groups_per_rollout_call,
                                mode=cfg.loop.mode, call_kwargs=self.call_kwargs)
        scores = self._eval_scores(batch)
        out = self._eval_means(scores, batch.num_trajectories, "eval/")
        if cfg.eval.base_row:
            base = self.evaluate_base()
            out.update(base)
            for key in scores:
                out[f"eval/{key}/minus_base"] = out[f"eval/{key}/mean"] - base[f"eval/base/{key}/mean"]
                diffs = self._eval_query_means["eval/"][key] - self._eval_query_means["eval/base/"][key]
                out[f"eval/{key}/minus_base_ci_low"], out[f"eval/{key}/minus_base_ci_high"] = mean_ci(diffs, cfg.seed)
        if cfg.eval.trajectories > 0 and self.accelerator.is_main_process:
            from promptloop.train.trajectories import log_trajectory_grid, save_trajectory_grid

            saved = save_trajectory_grid(batch, scores, cfg.output_dir, self.step, cfg.eval.trajectories)
            if saved is not None and cfg.logging.trackers():
                log_trajectory_grid(self.accelerator, saved[0], self.step)
        fb = self._gather([int(a.fallback) for a in batch.actions])
        out["eval/fallback_rate"] = sum(fb) / max(1, len(fb))
        out["time/eval_s"] = time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        state = {"step": self.step, "data_position": self.step * self.config.grpo.queries_per_step,
                 "identity": self.identity(), "config": self.config.to_dict()}
        path = ckpt.save_checkpoint(self.accelerator, self.output_dir, self.step, self.policy, self.optimizer,
                                    self.lr_scheduler, state, keep=self.config.checkpoint.keep, sharded=self.sharded)
        self.last_checkpoint = path
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        state = ckpt.load_checkpoint(path, self.accelerator, self.policy, self.optimizer, self.lr_scheduler,
                                     self.identity(), sharded=self.sharded)
        self.step = int(state["step"])
        expected = self.step * self.config.grpo.queries_per_step
        if int(state.get("data_position", expected)) != expected:
            raise ckpt.CheckpointError(f"checkpoint {path}: data position {state['data_position']} does not match "
                                       f"step {self.step} x {self.config.grpo.queries_per_step} queries")
        self.last_checkpoint = Path(path)

    # ------------------------------------------------------------------------------------------------------------------
    # the loop (the run folder: promptloop.train.run_folder)
    # ------------------------------------------------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """Rollout, score and update for the next step; returns its metrics record."""
        acc, cfg = self.accelerator, self.config
        s = self.step
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
            torch.manual_seed(derive_seed(cfg.seed, s, "update", acc.process_index) % (2**63))
            batch = self.rollout(s)
            fault_point("rollout", s + 1)
            t1 = time.perf_counter()
            self.score(batch)
            t2 = time.perf_counter()
            upd = self.update(batch)
            fault_point("update", s + 1)
        t3 = time.perf_counter()
        self.step = s + 1
        record: dict[str, Any] = {"step": self.step, "kind": "train"}
        record.update(self.batch_metrics(batch))
        record.update(upd)
        record.update({"time/rollout_s": t1 - t0, "time/score_s": t2 - t1, "time/update_s": t3 - t2,
                       "time/step_s": t3 - t0})
        return record

    def train(self) -> TrainResult:
        """Run (or resume) the configured number of steps; returns a TrainResult."""
        cfg, acc = self.config, self.accelerator
        run_folder.prepare_output_dir(self)
        if cfg.logging.trackers():
            flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else v
                    for k, v in _flatten(cfg.to_dict()).items()}
            run_name = cfg.logging.run_name or Path(cfg.output_dir).name
            init_kwargs = {"wandb": {"name": run_name, "tags": list(cfg.logging.tags)},
                           "trackio": {"name": run_name}}
            acc.init_trackers(cfg.logging.project_name, config=flat, init_kwargs=init_kwargs)
        last: dict[str, Any] = {}
        last_eval: dict[str, Any] | None = None
        if cfg.eval.every > 0 and self.step == 0:
            last_eval = {"step": 0, "kind": "eval", **self.evaluate()}
            self.logger.log(last_eval)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=min(self.step, cfg.steps), desc="GRPO",
                   disable=not (cfg.logging.progress_bar and acc.is_main_process), dynamic_ncols=True)
        saved_at = -1
        while self.step < cfg.steps:
            last = self.train_step()
            self.logger.log(last)
            fault_point("metrics", self.step)
            bar.update(1)
            bar.set_postfix(reward=f"{last.get('reward/total/mean', float('nan')):.3f}", kl=f"{last['kl']:.4f}",
                            clip=f"{last['clip_fraction']:.2f}")
            if cfg.eval.every > 0 and (self.step % cfg.eval.every == 0 or self.step == cfg.steps):
                last_eval = {"step": self.step, "kind": "eval", **self.evaluate()}
                self.logger.log(last_eval)
            if (cfg.checkpoint.every > 0 and self.step % cfg.checkpoint.every == 0) or self.step == cfg.steps:
                self.save_checkpoint()
                saved_at = self.step
        bar.close()
        if saved_at != self.step and self.last_checkpoint is None:
            self.save_checkpoint()
        policy_path = None
        if cfg.checkpoint.save_final_policy:
            policy_path = self.output_dir / "policy"
            weights = sharding.full_model_state(self.policy.model) if self.sharded else None  # every process
            if acc.is_main_process:
                run_folder.save_final_policy(self, policy_path, weights, last)
                if cfg.hub.push_to_hub:
                    from promptloop.hub import push_folder

                    repo = cfg.hub.hub_model_id or Path(cfg.output_dir).resolve().name
                    url = push_folder(policy_path, repo, private=cfg.hub.hub_private_repo,
                                      commit_message=f"PromptLoop policy after {self.step} GRPO steps")
                    print(f"promptloop.train: pushed {policy_path} to {url}")
            acc.wait_for_everyone()
        plot_path = None
        if cfg.logging.plot and acc.is_main_process:
            plot_path = plot_reward_curve(self.logger.path, self.output_dir / PLOT_FILE)
        if cfg.logging.trackers():
            acc.end_training()
        if not last:
            from promptloop.train.logging import read_metrics

            recs = [r for r in read_metrics(self.logger.path) if r.get("kind") == "train"]
            last = recs[-1] if recs else {}
        return TrainResult(self.output_dir, self.step, last, last_eval, self.logger.path, self.last_checkpoint,
                           policy_path, plot_path, dict(self.skipped_prompts))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("rewards", "reward_kwargs"):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def train(config: TrainConfig, **parts: Any) -> TrainResult:
    """Train a PromptLoop policy with GRPO as configured (`parts`: pipeline=, policy=, reward=, accelerator=)."""
    # Adam state of near-zero gradients decays into subnormal floats, which CPUs process up to 50x slower.
    torch.set_flush_denormal(True)
    try:
        return PromptLoopTrainer(config, **parts).train()
    finally:  # the process's floating-point state back to torch's default (other code may need subnormals)
        torch.set_flush_denormal(False)
