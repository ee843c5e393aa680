"""How much of an object's identity the text states carry at each of its words (binding), before and
after the backbone's text binder.

For world captions with two or more objects of different colours, a linear probe (trained on 80 % of
the tokens, scored on the rest) reads the object's colour off the state at its shape word, and its shape
off the state at its colour word; `fixed_probe_accuracy` is the accuracy of the binding loss's fixed
random probe (world.binding_loss) over every labelled token. Prints one JSON object.

    python benchmarks/binding_probe.py [--backbone DIR] [--n 6000]
"""

from __future__ import annotations

import argparse
import json
import random

import torch
import torch.nn.functional as F

from promptloop.world.backbone import TEXT_MAX_TOKENS, load_backbone
from promptloop.world.shapes.binding_loss import ATTRIBUTES, phrase_labels, probe_directions
from promptloop.world.shapes.grammar import _LOOKUP, training_caption
from promptloop.world.shapes.scene import SceneSampler
from promptloop.world.text_binder import BoundTextEncoder


def _linear_probe(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    """Held-out accuracy of a logistic-regression probe (80/20 split, standardised features)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    x, y = x[perm], y[perm]
    cut = int(0.8 * len(x))
    mu, sd = x[:cut].mean(0), x[:cut].std(0) + 1e-5
    x = (x - mu) / sd
    lin = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(500):
        opt.zero_grad()
        F.cross_entropy(lin(x[:cut]), y[:cut]).backward()
        opt.step()
    with torch.no_grad():
        return float((lin(x[cut:]).argmax(1) == y[cut:]).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default=None, help="backbone folder (default: the shipped one)")
    ap.add_argument("--n", type=int, default=6000, help="captions drawn (those with 2+ colours are kept)")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = load_backbone(args.backbone)
    tok = pipe.tokenizer
    rng, sampler = random.Random(5), SceneSampler(7, "train")
    captions = [training_caption(sampler.sample(), rng) for _ in range(args.n)]
    labels = phrase_labels(tok, captions, TEXT_MAX_TOKENS).long()
    ids = tok(captions, padding="max_length", max_length=TEXT_MAX_TOKENS, truncation=True, return_tensors="pt")
    encoder = pipe.text_encoder
    with torch.no_grad():
        raw = torch.cat([(encoder.encoder if isinstance(encoder, BoundTextEncoder) else encoder)(ids.input_ids[i:i + 500])[0]
                         for i in range(0, len(captions), 500)])
        bound = encoder.binder(raw) if isinstance(encoder, BoundTextEncoder) else None
    kinds = torch.full(ids.input_ids.shape, -1)
    for n in range(len(captions)):
        for t, token in enumerate(tok.convert_ids_to_tokens(ids.input_ids[n])):
            kind = _LOOKUP.get(token, ("", ""))[0]
            kinds[n, t] = {"colour": 0, "shape": 1}.get(kind, -1)
    multi = torch.tensor([len(set(lab[lab[:, 0] >= 0, 0].tolist())) >= 2 for lab in labels])
    at_shape = (kinds == 1) & multi[:, None] & (labels[..., 0] >= 0)
    at_colour = (kinds == 0) & multi[:, None] & (labels[..., 1] >= 0)
    directions = probe_directions(raw.shape[-1], 0)
    result: dict[str, object] = {"backbone": args.backbone or "shipped", "captions": len(captions),
                                 "shape_tokens": int(at_shape.sum()), "colour_tokens": int(at_colour.sum())}
    for name, states in (("minilm", raw), ("bound", bound)):
        if states is None:
            continue
        result[f"{name}_colour_at_shape_word"] = _linear_probe(states[at_shape], labels[..., 0][at_shape])
        result[f"{name}_shape_at_colour_word"] = _linear_probe(states[at_colour], labels[..., 1][at_colour])
        logits, start, hits = states @ directions, 0, []
        for a, (_, values) in enumerate(ATTRIBUTES):
            mask = labels[..., a] >= 0
            pred = logits[..., start : start + len(values)].argmax(-1)
            hits.append(float((pred[mask] == labels[..., a][mask]).float().mean()))
            start += len(values)
        result[f"{name}_fixed_probe_accuracy"] = dict(zip([n for n, _ in ATTRIBUTES], hits, strict=True))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
