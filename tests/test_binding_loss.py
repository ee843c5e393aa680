"""The binder's auxiliary binding loss: per-token object labels, the fixed probe, and its use in training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from promptloop.world.backbone import TEXT_MAX_TOKENS, load_text_encoder
from promptloop.world.shapes.binding_loss import ATTRIBUTES, binding_loss, phrase_labels, probe_directions
from promptloop.world.text_binder import TextBinder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder()


def _by_token(tokenizer, caption: str, labels: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(caption)["input_ids"])
    return [(t, tuple(labels[i].tolist())) for i, t in enumerate(tokens)]


def test_every_word_of_an_object_phrase_gets_that_objects_attributes(minilm) -> None:
    tokenizer, _ = minilm
    captions = ["two shapes: a diamond in orange, left of the crimson box",
                "a big red circle on the left and a tiny blue square"]
    labels = phrase_labels(tokenizer, captions, TEXT_MAX_TOKENS)
    assert labels.shape == (2, TEXT_MAX_TOKENS, 3) and labels.dtype == torch.int8
    orange_diamond, red_square = (1, 3, -1), (0, 1, -1)  # colour, shape, size (-1: not said)
    none = (-1, -1, -1)
    assert _by_token(tokenizer, captions[0], labels[0]) == [
        ("[CLS]", none), ("two", none), ("shapes", none), (":", none),
        ("a", orange_diamond), ("diamond", orange_diamond), ("in", orange_diamond), ("orange", orange_diamond),
        (",", none), ("left", none), ("of", none),
        ("the", red_square), ("crimson", red_square), ("box", red_square), ("[SEP]", none)]
    big_red_circle, tiny_blue_square = (0, 0, 1), (5, 1, 0)
    assert _by_token(tokenizer, captions[1], labels[1]) == [
        ("[CLS]", none), ("a", big_red_circle), ("big", big_red_circle), ("red", big_red_circle),
        ("circle", big_red_circle), ("on", big_red_circle), ("the", none), ("left", none), ("and", none),
        ("a", tiny_blue_square), ("tiny", tiny_blue_square), ("blue", tiny_blue_square),
        ("square", tiny_blue_square), ("[SEP]", none)]
    assert (labels[:, 15:] == -1).all()  # padding


def test_the_fixed_probe_loss_by_hand() -> None:
    dim = 384
    d = probe_directions(dim, seed=0)
    n_values = [len(v) for _, v in ATTRIBUTES]
    assert d.shape == (dim, sum(n_values))
    assert torch.allclose(d.T @ d, torch.eye(sum(n_values)), atol=1e-5)  # orthonormal
    assert torch.equal(d, probe_directions(dim, seed=0))  # fixed: a function of the seed only
    labels = torch.tensor([[[2, 1, 0], [-1, -1, -1]]], dtype=torch.int8)
    # a state orthogonal to every direction reads 0 everywhere: uniform cross-entropy, log(n) per attribute
    zero = torch.zeros(1, 2, dim)
    expected = sum(math.log(n) for n in n_values) / 3
    assert binding_loss(zero, labels, d).item() == pytest.approx(expected, rel=1e-6)
    # a state holding its object's three directions at length 20 is read almost surely right
    offsets = [0, n_values[0], n_values[0] + n_values[1]]
    bound = torch.zeros(1, 2, dim)
    for a, v in enumerate((2, 1, 0)):
        bound[0, 0] += 20 * d[:, offsets[a] + v]
    assert binding_loss(bound, labels, d).item() < 1e-6
    # nothing labelled: no loss
    assert binding_loss(bound, torch.full_like(labels, -1), d).item() == 0.0


def test_a_binder_learns_to_bind_where_minilm_alone_does_not(minilm) -> None:
    tokenizer, encoder = minilm
    captions = ["a red circle and a blue square", "a blue circle and a red square",
                "a green triangle above a pink diamond", "a pink triangle above a green diamond"]
    t = tokenizer(captions, padding="max_length", max_length=TEXT_MAX_TOKENS, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(t.input_ids, attention_mask=t.attention_mask)[0]
    labels = phrase_labels(tokenizer, captions, TEXT_MAX_TOKENS)
    d = probe_directions(states.shape[-1], seed=0)
    before = binding_loss(states, labels, d).item()
    torch.manual_seed(0)
    binder = TextBinder(num_layers=1, max_tokens=TEXT_MAX_TOKENS)
    opt = torch.optim.Adam(binder.parameters(), lr=3e-3)
    for _ in range(60):
        loss = binding_loss(binder(states), labels, d)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = binding_loss(binder(states), labels, d).item()
    assert before > 1.0 and after < 0.2 * before


def test_training_with_the_binding_loss_on_a_pool_cached_without_captions(tmp_path: Path) -> None:
    from promptloop.world.backbone import DEFAULT_BACKBONE
    from promptloop.world.train_backbone import BackboneTrainConfig, train_backbone

    cfg = BackboneTrainConfig(work_dir=str(tmp_path / "work"), out_dir=str(tmp_path / "out"), init_from=str(DEFAULT_BACKBONE),
                              pool_size=16, unet_steps=2, batch=4, lr=1e-2, warmup=1, ema_decay=0.5, binding_loss=0.5)
    train_backbone(cfg)
    pool = torch.load(tmp_path / "work" / "pool.pt", weights_only=True)
    assert len(pool["captions"]) == 16
    # a pool cached before captions were kept: they are regenerated and checked against its record
    del pool["captions"]
    torch.save(pool, tmp_path / "work" / "pool.pt")
    cfg.unet_steps = 3
    train_backbone(cfg)
    assert torch.load(tmp_path / "work" / "unet.pt", weights_only=True)["step"] == 3
    record = tmp_path / "work" / "pool_captions.txt"
    record.write_text("a caption this code never generated\n")
    cfg.unet_steps = 4
    with pytest.raises(ValueError, match="other captions"):
        train_backbone(cfg)
