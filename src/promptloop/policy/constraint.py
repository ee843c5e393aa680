"""Constrained decoding: which tokens a policy may emit after a completion prefix.

A `DecodingConstraint` restricts the policy's action space per sample (e.g. "copy the user's query and
only insert words from an edit vocabulary"). `VLMPolicy` applies it in exactly the same way when it
samples (a logits processor) and when it scores given completions (`VLMPolicy.logprobs`): disallowed
tokens get logit -inf before the temperature-scaled softmax. The constrained policy is therefore a
proper distribution, pi_c(a_t | s, a_<t) = softmax over the allowed tokens, and GRPO's importance
ratios and KL stay exact (the reference policy is constrained the same way).

A prefix that already holds an end-of-turn token is not restricted (generation pads finished rows).
When a constraint allows nothing that the model may emit, end-of-turn is allowed, so a row never ends
up with an all -inf distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class DecodingConstraint(Protocol):
    """Token ids allowed after `prefix` (the completion so far) for a sample whose user query is `query`;
    None allows every token. Implementations must be deterministic functions of (query, prefix) and are
    built from a tokenizer: `Constraint(tokenizer)` (that is how a saved policy restores them)."""

    def allowed(self, query: str, prefix: Sequence[int]) -> Sequence[int] | None: ...


def allowed_ids(constraint: DecodingConstraint, query: str, prefix: Sequence[int], vocab_size: int, eos: set[int],
                suppressed: set[int]) -> list[int] | None:
    """The ids a row may draw after `prefix` (None: unrestricted): the constraint's, less out-of-vocabulary and
    suppressed ids, or end-of-turn when none is left. A single id means the token is forced (probability 1)."""
    if eos.intersection(prefix):
        return None
    ids = constraint.allowed(query, prefix)
    if ids is None:
        return None
    return [int(v) for v in ids if 0 <= int(v) < vocab_size and int(v) not in suppressed] or sorted(eos)


def _restrict(row: torch.Tensor, constraint: DecodingConstraint, query: str, prefix: Sequence[int], eos: set[int],
              suppressed: set[int]) -> None:
    """Narrow the boolean mask `row` (V,) in place to the ids allowed after `prefix` (never to none)."""
    keep = allowed_ids(constraint, query, prefix, row.shape[0], eos, suppressed)
    if keep is None:
        return
    row[:] = False
    row[keep] = True


def allowed_mask(
    constraint: DecodingConstraint,
    queries: Sequence[str],
    completions: torch.Tensor,
    vocab_size: int,
    eos_ids: Sequence[int],
    suppressed_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Boolean mask (B, S, V): True where token v may be drawn at position s of row b, i.e. after the
    prefix `completions[b, :s]` (completions (B, S)); rows past their end-of-turn are unrestricted."""
    b, s = completions.shape
    mask = torch.ones((b, s, vocab_size), dtype=torch.bool)
    eos, suppressed = {int(e) for e in eos_ids}, {int(x) for x in suppressed_ids}
    for i, row in enumerate(completions.detach().cpu().tolist()):
        for t in range(s):
            _restrict(mask[i, t], constraint, queries[i], row[:t], eos, suppressed)
    return mask.to(completions.device)


class ConstraintLogitsProcessor:
    """A transformers logits processor applying `constraint` to the rows of a `generate` call whose
    prompts are `prompt_length` tokens long (left padded) and whose user queries are `queries`."""

    def __init__(self, constraint: DecodingConstraint, queries: Sequence[str], prompt_length: int,
                 eos_ids: Sequence[int], suppressed_ids: Sequence[int] = ()) -> None:
        self.constraint = constraint
        self.queries = list(queries)
        self.prompt_length = prompt_length
        self.eos = {int(e) for e in eos_ids}
        self.suppressed = {int(x) for x in suppressed_ids}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = input_ids[:, self.prompt_length:].detach().cpu().tolist()
        mask = torch.ones(scores.shape, dtype=torch.bool)
        for i, prefix in enumerate(rows):
            _restrict(mask[i], self.constraint, self.queries[i], prefix, self.eos, self.suppressed)
        return scores.masked_fill(~mask.to(scores.device), float("-inf"))
