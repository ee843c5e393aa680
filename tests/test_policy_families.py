"""VLM families beyond LLaVA / Qwen2.5-VL as PromptLoop policies (Qwen2-VL, Qwen3-VL, Gemma 3, SmolVLM,
LLaVA-OneVision), with tiny
random configs built offline: chat template and image placement, log-probs of sampled completions against a one-pass
recomputation, the image reaching the LM, and LoRA gradients."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from promptloop.policy.base import PolicyInput
from promptloop.policy.vlm import VLMPolicy
from promptloop.testing.policies import (
    tiny_gemma3_policy,
    tiny_llava_onevision_policy,
    tiny_qwen2vl_policy,
    tiny_qwen3vl_policy,
    tiny_smolvlm_policy,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

QUERIES = ["a red circle left of a blue box", "a small green triangle", "a pink disc and an amber square"]
PROMPTS = ["a red circle left of a blue box", "a tiny green triangle on a black background", "a pink disc"]
BUILDERS = {"qwen2vl": tiny_qwen2vl_policy, "qwen3vl": tiny_qwen3vl_policy, "gemma3": tiny_gemma3_policy,
            "smolvlm": tiny_smolvlm_policy, "llava_onevision": tiny_llava_onevision_policy}


def _previews(n: int, seed: int = 0) -> list[Image.Image]:
    rs = np.random.RandomState(seed)
    return [Image.fromarray((rs.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def policy(request: pytest.FixtureRequest) -> VLMPolicy:
    return BUILDERS[request.param](seed=0)


def _family(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["policy"])


def _tokens(policy: VLMPolicy, row: torch.Tensor) -> list[str]:
    return policy.tokenizer.convert_ids_to_tokens([int(t) for t in row])


def test_chat_template_places_the_image_before_the_instruction(policy: VLMPolicy, request: pytest.FixtureRequest) -> None:
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3))
    texts = policy.render_texts(inp)
    family = _family(request)
    if family == "gemma3":
        _check_gemma3(policy, inp, texts)
        return
    if family == "smolvlm":
        _check_smolvlm(policy, inp, texts)
        return
    if family == "llava_onevision":
        _check_onevision(policy, inp, texts)
        return
    for t, q in zip(texts, QUERIES, strict=True):
        assert t.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
        assert t.endswith("<|im_end|>\n<|im_start|>assistant\n") and q in t
    enc = policy.encode(inp)
    pad = policy.processor.image_token_id
    # 4 merged image tokens per preview (a 4x4 patch grid, merge 2), inside vision_start / vision_end
    assert ((enc["input_ids"] == pad).sum(dim=1) == 4).all()
    assert torch.equal(enc["mm_token_type_ids"].bool(), enc["input_ids"] == pad)
    start = policy.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    for row in enc["input_ids"]:
        s = int((row == start).nonzero()[0])
        assert (row[s + 1 : s + 5] == pad).all()
    no_image = policy.render_texts(PolicyInput(list(QUERIES), list(PROMPTS), 0.4, None))
    assert all("<|image_pad|>" not in t for t in no_image)


@pytest.mark.parametrize("with_preview", [True, False])
def test_logprobs_of_sampled_completions_match_a_recomputation(policy: VLMPolicy, with_preview: bool) -> None:
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3) if with_preview else None)
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.9)):
        out = policy.propose(inp, temperature=temperature, top_p=top_p, seed=3)
        assert all(len(c) > 0 for c in out.completion_ids)
        again = policy.logprobs(inp, out.completion_ids, temperature=temperature)
        for a, b in zip(again, out.logprobs, strict=True):
            assert a.shape == b.shape and torch.isfinite(a).all() and (a <= 0).all()
            assert float((a - b).abs().max()) < 1e-5
    sampled = {int(t) for c in out.completion_ids for t in c}
    assert not sampled & set(policy.suppressed_token_ids)  # never an image / vision token


def test_lora_trains_and_the_reference_is_the_base(policy: VLMPolicy) -> None:
    import copy

    p = copy.deepcopy(policy)
    p.enable_lora(r=4, alpha=8)
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3))
    out = p.propose(inp, seed=1)
    lp = p.logprobs(inp, out.completion_ids, requires_grad=True)
    torch.cat(lp).sum().backward()
    grads = [q.grad for n, q in p.model.named_parameters() if "lora_" in n and q.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    with p.disabled_adapter() as ref:  # LoRA B starts at zero: the reference equals the base policy exactly
        base = ref.logprobs(inp, out.completion_ids)
    fresh = policy.logprobs(inp, out.completion_ids)
    assert all(torch.equal(a, b) for a, b in zip(base, fresh, strict=True))


def _check_gemma3(policy: VLMPolicy, inp: PolicyInput, texts: list[str]) -> None:
    """Gemma 3's own template: `<bos>` (written by the template, not added again by the tokenizer), the user turn
    with `<start_of_image>` before the instruction, which the processor expands to `<start_of_image>`, 4 soft tokens
    and `<end_of_image>`; token_type_ids mark the soft tokens (the bidirectional image block)."""
    for t, q in zip(texts, QUERIES, strict=True):
        assert t.startswith("<bos><start_of_turn>user\n<start_of_image>query")
        assert t.endswith("<end_of_turn>\n<start_of_turn>model\n") and q in t
    enc = policy.encode(inp)
    soft = policy.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    assert torch.equal(enc["token_type_ids"].bool(), enc["input_ids"] == soft)
    assert enc["pixel_values"].shape == (3, 3, 32, 32)
    for row, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        toks = [t for t, m in zip(_tokens(policy, row), mask, strict=True) if m]
        assert toks[:10] == ["<bos>", "<start_of_turn>", "user", "<start_of_image>", *["<image_soft_token>"] * 4,
                             "<end_of_image>", "query"]
        assert toks.count("<bos>") == 1 and toks[-3:] == ["<end_of_turn>", "<start_of_turn>", "model"]
    no_image = policy.render_texts(PolicyInput(list(QUERIES), list(PROMPTS), 0.4, None))
    assert all("<start_of_image>" not in t for t in no_image)


def _check_smolvlm(policy: VLMPolicy, inp: PolicyInput, texts: list[str]) -> None:
    """SmolVLM's own template (`User:<image>...<end_of_utterance>\nAssistant:`); each 64 px preview is split into
    2x2 tiles plus the global image, written exactly as SmolVLM's processor writes it."""
    from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

    for t, q in zip(texts, QUERIES, strict=True):
        assert t.startswith("<|im_start|>User:<image>query")
        assert t.endswith("<end_of_utterance>\nAssistant:") and q in t
    enc = policy.encode(inp)
    assert enc["pixel_values"].shape == (3, 5, 3, 32, 32)  # 4 tiles + the global image per preview
    expected = policy.tokenizer(get_image_prompt_string(2, 2, 4, fake_token_around_image="<fake_token_around_image>",
                                                        image_token="<image>", global_image_token="<global-img>"),
                                add_special_tokens=False)["input_ids"]
    for row, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        ids = [int(t) for t, m in zip(row, mask, strict=True) if m]
        toks = policy.tokenizer.convert_ids_to_tokens(ids)
        assert toks[:3] == ["<|im_start|>", "user", ":"] and toks[3:5] == ["<fake_token_around_image>", "<row_1_col_1>"]
        assert ids[3 : 3 + len(expected)] == expected and toks[3 + len(expected)] == "query"
        assert toks.count("<image>") == 20 and toks[-3:] == ["<end_of_utterance>", "assistant", ":"]
    no_image = policy.render_texts(PolicyInput(list(QUERIES), list(PROMPTS), 0.4, None))
    assert all("<image>" not in t for t in no_image)


def _check_onevision(policy: VLMPolicy, inp: PolicyInput, texts: list[str]) -> None:
    """LLaVA-OneVision's own template (`<|im_start|>user\n<image>\n...<|im_end|>\n<|im_start|>assistant\n`); each
    64 px preview is the base image and 2x2 tiles (anyres), whose `<image>` count the real processor's code gives and
    the model's features match."""
    from transformers import LlavaOnevisionProcessor

    for t, q in zip(texts, QUERIES, strict=True):
        assert t.startswith("<|im_start|>user\n<image>\nquery")
        assert t.endswith("<|im_end|>\n<|im_start|>assistant\n") and q in t
    enc = policy.encode(inp)
    assert enc["pixel_values"].shape == (3, 5, 3, 32, 32)  # the base image + 4 tiles per preview
    assert enc["image_sizes"].tolist() == [[64, 64]] * 3
    n = LlavaOnevisionProcessor._get_number_of_features(policy.processor, 64, 64, 32, 32)
    assert n == 16 + 8 * 8 + 8  # base features, the 8x8 grid of the 2x2 tiles, one newline per row
    with torch.no_grad():
        feats = policy.model.model.get_image_features(pixel_values=enc["pixel_values"], image_sizes=enc["image_sizes"],
                                                      batch_num_images=enc["batch_num_images"]).pooler_output
    assert [f.shape[0] for f in feats] == [n] * 3
    image = policy.tokenizer.convert_tokens_to_ids("<image>")
    for row, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True):
        toks = [t for t, m in zip(_tokens(policy, row), mask, strict=True) if m]
        assert toks[:2 + n + 1] == ["<|im_start|>", "user", *["<image>"] * n, "query"]
        assert int((row == image).sum()) == n and toks[-3:] == ["<|im_end|>", "<|im_start|>", "assistant"]
    no_image = policy.render_texts(PolicyInput(list(QUERIES), list(PROMPTS), 0.4, None))
    assert all("<image>" not in t for t in no_image)


@pytest.mark.parametrize("aspect", ["anyres_max_9", "anyres_max_1"])
def test_onevision_image_tokens_equal_the_model_features(aspect: str) -> None:
    """The stand-in is `LlavaOnevisionProcessor` with only an image processor and a tokenizer: it overrides nothing that
    writes the prompt, and for images of any shape (unpadding of non-square tile grids; `anyres_max_1` shrinks the
    grid) its `<image>` count is the real class's `_get_number_of_features` and the number of features the model packs."""
    from transformers import LlavaOnevisionProcessor

    from promptloop.policy.onevision import LlavaOnevisionImageTextProcessor

    cls = LlavaOnevisionImageTextProcessor
    own = {k for k in vars(cls) if not (k.startswith("__") and k.endswith("__")) or k in ("__init__", "__call__")}
    assert own == {"__init__", "to_dict", "save_pretrained"}  # no method of the prompt or the token count
    assert cls.get_attributes() == ["image_processor", "tokenizer"]
    policy = tiny_llava_onevision_policy(seed=0)
    proc, model = policy.processor, policy.model
    proc.vision_aspect_ratio = aspect
    model.config.vision_aspect_ratio = aspect  # the model's forward reads it from its config (not from its argument)
    rs = np.random.RandomState(0)
    sizes = [(64, 64), (32, 32), (24, 48), (64, 40), (40, 64), (17, 61)]
    images = [[Image.fromarray((rs.rand(h, w, 3) * 255).astype(np.uint8))] for h, w in sizes]
    text = policy.render_texts(PolicyInput(["a red circle"], ["a red circle"], 0.4, _previews(1)))[0]
    enc = proc(text=[text] * len(sizes), images=images, padding=True, return_tensors="pt")
    assert enc["image_sizes"].tolist() == [list(s) for s in sizes]
    counts = [int(c) for c in (enc["input_ids"] == proc.image_token_id).sum(dim=1)]
    expected = [LlavaOnevisionProcessor._get_number_of_features(proc, h, w, 32, 32) for h, w in sizes]
    assert counts == expected == proc._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"]
    with torch.no_grad():
        feats = model.model.get_image_features(pixel_values=enc["pixel_values"], image_sizes=enc["image_sizes"],
                                               batch_num_images=enc["batch_num_images"]).pooler_output
        assert [f.shape[0] for f in feats] == counts
        model(**enc)  # the model checks the placeholders against its features itself
    if aspect == "anyres_max_1":
        assert counts[0] == 16 + 4 * 4 + 4  # the 8x8 grid shrunk to 4x4


def test_the_image_reaches_the_language_model(policy: VLMPolicy) -> None:
    inp = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3))
    out = policy.propose(inp, seed=2)
    other = PolicyInput(list(QUERIES), list(PROMPTS), 0.4, _previews(3, seed=1))
    a = policy.logprobs(inp, out.completion_ids)
    b = policy.logprobs(other, out.completion_ids)
    assert max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True)) > 1e-4


def _assert_same_policy(loaded: VLMPolicy, policy: VLMPolicy, inp: PolicyInput, completion_ids: Any) -> None:
    """A reloaded policy renders, encodes and scores `completion_ids` exactly as the original."""
    assert loaded.render_texts(inp) == policy.render_texts(inp)
    a, b = policy.encode(inp), loaded.encode(inp)
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    again = loaded.logprobs(inp, completion_ids)
    assert all(torch.equal(x, y) for x, y in zip(again, policy.logprobs(inp, completion_ids), strict=True))


@pytest.mark.parametrize("family", ["gemma3", "smolvlm", "llava_onevision"])
def test_a_hub_format_folder_loads_back(family: str, tmp_path: Path) -> None:
    """Saved, then loaded as a Hub folder of the family is (SmolVLM2: `SmolVLMProcessor` with a video processor;
    AutoProcessor cannot load it without torchvision and num2words, so the loader falls back to `Idefics3Processor`;
    LLaVA-OneVision: `LlavaOnevisionProcessor`, which AutoProcessor cannot build without torchvision, so the loader
    falls back to `LlavaOnevisionImageTextProcessor`); the reloaded policy renders, encodes and scores exactly as the
    original."""
    from promptloop.integrity import write_manifest

    policy = BUILDERS[family](seed=0)
    inp = PolicyInput(list(QUERIES[:2]), list(PROMPTS[:2]), 0.4, _previews(2))
    out = policy.propose(inp, seed=1)
    policy.save_pretrained(tmp_path)
    if family == "smolvlm":
        from transformers.models.smolvlm.video_processing_smolvlm import SmolVLMVideoProcessor

        SmolVLMVideoProcessor().save_pretrained(tmp_path)
        for name in ("processor_config.json", "tokenizer_config.json"):
            f = tmp_path / name
            f.write_text(f.read_text().replace('"Idefics3Processor"', '"SmolVLMProcessor"'))
        write_manifest(tmp_path)
        from transformers import AutoProcessor

        with pytest.raises(ImportError, match="Torchvision|num2words"):  # AutoProcessor on SmolVLM2's folder, here
            AutoProcessor.from_pretrained(tmp_path)
    if family == "llava_onevision":
        import json

        from transformers import AutoProcessor
        from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

        for name in ("processor_config.json", "tokenizer_config.json"):  # the Hub folder's processor class
            assert json.loads((tmp_path / name).read_text())["processor_class"] == "LlavaOnevisionProcessor"
        LlavaOnevisionVideoProcessor().save_pretrained(tmp_path)  # as a Hub folder of the family has one
        write_manifest(tmp_path)
        with pytest.raises(ImportError, match="Torchvision"):  # AutoProcessor on the folder, here
            AutoProcessor.from_pretrained(tmp_path)
    loaded = VLMPolicy.from_pretrained(tmp_path)
    assert type(loaded.processor).__name__ == {"gemma3": "Gemma3Processor", "smolvlm": "Idefics3Processor",
                                               "llava_onevision": "LlavaOnevisionImageTextProcessor"}[family]
    _assert_same_policy(loaded, policy, inp, out.completion_ids)


def test_a_llava_hf_layout_onevision_folder_loads(tmp_path: Path) -> None:
    """A LLaVA-OneVision folder laid out as the llava-hf repos are (the image processor in preprocessor_config.json,
    only the processor's settings in processor_config.json, the chat template in chat_template.json, a video
    processor config) loads through the same fallback and scores exactly as the original."""
    import json

    from promptloop.integrity import write_manifest

    policy = tiny_llava_onevision_policy(seed=0)
    inp = PolicyInput(list(QUERIES[:2]), list(PROMPTS[:2]), 0.4, _previews(2))
    out = policy.propose(inp, seed=1)
    policy.save_pretrained(tmp_path)
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    LlavaOnevisionVideoProcessor().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "processor_config.json").read_text())
    image_cfg = {**cfg.pop("image_processor"), "processor_class": "LlavaOnevisionProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(image_cfg))
    (tmp_path / "processor_config.json").write_text(json.dumps(cfg))
    template = tmp_path / "chat_template.jinja"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template.read_text()}))
    template.unlink()
    tok_cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "chat_template" not in tok_cfg  # so the template comes from chat_template.json
    write_manifest(tmp_path)
    loaded = VLMPolicy.from_pretrained(tmp_path)
    assert type(loaded.processor).__name__ == "LlavaOnevisionImageTextProcessor"
    assert loaded.processor.image_processor.image_grid_pinpoints == policy.processor.image_processor.image_grid_pinpoints
    _assert_same_policy(loaded, policy, inp, out.completion_ids)
