"""GRPO maths of promptloop.train: advantages, the clipped token-level loss with k3 KL, ratio 1 on pass 1."""

from __future__ import annotations

import math

import pytest
import torch

from promptloop.train.advantages import group_advantages
from promptloop.train.loss import grpo_loss, kl_k3


def test_group_advantages_normalise_per_group() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]])
    a = group_advantages(r, eps=0.0)
    std0 = math.sqrt(1.25)
    assert torch.allclose(a[0], torch.tensor([-1.5, -0.5, 0.5, 1.5]) / std0)
    assert torch.allclose(a[1], torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    assert torch.allclose(group_advantages(r.reshape(-1), 4, eps=0.0), a.reshape(-1))
    assert torch.allclose(group_advantages(r, scale="none")[0], torch.tensor([-1.5, -0.5, 0.5, 1.5]))


def test_scale_rewards_modes_numerically() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0], [0.3, 0.3, 0.3, 0.3]])
    centred = torch.tensor([[-1.5, -0.5, 0.5, 1.5], [-0.5, -0.5, 0.5, 0.5], [0.0] * 4])
    # group: each row by its own std (correction 0): sqrt(1.25), 0.5; the flat row stays 0
    group = group_advantages(r, scale="group", eps=0.0)
    assert torch.allclose(group[:2], centred[:2] / torch.tensor([[math.sqrt(1.25)], [0.5]]))
    assert torch.equal(group[2], torch.zeros(4))
    # batch: centred per group, every row by the std of all 12 rewards
    values = r.reshape(-1).tolist()
    mu = sum(values) / 12
    std_all = math.sqrt(sum((v - mu) ** 2 for v in values) / 12)
    batch = group_advantages(r, scale="batch", eps=0.0)
    assert torch.allclose(batch, centred / std_all)
    assert torch.equal(batch[2], torch.zeros(4))  # a zero-spread group keeps exactly zero
    assert batch[0, 3] / batch[1, 3] == pytest.approx(3.0)  # the spread between groups survives (not so for group)
    assert group[0, 3] / group[1, 3] == pytest.approx(1.5 / math.sqrt(1.25))
    # the batch std given from outside (other processes' groups) replaces the local one
    assert torch.allclose(group_advantages(r[:1], scale="batch", eps=0.0, batch_std=std_all), centred[:1] / std_all)
    assert torch.allclose(group_advantages(r.reshape(-1), 4, scale="batch", eps=0.0), batch.reshape(-1))
    # none: centred only (Dr. GRPO)
    assert torch.equal(group_advantages(r, scale="none"), centred)
    # the old booleans
    assert torch.equal(group_advantages(r, scale=True, eps=0.0), group)
    assert torch.equal(group_advantages(r, scale=False), centred)
    with pytest.raises(ValueError, match="scale must be one of group, batch, none"):
        group_advantages(r, scale="rows")


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_zero_spread_everywhere_gives_zeros_in_every_mode(scale: str) -> None:
    r = torch.tensor([[0.7, 0.7, 0.7], [0.2, 0.2, 0.2 + 1e-7]])  # batch std > 0, every group (numerically) flat
    assert torch.equal(group_advantages(r, scale=scale), torch.zeros_like(r))


def test_zero_spread_group_gives_zero_advantage_never_nan() -> None:
    r = torch.tensor([[0.7, 0.7, 0.7], [0.0, 0.0, 0.0], [0.2, 0.2, 0.2 + 1e-9]])
    a = group_advantages(r)
    assert torch.equal(a, torch.zeros_like(a))
    assert torch.equal(group_advantages(torch.tensor([[0.5]])), torch.zeros(1, 1))  # G = 1
    with pytest.raises(ValueError, match="non-finite"):
        group_advantages(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(torch.ones(5), 2)


def test_kl_k3_matches_formula_and_is_nonnegative() -> None:
    new, ref = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -2.0, 0.0])
    d = ref - new
    assert torch.allclose(kl_k3(new, ref), torch.exp(d) - d - 1)
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_grpo_loss_equals_hand_computed_value() -> None:
    # two actions (3 and 2 tokens) of two trajectories with advantages +1 and -2
    new = [torch.tensor([-1.0, -0.5, -2.0]), torch.tensor([-0.2, -1.0])]
    old = [torch.tensor([-1.0, -0.9, -1.0]), torch.tensor([-0.2, -0.5])]
    ref = [torch.tensor([-1.2, -0.5, -2.0]), torch.tensor([-0.1, -1.0])]
    adv = [1.0, -2.0]
    eps, beta = 0.2, 0.1
    total, tokens, clipped = 0.0, 0, 0
    for n, o, r, a in zip(new, old, ref, adv, strict=True):
        for nt, ot, rt in zip(n.tolist(), o.tolist(), r.tolist(), strict=True):
            ratio = math.exp(nt - ot)
            surr = min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a)
            kl = math.exp(rt - nt) - (rt - nt) - 1
            total += -surr + beta * kl
            tokens += 1
            clipped += int((ratio < 1 - eps and a < 0) or (ratio > 1 + eps and a > 0))
    expected = total / tokens
    loss, st = grpo_loss(new, old, adv, clip_eps=eps, beta=beta, logp_ref=ref)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert st.tokens == 5 and st.clipped == clipped == 2  # token 2 (ratio e^0.4, A>0) and token 5 (e^-0.5, A<0)
    # the same split in two micro-batches with the global normaliser sums to the same value
    l1, _ = grpo_loss(new[:1], old[:1], adv[:1], clip_eps=eps, beta=beta, logp_ref=ref[:1], normaliser=5)
    l2, _ = grpo_loss(new[1:], old[1:], adv[1:], clip_eps=eps, beta=beta, logp_ref=ref[1:], normaliser=5)
    assert (l1 + l2).item() == pytest.approx(expected, rel=1e-6)


def test_grpo_loss_gradient_on_policy_is_advantage_weighted_logprob_gradient() -> None:
    new = [torch.tensor([-1.0, -0.5], requires_grad=True)]
    loss, st = grpo_loss(new, [new[0].detach().clone()], [0.5], clip_eps=0.2)
    loss.backward()
    assert st.clipped == 0 and st.ratio_min == st.ratio_max == 1.0
    assert torch.allclose(new[0].grad, torch.tensor([-0.25, -0.25]))


def test_beta_needs_reference() -> None:
    with pytest.raises(ValueError, match="reference"):
        grpo_loss([torch.zeros(2)], [torch.zeros(2)], [1.0], clip_eps=0.2, beta=0.1)


def test_first_pass_ratio_is_one_with_a_real_policy(tmp_path) -> None:
    """mu = 1: log-probs recomputed in the update's forward equal those recorded at sampling."""
    from promptloop.train import PromptLoopTrainer, load_config

    cfg = load_config(None, [
        f"output_dir={tmp_path}", "pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava",
        "pipeline.num_inference_steps=4", "loop.num_refinements=2", "grpo.queries_per_step=2",
        "grpo.num_generations=3", "grpo.beta=0.04", "rewards={proxy: 1.0}", "data.train=world:train",
        "logging.progress_bar=false", "grpo.micro_batch_size=4",
    ])
    trainer = PromptLoopTrainer(cfg)
    batch = trainer.score(trainer.rollout(0))
    assert len(batch.actions) == 2 * 3 * 2 and batch.advantages is not None
    recorded = [a.old_logprobs.clone() for a in batch.actions]
    from promptloop.train.rollout import micro_batches, policy_input

    for mb in micro_batches(batch.actions, 4):
        again = trainer.policy.logprobs(policy_input(mb), [a.completion_ids for a in mb])
        for a, lp in zip(mb, again, strict=True):
            assert torch.allclose(lp, a.old_logprobs, atol=1e-5)
    stats = trainer.update(batch)
    assert stats["ratio_first_pass_max_dev"] < 1e-5
    assert stats["clip_fraction"] == 0.0
    assert stats["kl"] < 1e-6  # LoRA B starts at zero: the policy equals its reference on pass 1
    assert all(torch.equal(a.old_logprobs, r) for a, r in zip(batch.actions, recorded, strict=True))


@pytest.mark.parametrize("shared", [True, False])
def test_shared_noise_gives_a_group_one_initial_noise(shared: bool) -> None:
    """grpo.shared_noise: with the plain pipeline (no policy) the members of a group are then identical."""
    import numpy as np

    from promptloop.loop import PromptLoopSampler
    from promptloop.testing.pipelines import tiny_call_kwargs, tiny_sd_pipeline
    from promptloop.train.rollout import run_rollout

    sampler = PromptLoopSampler(tiny_sd_pipeline(seed=0), None)
    batch = run_rollout(sampler, [(0, "a red cat"), (1, "a green tree")], 2, seed=0, tag="step0", num_refinements=1,
                        schedule="random", groups_per_call=2, mode="none", shared_noise=shared,
                        call_kwargs={**tiny_call_kwargs("sd"), "num_inference_steps": 3})
    img = [np.asarray(im) for im in batch.images]
    assert np.array_equal(img[0], img[1]) == shared and np.array_equal(img[2], img[3]) == shared
    assert not np.array_equal(img[0], img[2])  # groups never share noise


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_first_pass_ratio_is_exactly_one_in_every_dtype(tmp_path, dtype: str) -> None:
    """Old log-probs come from the first pass's own forward: ratio exactly 1, KL 0, even in bf16."""
    from promptloop.train import PromptLoopTrainer, load_config

    cfg = load_config(None, [
        f"output_dir={tmp_path}", "pipeline.name_or_path=tiny:sd", "policy.name_or_path=tiny:llava",
        f"policy.dtype={dtype}", "pipeline.num_inference_steps=3", "loop.num_refinements=1",
        "grpo.queries_per_step=1", "grpo.num_generations=3", "grpo.beta=0.0", "rewards={proxy: 1.0}",
        "data.train=world:train", "logging.progress_bar=false", "grpo.micro_batch_size=2", "grpo.num_iterations=2",
        f"grpo.loss_type={'grpo' if dtype == 'bfloat16' else 'dr_grpo'}",
    ])
    trainer = PromptLoopTrainer(cfg)
    assert next(trainer.policy.model.parameters()).dtype == getattr(torch, dtype)
    stats = trainer.update(trainer.score(trainer.rollout(0)))
    assert stats["ratio_first_pass_max_dev"] == 0.0
    assert stats["sampling_logprob_max_dev"] >= 0.0
    assert math.isfinite(stats["loss"])


def test_loss_types_aggregate_tokens_as_documented() -> None:
    new = [torch.tensor([-1.0, -0.5, -2.0], requires_grad=True), torch.tensor([-0.2], requires_grad=True)]
    old = [n.detach() for n in new]
    adv = [1.0, -2.0]
    per_tok = [-torch.ones(3) * 1.0, -torch.ones(1) * -2.0]  # ratio 1: loss_t = -A
    dapo, _ = grpo_loss(new, old, adv, clip_eps=0.2)
    assert torch.isclose(dapo, torch.cat(per_tok).sum() / 4)
    grpo, _ = grpo_loss(new, old, adv, clip_eps=0.2, loss_type="grpo")
    assert torch.isclose(grpo, (per_tok[0].mean() + per_tok[1].mean()) / 2)
    dr, _ = grpo_loss(new, old, adv, clip_eps=0.2, loss_type="dr_grpo", max_tokens=8)
    assert torch.isclose(dr, torch.cat(per_tok).sum() / (2 * 8))
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(new, old, adv, clip_eps=0.2, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(new, old, adv, clip_eps=0.2, loss_type="ppo")
