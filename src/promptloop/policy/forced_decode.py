"""Constrained sampling that skips the model on forced tokens (`VLMPolicy.generate`'s fast path).

Under a `DecodingConstraint` most completion tokens are often *forced*: after their prefix the constraint allows
exactly one token (the world policies copy the user's query word by word). transformers' `generate` still runs a
model forward and a sampling step for every token of every row. This loop instead:

- appends a forced token without looking at the model: its log-prob under the constrained, temperature-scaled
  distribution (the module docstring of `promptloop.policy.vlm`) is exactly 0, and the sampled token could only
  be that one;
- feeds the tokens appended since a row's last forward (its sampled token and the forced ones after it) in one
  forward over the KV cache, left-padded to the longest row of the step (padding slots masked, position ids
  counting real tokens only), so that the number of forwards is the largest number of *free* decisions of a row,
  not the longest completion;
- drops finished rows from the cache, so that the long rewrites do not carry the short ones;
- prefills the prompts in groups of similar length (`length_groups`), not all padded to the longest;
- computes each free decision's log-prob on the spot (no second pass over all steps with the constraint).

Seeded sampling draws what `generate` draws. For one sample, `torch.multinomial(probs, 1)` draws q ~ Exp(1) for
the whole (batch, vocab) matrix and takes argmax(probs / q) per row (the exponential race); this loop draws the
same matrix for each step t of the completions, in order and for the whole batch, and a row's free decision at
its step t takes argmax(probs / q_t[row]). With equal logits the completions are therefore those of `generate`
for the same seed (and the RNG is left where `generate` leaves it); the logits of a chunked forward differ from one-token forwards only by float rounding
(tested: same completions, log-probs equal to 1e-5). Greedy decoding takes the argmax as `generate` does.

Only models whose positions are the count of earlier real tokens (1-D RoPE) and whose attention is full (no
sliding window, no token-type masks) take this path; `VLMPolicy.fast_decoding` says which do.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from promptloop.policy.constraint import DecodingConstraint, allowed_ids

FORWARD_COST_TOKENS = 48  # a forward's fixed cost in prompt tokens (CPU, tiny model): more groups cost more
# keys of a processor's output that steer positions or masks beyond the prompt (those models use `generate`)
_POSITION_KEYS = ("token_type_ids", "mm_token_type_ids", "image_grid_thw", "video_grid_thw")


def supports_forced_decoding(base_model: Any, enc: dict[str, torch.Tensor]) -> bool:
    """Whether `base_model` on inputs `enc` may take the forced-token loop: 1-D positions counting real tokens,
    full attention in every layer, a `DynamicCache`-style cache argument."""
    if any(k in enc for k in _POSITION_KEYS):
        return False
    cfg = base_model.config.get_text_config(decoder=True) if hasattr(base_model.config, "get_text_config") \
        else base_model.config
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None:
        if any(t != "full_attention" for t in layer_types):
            return False
    elif getattr(cfg, "sliding_window", None) is not None:
        return False
    if getattr(cfg, "rope_scaling", None) and "mrope_section" in (cfg.rope_scaling or {}):
        return False
    return _cache_kwarg(base_model) is not None


def _cache_kwarg(base_model: Any) -> str | None:
    """The name the model's forward takes its KV cache under (`cache` from transformers 5.x, else
    `past_key_values`)."""
    params = inspect.signature(type(base_model).forward).parameters
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


class _Row:
    """One sample's completion in progress."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens: list[int] = []
        self.logprobs: list[float] = []
        self.fed = 0  # completion tokens already in the KV cache
        self.fresh = True  # the last forward's logits are those after `tokens` (not yet used)
        self.done = False


def forced_decode(
    model: Any,
    base_model: Any,
    enc: dict[str, torch.Tensor],
    queries: Sequence[str],
    constraint: DecodingConstraint,
    *,
    eos_ids: Sequence[int],
    suppressed_ids: Sequence[int],
    vocab_size: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    position_ids: torch.Tensor,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Sample one constrained completion per row of `enc` (left-padded prompts whose positions, as `generate`
    computes them, are `position_ids`): (token ids incl. end-of-turn, per-token log-probs), as `VLMPolicy.generate`
    returns them. `model` is called (it may be PEFT-wrapped); `base_model` names the cache argument and builds the
    cache. Call under `torch.no_grad()` (and a seeded RNG)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    device = enc["input_ids"].device
    eos, suppressed = {int(e) for e in eos_ids}, {int(s) for s in suppressed_ids}
    do_sample = temperature > 0
    warpers = LogitsProcessorList()  # the warpers `generate` adds after the processors, in its order
    if do_sample and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if do_sample and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    t_scale = temperature if do_sample else 1.0
    sup = torch.tensor(sorted(suppressed), dtype=torch.long, device=device)
    batch = len(queries)
    if max_new_tokens <= 0:
        return [torch.zeros(0, dtype=torch.long, device=device)] * batch, [torch.zeros(0, device=device)] * batch
    rows = [_Row(q) for q in queries]
    races: list[torch.Tensor] = []  # q_t ~ Exp(1), (batch, vocab), drawn in step order as `multinomial` would

    def race(step: int) -> torch.Tensor:
        while len(races) <= step:
            races.append(torch.empty((batch, vocab_size), dtype=torch.float32, device=device).exponential_(1))
        return races[step]

    def push(row: _Row, token: int, logprob: float) -> None:
        row.tokens.append(token)
        row.logprobs.append(logprob)
        row.done = token in eos or len(row.tokens) >= max_new_tokens
        row.fresh = False  # the logits were those before this token

    cache_kw = _cache_kwarg(base_model)
    assert cache_kw is not None  # supports_forced_decoding checked it
    mask = enc["attention_mask"]
    cache, logits = _prefill(model, base_model.config, cache_kw, enc, position_ids)
    alive = list(range(batch))  # the rows in the cache, in cache order

    def advance(row: _Row) -> list[int] | None:
        """Append the forced tokens after the row's prefix; the ids allowed at the next free position."""
        while not row.done:
            ids = allowed_ids(constraint, row.query, row.tokens, vocab_size, eos, suppressed)
            if ids is None or len(ids) > 1:
                return ids
            push(row, ids[0], 0.0)  # forced: probability 1 under the constrained distribution
        return None

    while True:
        # 1. each live row with fresh logits makes its free decision, then appends the forced tokens after it
        decide: list[tuple[int, int, list[int] | None]] = []  # (cache index, row, allowed ids or None)
        for ci, r in enumerate(alive):
            ids = advance(rows[r])  # forced tokens before the first free decision (right after the prefill)
            if rows[r].fresh and not rows[r].done:
                decide.append((ci, r, ids))
        if decide:
            _decide(rows, decide, logits, race, sup, warpers, t_scale, do_sample, push)
            for _, r, _ in decide:
                advance(rows[r])
        # 2. drop finished rows from the cache; feed the others' new tokens in one forward
        keep = [ci for ci, r in enumerate(alive) if not rows[r].done]
        if not keep:
            break
        if len(keep) < len(alive):
            idx = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(idx)
            mask = mask[idx]
            alive = [alive[ci] for ci in keep]
        new = [rows[r].tokens[rows[r].fed:] for r in alive]
        width = max(len(t) for t in new)
        chunk = torch.zeros((len(alive), width), dtype=torch.long, device=device)
        chunk_mask = torch.zeros((len(alive), width), dtype=mask.dtype, device=device)
        for i, toks in enumerate(new):
            chunk[i, width - len(toks):] = torch.tensor(toks, dtype=torch.long, device=device)
            chunk_mask[i, width - len(toks):] = 1
        mask = torch.cat([mask, chunk_mask], dim=1)
        positions = (mask.long().cumsum(-1) - 1)[:, -width:].clamp(min=0)
        out = model(input_ids=chunk, attention_mask=mask, position_ids=positions, **{cache_kw: cache},
                    use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1].float()
        for r in alive:
            rows[r].fed = len(rows[r].tokens)
            rows[r].fresh = True
    if do_sample:  # the draws of generate's last steps too, so that an unseeded caller's RNG stream goes on alike
        race(max(len(r.tokens) for r in rows) - 1)
    ids_out = [torch.tensor(r.tokens, dtype=torch.long, device=device) for r in rows]
    lps_out = [torch.tensor(r.logprobs, dtype=torch.float32, device=device) for r in rows]
    return ids_out, lps_out


def length_groups(lengths: Sequence[int], forward_cost: int = FORWARD_COST_TOKENS) -> list[list[int]]:
    """Rows (indices into `lengths`) grouped by prompt length so that prefilling each group left-padded to its
    longest prompt costs least: sum over groups of rows x longest length, plus `forward_cost` tokens per extra
    forward (its fixed cost). Contiguous runs of the rows sorted by length (optimal for this cost; O(n^2))."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    srt = [lengths[i] for i in order]
    n = len(srt)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of grouping the j shortest rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + (j - i) * srt[j - 1] + (forward_cost if i else 0)
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def _prefill(model: Any, config: Any, cache_kw: str, enc: dict[str, torch.Tensor],
             position_ids: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """The prompts' KV cache (left-padded as `enc`) and their last logits, computed in length groups: a short
    prompt is not padded to the longest one of the batch (a third of the prefill's tokens at batch 16). Each group's
    keys and values are left-padded (zeros, masked out by `enc`'s attention mask) into one cache."""
    from transformers import DynamicCache

    mask = enc["attention_mask"]
    lengths = [int(v) for v in mask.sum(-1)]
    groups = length_groups(lengths)
    if len(groups) == 1:
        cache = DynamicCache(config=config)
        out = model(**enc, position_ids=position_ids, **{cache_kw: cache}, use_cache=True, logits_to_keep=1)
        return cache, out.logits[:, -1].float()
    width = mask.shape[1]
    rows = torch.tensor([r for g in groups for r in g], dtype=torch.long, device=mask.device)
    back = torch.argsort(rows)  # from group order back to the batch order
    layers: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    logits = []
    for g in groups:
        idx = torch.tensor(g, dtype=torch.long, device=mask.device)
        w = max(lengths[r] for r in g)
        sub = {k: v[idx] for k, v in enc.items()}
        sub["input_ids"], sub["attention_mask"] = sub["input_ids"][:, -w:], sub["attention_mask"][:, -w:]
        cache = DynamicCache(config=config)
        out = model(**sub, position_ids=position_ids[idx][..., -w:], **{cache_kw: cache}, use_cache=True,
                    logits_to_keep=1)
        logits.append(out.logits[:, -1].float())
        pad = (0, 0, width - w, 0)  # left-pad the sequence axis of (rows, heads, seq, head_dim)
        layers.append([(torch.nn.functional.pad(item[0], pad), torch.nn.functional.pad(item[1], pad))
                       for item in cache])
    merged = [(torch.cat([g[i][0] for g in layers])[back], torch.cat([g[i][1] for g in layers])[back])
              for i in range(len(layers[0]))]
    return DynamicCache(ddp_cache_data=merged, config=config), torch.cat(logits)[back]


def _decide(rows: list[_Row], decide: list[tuple[int, int, list[int] | None]], logits: torch.Tensor,
            race: Any, sup: torch.Tensor, warpers: Any, t_scale: float, do_sample: bool, push: Any) -> None:
    """The free decisions of one step, batched: mask (suppressed, then disallowed), log-prob under
    softmax(masked / T), the warpers, then the exponential race (or the argmax)."""
    cis = torch.tensor([ci for ci, _, _ in decide], dtype=torch.long, device=logits.device)
    scores = logits[cis]
    if sup.numel():
        scores = scores.index_fill(-1, sup, float("-inf"))
    allowed = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    for i, (_, _, ids) in enumerate(decide):
        if ids is not None:
            allowed[i] = False
            allowed[i, ids] = True
    scores = scores.masked_fill(~allowed, float("-inf"))
    logp = torch.log_softmax(scores / t_scale, dim=-1)
    if do_sample:
        probs = torch.softmax(warpers(None, scores), dim=-1)
        q = torch.stack([race(len(rows[r].tokens))[r] for _, r, _ in decide])
        picks = (probs / q).argmax(dim=-1)
    else:
        picks = scores.argmax(dim=-1)
    for i, (_, r, _) in enumerate(decide):
        tok = int(picks[i])
        push(rows[r], tok, float(logp[i, tok]))
