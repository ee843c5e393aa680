"""Tokenizer and synthetic supervised rewrite data for the Shapes-world refinement policy.

Tokenizer: a word-level tokenizer (`tokenizers` WordLevel, lower-casing, whitespace/punctuation
pre-tokenizer) over every word the world grammar can produce (colour, shape, size, background,
relation and position words, fillers, intensifiers, punctuation), the words of the policy's
instruction templates and chat roles, the numbers 0..100 (progress in percent), and the special
tokens `<pad> <s> </s> <unk> <image>` plus chat markers `<|user|> <|assistant|> <|system|>`.

SFT example (`make_example`): a scene and a query (a subset of its facts); the user query is a plain
caption of the query; the current prompt is the query or another paraphrase of it; the preview is a
render of a scene that only partly matches the query (one asserted fact corrupted: colour leaked from
another object or wrong, wrong shape, object missing, wrong size / position / background, relation
swapped — or no error), optionally blurred and noised like an x0 preview. The target rewrite is
another caption of the SAME query, emphasised on what the preview gets wrong: the corrupted object's
colour intensified or repeated, and explicit size / position / background facts of the true scene
added (consistent with the query, which is a subset of the scene's facts). Every target parses under
`grammar.parse` and keeps every fact of the query (`keeps_query_facts`); `make_example` checks both.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from promptloop.policy.instruction import (
    COMPACT_HISTORY,
    COMPACT_IMAGE_NOTE,
    COMPACT_INSTRUCTION,
    COMPACT_NO_IMAGE_NOTE,
    DEFAULT_HISTORY,
    DEFAULT_IMAGE_NOTE,
    DEFAULT_INSTRUCTION,
    DEFAULT_NO_IMAGE_NOTE,
)
from promptloop.world import grammar
from promptloop.world.render import object_coverage
from promptloop.world.scene import (
    BACKGROUNDS,
    COLOURS,
    GRID,
    INVERSE_RELATION,
    SHAPES,
    SIZES,
    ObjectQuery,
    Query,
    Scene,
    SceneObject,
    SceneSampler,
)

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<image>", "<|user|>", "<|assistant|>", "<|system|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}{{ ' ' + message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}{{ ' <image>' }}{% else %}{{ ' ' + c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ ' </s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_WORD_RE = re.compile(r"\w+|[^\w\s]")
PREVIEW_SIZE = 32


def world_words() -> list[str]:
    """Every word and punctuation mark of the world's captions and of the policy's instructions."""
    words: set[str] = set()
    for table in (grammar.COLOUR_WORDS, grammar.SHAPE_WORDS, grammar.SIZE_WORDS, grammar.BACKGROUND_WORDS,
                  grammar.RELATION_WORDS):
        for phrases in table.values():
            for ph in phrases:
                words.update(_WORD_RE.findall(ph))
    words.update(grammar.INTENSIFIERS)
    words.update(grammar.FILLER)
    words.update("a an the top bottom left right centre center middle at on in to of background".split())
    words.update(", : . ; % ! ? ' \" -".split())
    for text in (DEFAULT_INSTRUCTION, DEFAULT_IMAGE_NOTE, DEFAULT_NO_IMAGE_NOTE, DEFAULT_HISTORY,
                 COMPACT_INSTRUCTION, COMPACT_IMAGE_NOTE, COMPACT_NO_IMAGE_NOTE, COMPACT_HISTORY):
        words.update(_WORD_RE.findall(re.sub(r"\{\w+\}", " ", text).lower()))
    words.update("user assistant system prompt query rewrite".split())
    words.update(str(i) for i in range(101))
    return sorted(words)


def build_world_tokenizer(extra_special_tokens: tuple[str, ...] = ()) -> object:
    """The word-level `PreTrainedTokenizerFast` of the Shapes world (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS) + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for w in world_words():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512,
    )
    fast.add_special_tokens({"additional_special_tokens": specials[4:]})
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


# ----------------------------------------------------------------------------- facts


def keeps_query_facts(query: Query, candidate: Query) -> bool:
    """Whether `candidate` asserts every fact of `query`: same objects (matched by colour, which is
    unique per object) with the same shape and every asserted size / column / row, the asserted
    background, and every relation (up to inversion). Extra facts in `candidate` are allowed."""
    if len(candidate.objects) != len(query.objects):
        return False
    by_colour = {o.colour: o for o in candidate.objects}
    for o in query.objects:
        c = by_colour.get(o.colour)
        if c is None or c.shape != o.shape:
            return False
        for attr in ("size", "column", "row"):
            if getattr(o, attr) is not None and getattr(c, attr) != getattr(o, attr):
                return False
    if query.background is not None and candidate.background != query.background:
        return False

    def rels(q: Query) -> set[tuple[str, str, str]]:
        out = set()
        for a, rel, b in q.relations:
            ca, cb = q.objects[a].colour, q.objects[b].colour
            if rel in ("right_of", "below"):
                ca, rel, cb = cb, INVERSE_RELATION[rel], ca
            out.add((ca, rel, cb))
        return out

    return rels(query) <= rels(candidate)


def caption_keeps_query(caption: str, query: Query) -> tuple[bool, bool]:
    """(parses, keeps every fact of `query`) for a caption."""
    try:
        parsed = grammar.parse(caption)
    except grammar.ParseError:
        return False, False
    return True, keeps_query_facts(query, parsed)


# ----------------------------------------------------------------------------- previews


def render_objects(objects: list[SceneObject], background: str, resolution: int = PREVIEW_SIZE) -> np.ndarray:
    """Render objects without `Scene`'s rules (two objects may share a colour, as in colour leakage)."""
    img = np.empty((resolution, resolution, 3), dtype=np.float32)
    img[:] = np.asarray(BACKGROUNDS[background], dtype=np.float32) / 255.0
    for obj in objects:
        a = object_coverage(obj, resolution)[..., None]
        col = np.asarray(COLOURS[obj.colour], dtype=np.float32) / 255.0
        img = img * (1.0 - a) + col * a
    return img


def degrade(img: np.ndarray, rng: random.Random) -> Image.Image:
    """An x0-preview-like version of a clean render: optional blur, noise and contrast loss."""
    arr = img
    if rng.random() < 0.5:
        arr = arr * (1 - 0.3 * rng.random()) + 0.15 * rng.random()
    if rng.random() < 0.5:
        noise = np.random.default_rng(rng.randrange(2**31)).normal(0, 0.08 * rng.random(), arr.shape)
        arr = arr + noise.astype(np.float32)
    pil = Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=0.4 + 1.2 * rng.random()))
    return pil


ERRORS = ("none", "leak", "colour", "shape", "missing", "size", "position", "background", "relation")


def corrupt(scene: Scene, query: Query, rng: random.Random) -> tuple[list[SceneObject], str, str, int | None]:
    """A preview scene that gets one asserted fact of `query` wrong: (objects, background, error, object)."""
    objs = list(scene.objects)
    bg = scene.background
    possible = ["none", "colour", "shape"]
    if len(objs) >= 2:
        possible += ["leak", "missing", "leak", "missing"]
    if any(o.size for o in query.objects):
        possible.append("size")
    if any(o.column is not None or o.row is not None for o in query.objects):
        possible.append("position")
    if query.background:
        possible.append("background")
    if query.relations:
        possible.append("relation")
    err = rng.choice(possible)
    k = rng.randrange(len(objs))
    if err == "leak":
        j = rng.choice([i for i in range(len(objs)) if i != k])
        objs[k] = replace(objs[k], colour=objs[j].colour)
    elif err == "colour":
        objs[k] = replace(objs[k], colour=rng.choice([c for c in COLOURS if c != objs[k].colour]))
    elif err == "shape":
        objs[k] = replace(objs[k], shape=rng.choice([s for s in SHAPES if s != objs[k].shape]))
    elif err == "missing":
        objs.pop(k)
    elif err == "size":
        k = rng.choice([i for i, o in enumerate(query.objects) if o.size])
        objs[k] = replace(objs[k], size=next(s for s in SIZES if s != objs[k].size))
    elif err == "position":
        k = rng.choice([i for i, o in enumerate(query.objects) if o.column is not None or o.row is not None])
        used = {o.cell for o in objs}
        free = [(c, r) for c in range(GRID) for r in range(GRID) if (c, r) not in used]
        objs[k] = replace(objs[k], cell=rng.choice(free))
    elif err == "background":
        bg = rng.choice([b for b in BACKGROUNDS if b != bg])
    elif err == "relation":
        a, _, b = query.relations[0]
        k = a
        objs[a], objs[b] = replace(objs[a], cell=objs[b].cell), replace(objs[b], cell=objs[a].cell)
    else:
        k = None
    return objs, bg, err, k


# ----------------------------------------------------------------------------- targets


def _position_of(cell: tuple[int, int]) -> tuple[int | None, int | None]:
    c, r = cell
    if (c, r) == (1, 1) or (c != 1 and r != 1):
        return c, r
    return (c, None) if c != 1 else (None, r)


def augment_query(query: Query, scene: Scene, focus: int | None, err: str, rng: random.Random) -> Query:
    """The query plus a few true scene facts about what went wrong (never contradicting the query)."""
    objs = list(query.objects)
    targets = [focus] if focus is not None else []
    if err == "relation" and query.relations:
        targets = [query.relations[0][0], query.relations[0][2]]
    for k in targets:
        o, s = objs[k], scene.objects[k]
        if o.size is None and (err in ("shape", "missing", "size", "leak", "colour") and rng.random() < 0.5):
            o = replace(o, size=s.size)
        if o.column is None and o.row is None and err in ("missing", "position", "relation") and rng.random() < 0.5:
            col, row = _position_of(s.cell)
            o = replace(o, column=col, row=row)
        objs[k] = o
    bg = query.background
    if bg is None and err == "background" or (bg is None and rng.random() < 0.1):
        bg = scene.background
    return Query(tuple(objs), query.relations, bg)


def _fix_articles(text: str) -> str:
    return re.sub(r"\b(a|an) (\w)", lambda m: ("an " if m.group(2) in "aeiou" else "a ") + m.group(2), text)


def emphasise_colour(caption: str, colour: str, rng: random.Random) -> str:
    """Intensify or repeat the first mention of `colour` (any synonym) in a caption."""
    syns = "|".join(grammar.COLOUR_WORDS[colour])
    m = re.search(rf"\b({syns})\b", caption)
    if m is None:
        return caption
    word = m.group(1)
    before = caption[: m.start()]
    after_np = caption[m.end():]
    # repetition only where the colour precedes its noun ("a red, red circle"), not in "a circle in red"
    repeat_ok = not re.search(r"\bin $", before)
    if repeat_ok and rng.random() < 0.5:
        new = f"{word}, {word}"
    else:
        new = f"{rng.choice(grammar.INTENSIFIERS)} {word}"
    return _fix_articles(before + new + after_np)


def _word_kind(word: str) -> tuple[str, str] | None:
    if word in grammar._LOOKUP:
        return grammar._LOOKUP[word]
    if word in grammar._BG_LOOKUP:
        return ("background", grammar._BG_LOOKUP[word])
    return None


def reuse_words(text: str, style: str) -> str:
    """Replace synonyms in `text` by the word `style` uses for the same colour / shape / size / background."""
    preferred: dict[tuple[str, str], str] = {}
    for w in re.findall(r"[a-z]+", style.lower()):
        kind = _word_kind(w)
        if kind is not None:
            preferred.setdefault(kind, w)

    def sub(m: re.Match[str]) -> str:
        kind = _word_kind(m.group(0))
        return preferred.get(kind, m.group(0)) if kind is not None else m.group(0)

    return _fix_articles(re.sub(r"[a-z]+", sub, text))


def make_target(query: Query, scene: Scene, focus: int | None, err: str, rng: random.Random,
                avoid: str | None = None, style: str | None = None, p_same_words: float = 0.6) -> str:
    """A rewrite keeping every fact of `query`, emphasised on the preview's error (checked). With
    probability `p_same_words` it reuses the words of `style` (the user query) for each colour, shape,
    size and background, so that the paraphrase is mostly structural (order, template, emphasis)."""
    for _ in range(20):
        aug = augment_query(query, scene, focus, err, rng)
        text = grammar.realise(aug, rng, emphasis=0.1)
        if style is not None and rng.random() < p_same_words:
            text = reuse_words(text, style)
        if focus is not None and err in ("leak", "colour", "missing", "shape"):
            text = emphasise_colour(text, query.objects[focus].colour, rng)
        elif err == "none" and rng.random() < 0.3:
            text = emphasise_colour(text, rng.choice(query.objects).colour, rng)
        if text == avoid:
            continue
        ok, keeps = caption_keeps_query(text, query)
        if ok and keeps:
            return text
    return grammar.realise(query, rng)


@dataclass
class RewriteExample:
    """One supervised rewrite: (preview, query, current prompt, progress) -> target."""

    query: Query
    query_text: str
    current_prompt: str
    progress: float
    preview: Image.Image | None
    target: str
    error: str


def make_example(scene: Scene, rng: random.Random, progress: float | None = None,
                 with_preview: bool = True) -> RewriteExample:
    """A synthetic SFT example from a scene (see the module docstring)."""
    query = grammar.query_from_scene(scene, rng)
    query_text = grammar.realise(query, rng)
    if rng.random() < 0.5:
        current = query_text
    else:
        current = grammar.realise(query, rng, emphasis=0.3)
    objs, bg, err, k = corrupt(scene, query, rng)
    preview = degrade(render_objects(objs, bg), rng) if with_preview else None
    if progress is None:
        progress = rng.choice([0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8])
    target = make_target(query, scene, k, err, rng, avoid=current, style=query_text)
    ok, keeps = caption_keeps_query(target, query)
    if not (ok and keeps):
        raise AssertionError(f"target {target!r} does not keep the query {query}")
    return RewriteExample(query, query_text, current, progress, preview, target, err)


def example_stream(seed: int, split: str = "train", p_no_preview: float = 0.15):
    """An endless stream of examples from `SceneSampler(seed, split)` scenes."""
    sampler = SceneSampler(seed, split)  # type: ignore[arg-type]
    rng = random.Random(seed + 1)
    while True:
        yield make_example(sampler.sample(), rng, with_preview=rng.random() >= p_no_preview)


__all__ = [
    "CHAT_TEMPLATE",
    "ERRORS",
    "ObjectQuery",
    "PREVIEW_SIZE",
    "RewriteExample",
    "build_world_tokenizer",
    "caption_keeps_query",
    "corrupt",
    "degrade",
    "example_stream",
    "keeps_query_facts",
    "make_example",
    "make_target",
    "render_objects",
    "world_words",
]
