"""The text binder: identity when new, mixes neighbouring words, saved and trained with the backbone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from promptloop.world.backbone import (
    TEXT_MAX_TOKENS,
    BackboneLoadError,
    load_backbone,
    load_text_encoder,
    save_backbone,
    text_binder_of,
)
from promptloop.world.text_binder import BoundTextEncoder, TextBinder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder()


def _states(tokenizer, encoder, prompt: str) -> torch.Tensor:
    t = tokenizer([prompt], padding="max_length", max_length=TEXT_MAX_TOKENS, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return encoder(t.input_ids, attention_mask=t.attention_mask)[0][0]


def _randomised(binder: TextBinder, seed: int = 0) -> TextBinder:
    """A binder whose zero-initialised up-projection got random weights (as training would give)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        binder.up.weight.copy_(torch.randn(binder.up.weight.shape, generator=g) * 0.5)
    return binder.eval()


def _sample(pipe, prompts: list[str], seed: int) -> np.ndarray:
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
    return pipe(prompts, num_inference_steps=4, guidance_scale=4.0, height=32, width=32, generator=gens,
                output_type="np").images


def test_a_new_binder_is_exactly_the_identity(minilm) -> None:
    tokenizer, encoder = minilm
    bound = BoundTextEncoder(encoder, TextBinder(max_tokens=TEXT_MAX_TOKENS))
    for prompt in ("a red circle left of a blue box", ""):
        assert torch.equal(_states(tokenizer, bound, prompt), _states(tokenizer, encoder, prompt))


def test_minilm_alone_does_not_bind_colours_to_shapes_and_the_binder_does(minilm) -> None:
    """MiniLM's state at a shape word ignores the colour before it; a (trained-like) binder's does not."""
    tokenizer, encoder = minilm
    a, b = "a red circle and a blue square", "a blue circle and a red square"
    circle = tokenizer.tokenize(a).index("circle") + 1  # + [CLS]
    raw = torch.cosine_similarity(_states(tokenizer, encoder, a)[circle], _states(tokenizer, encoder, b)[circle], dim=0)
    assert raw > 0.99
    torch.manual_seed(0)  # the binder's initialisation draws from the global generator
    bound = BoundTextEncoder(encoder, _randomised(TextBinder(max_tokens=TEXT_MAX_TOKENS)))
    mixed = torch.cosine_similarity(_states(tokenizer, bound, a)[circle], _states(tokenizer, bound, b)[circle], dim=0)
    assert 1 - mixed > 5 * (1 - raw)  # at least five times further apart than MiniLM keeps them


def test_binder_rejects_sequences_longer_than_its_window() -> None:
    with pytest.raises(ValueError, match="exceed the binder's window of 8"):
        TextBinder(num_layers=1, max_tokens=8)(torch.zeros(1, 9, 384))


def test_backbone_with_a_binder_saves_loads_and_samples_the_same(tmp_path: Path) -> None:
    pipe = load_backbone()
    assert text_binder_of(pipe) is None or isinstance(pipe.text_encoder, BoundTextEncoder)
    base_encoder = pipe.text_encoder.encoder if isinstance(pipe.text_encoder, BoundTextEncoder) else pipe.text_encoder
    pipe.text_encoder = BoundTextEncoder(base_encoder, _randomised(TextBinder(max_tokens=TEXT_MAX_TOKENS), 1))
    save_backbone(pipe, tmp_path / "bb", dtype=torch.float32)
    assert (tmp_path / "bb" / "text_binder" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "bb" / "model_index.json").read_text())["promptloop_text_binder"] is True
    again = load_backbone(tmp_path / "bb")
    assert isinstance(again.text_encoder, BoundTextEncoder)
    assert not any(p.requires_grad for p in again.text_encoder.parameters())
    prompts = ["a purple diamond above a cyan disc", "a small green triangle"]
    np.testing.assert_allclose(_sample(pipe, prompts, 3), _sample(again, prompts, 3), atol=1e-5)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tmp_path / "bb", corrupt)
    weights = corrupt / "text_binder" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(BackboneLoadError, match=r"text_binder/diffusion_pytorch_model.safetensors has 500 bytes"):
        load_backbone(corrupt)


def test_warm_start_trains_a_new_binder_with_the_unet_and_resumes(tmp_path: Path) -> None:
    from promptloop.world.train_backbone import BackboneTrainConfig, check_work_dir, export_snapshot, train_backbone

    pipe = load_backbone()
    if isinstance(pipe.text_encoder, BoundTextEncoder):  # a backbone made before binders: MiniLM straight into the UNet
        pipe.text_encoder = pipe.text_encoder.encoder
    save_backbone(pipe, tmp_path / "unbound", dtype=torch.float32)
    assert not (tmp_path / "unbound" / "text_binder").exists()
    cfg = BackboneTrainConfig(work_dir=str(tmp_path / "work"), out_dir=str(tmp_path / "out"), init_from=str(tmp_path / "unbound"),
                              pool_size=16, unet_steps=2, batch=4, lr=1e-2, warmup=1, ema_decay=0.5, text_binder_layers=1)
    out = train_backbone(cfg)
    new = load_backbone(out)
    binder = text_binder_of(new)
    assert binder is not None and len(binder.layers) == 1
    assert binder.up.weight.abs().sum() > 0  # trained away from the identity
    state = torch.load(tmp_path / "work" / "unet.pt", weights_only=True)
    assert state["step"] == 2 and "binder" in state
    export_snapshot(tmp_path / "work", tmp_path / "snap")  # the EMA of both parts, as a backbone
    snap = load_backbone(tmp_path / "snap")
    assert all(torch.equal(v, text_binder_of(snap).state_dict()[k]) for k, v in binder.state_dict().items())
    cfg.unet_steps = 3  # resuming extends the run: binder and UNet continue from the checkpoint
    train_backbone(cfg)
    assert torch.load(tmp_path / "work" / "unet.pt", weights_only=True)["step"] == 3
    config = json.loads((tmp_path / "work" / "config.json").read_text())
    config.pop("text_binder_layers")  # a work dir written before binders existed had none
    (tmp_path / "work" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="another config"):
        check_work_dir(cfg, tmp_path / "work")
    cfg = BackboneTrainConfig(work_dir=str(tmp_path / "again"), init_from=str(out), text_binder_layers=2)
    with pytest.raises(ValueError, match="has a 1-layer text binder"):
        train_backbone(cfg)  # a binder is continued as it is
