"""Tokenizer and synthetic supervised rewrite data for the Shapes-world refinement policy.

Tokenizer: a word-level tokenizer (`tokenizers` WordLevel, lower-casing, whitespace/punctuation
pre-tokenizer) over every word the world grammar can produce (colour, shape, size, background,
relation and position words, fillers, intensifiers, punctuation), the words of the policy's
instruction templates and chat roles, the numbers 0..100 (progress in percent), and the special
tokens `<pad> <s> </s> <unk> <image>` plus chat markers `<|user|> <|assistant|> <|system|>`.

SFT example (`make_example`): a scene and a query (a subset of its facts); the user query is a plain
caption of the query; the current prompt is the query or an earlier rewrite of it (the query with random
edits); the preview is a render of a scene that only partly matches the query (one asserted fact
corrupted: colour leaked from another object or wrong, wrong shape, object missing, wrong size / position
/ background, relation swapped — or no error), optionally blurred and noised like an x0 preview.

The target rewrite (`make_target`) is a NEAR-COPY of the user query — its own words, in order — with a
few edits that keep every fact (`apply_edits`): a colour intensified or repeated ("a bright red circle",
"a red, red circle"), a size word added to an object that has none, an absolute position phrase added
(consistent with the relations), a background phrase added when the query has none. The edits are
conditioned on the preview where it shows something (`sample_edits`: the wrong object's colour
emphasised, the size / position / background the preview shows added) and random otherwise; some
targets are the current prompt unchanged. Copying is what a small model learns fast; the random edits
give the diversity GRPO needs. Every target parses under `grammar.parse`, keeps every fact of the query
(`keeps_query_facts`; `make_example` checks both) and fits the backbone's text window (`minilm_length`
at most `TEXT_WINDOW` word pieces) unless the query itself does not.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from functools import lru_cache

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
from promptloop.world.shapes import grammar
from promptloop.world.shapes.render import object_coverage
from promptloop.world.shapes.scene import (
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
TEXT_WINDOW = 48  # = backbone.TEXT_MAX_TOKENS (MiniLM word pieces); not imported to keep this module light


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


@lru_cache(maxsize=1)
def _minilm_tokenizer() -> object:
    from transformers import AutoTokenizer

    from promptloop.world.backbone import text_encoder_path

    # no window here: the count must see past it (and not warn about it)
    return AutoTokenizer.from_pretrained(text_encoder_path(), model_max_length=1_000_000)


def minilm_length(text: str) -> int:
    """Length of a prompt in the world backbone's text window: MiniLM word pieces incl. [CLS] / [SEP]."""
    return len(_minilm_tokenizer()(text, truncation=False)["input_ids"])  # type: ignore[operator]


_TOKEN_RE = re.compile(r"\w+|[,:]")
_SHAPE_SET = {w for ws in grammar.SHAPE_WORDS.values() for w in ws}
_SIZE_SET = {w for ws in grammar.SIZE_WORDS.values() for w in ws}
_COLOUR_OF = {w: c for c, ws in grammar.COLOUR_WORDS.items() for w in ws}


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def _join(tokens: list[str]) -> str:
    return re.sub(r" ([,:])", r"\1", " ".join(tokens))


def _fix_articles(text: str) -> str:
    return re.sub(r"\b(a|an) (\w)", lambda m: ("an " if m.group(2) in "aeiou" else "a ") + m.group(2), text)


@dataclass(frozen=True)
class _Phrase:
    """Where an object's first noun phrase ("a [size] colour [size] shape", "a [size] shape in colour")
    sits in a caption's token list."""

    article: int
    colour: int  # index of the (first) colour word
    end: int  # index of the phrase's last word (shape, or colour in "shape in colour")
    colour_first: bool
    has_size: bool
    has_position: bool


def _phrases(tokens: list[str]) -> dict[str, _Phrase]:
    """The first "a/an" noun phrase of each colour (references "the red circle" are skipped)."""
    out: dict[str, _Phrase] = {}
    for i, tok in enumerate(tokens):
        if tok not in ("a", "an"):
            continue
        j, colour, has_size = i + 1, None, False
        while j < len(tokens) and (tokens[j] in _SIZE_SET or tokens[j] in _COLOUR_OF or tokens[j] == ","
                                   or tokens[j] in grammar.INTENSIFIERS):
            if tokens[j] in _COLOUR_OF and colour is None:
                colour = j
            has_size |= tokens[j] in _SIZE_SET
            j += 1
        if j >= len(tokens) or tokens[j] not in _SHAPE_SET:
            continue
        end, colour_first = j, colour is not None
        if colour is None and j + 2 < len(tokens) and tokens[j + 1] == "in" and tokens[j + 2] in _COLOUR_OF:
            colour, end = j + 2, j + 2
        if colour is None:
            continue
        nxt = tokens[end + 1: end + 3]
        has_position = nxt[:1] in (["at"], ["on"], ["in"]) and nxt[1:] == ["the"]
        out.setdefault(_COLOUR_OF[tokens[colour]], _Phrase(i, colour, end, colour_first, has_size, has_position))
    return out


def _position_of(cell: tuple[int, int]) -> tuple[int | None, int | None]:
    c, r = cell
    if (c, r) == (1, 1) or (c != 1 and r != 1):
        return c, r
    return (c, None) if c != 1 else (None, r)


@dataclass
class Edits:
    """Fact-keeping edits of a caption: colours to emphasise (colour -> "repeat" or an intensifier),
    sizes / absolute positions to add to objects that have none, a background to add."""

    emphasis: dict[str, str]
    sizes: dict[str, str]
    positions: dict[str, tuple[int | None, int | None]]
    background: tuple[str, bool] | None = None  # (background word, as a prefix?)

    def __bool__(self) -> bool:
        return bool(self.emphasis or self.sizes or self.positions or self.background)


def apply_edits(text: str, edits: Edits) -> str:
    """`text` with `edits` applied in place: its own words, in order, plus the inserted words."""
    tokens = _tokens(text)
    phrases = _phrases(tokens)
    inserts: list[tuple[int, int, list[str]]] = []  # (index, order at equal index, words)
    for colour, how in edits.emphasis.items():
        ph = phrases.get(colour)
        if ph is None:
            continue
        word = tokens[ph.colour]
        if how == "repeat":  # "a red, red circle"; "a circle in red" takes an intensifier instead
            inserts.append((ph.colour, 1, [word, ","] if ph.colour_first else [grammar.INTENSIFIERS[0]]))
        else:
            inserts.append((ph.colour, 1, [how]))
    for colour, size in edits.sizes.items():
        ph = phrases.get(colour)
        if ph is not None and not ph.has_size:
            inserts.append((ph.article + 1, 0, [size]))
    for colour, (col, row) in edits.positions.items():
        ph = phrases.get(colour)
        if ph is not None and not ph.has_position:
            inserts.append((ph.end + 1, 0, grammar._position_phrase(ObjectQuery(colour, "circle", None, col, row))
                            .split()))
    for index, _, words in sorted(inserts, key=lambda x: (-x[0], -x[1])):
        tokens[index:index] = words
    if edits.background is not None and "background" not in tokens:
        word, prefix = edits.background
        prefix = prefix and tokens[0] in ("a", "an")
        tokens = [word, "background", "with", *tokens] if prefix else [*tokens, "on", "a", word, "background"]
    return _fix_articles(_join(tokens))


def _positionable(query: Query, index: int, cell: tuple[int, int]) -> tuple[int | None, int | None] | None:
    from promptloop.world.shapes.rewrites import _consistent_position

    col, row = _position_of(cell)
    return (col, row) if _consistent_position(query, index, col, row) else None


def sample_edits(query: Query, scene: Scene | None, focus: int | None, err: str, rng: random.Random,
                 rate: float = 0.2) -> Edits:
    """Random edits, conditioned on the preview's error where there is one: the wrong object's colour
    emphasised (and its size added), positions added to the objects of a broken relation or to a missing
    object, the background added; plus random edits at `rate`. Sizes, positions and the background are
    those of `scene` (what the preview shows where it is right), random ones without a scene."""
    edits = Edits({}, {}, {})

    def emphasise(k: int) -> None:
        edits.emphasis[query.objects[k].colour] = rng.choice([*grammar.INTENSIFIERS, "repeat", "repeat"])

    def add_size(k: int) -> None:
        if query.objects[k].size is None:
            edits.sizes[query.objects[k].colour] = rng.choice(
                grammar.SIZE_WORDS[scene.objects[k].size if scene is not None else rng.choice(SIZES)])

    def add_position(k: int) -> None:
        o = query.objects[k]
        if o.column is None and o.row is None:
            cell = scene.objects[k].cell if scene is not None else (rng.randrange(GRID), rng.randrange(GRID))
            pos = _positionable(query, k, cell)
            taken = set(edits.positions.values()) | {(p.column, p.row) for p in query.objects}
            if pos is not None and pos not in taken:
                edits.positions[o.colour] = pos

    if focus is not None and err in ("leak", "colour", "shape", "missing", "size"):
        if rng.random() < 0.85:
            emphasise(focus)
        if err in ("shape", "missing", "leak") and rng.random() < 0.3:
            add_size(focus)
        if err == "missing" and rng.random() < 0.3:
            add_position(focus)
    if err == "relation" and query.relations:
        a, _, b = query.relations[0]
        for k in (a, b):
            if rng.random() < 0.4:
                add_position(k)
        if rng.random() < 0.4:
            emphasise(rng.choice((a, b)))
    for k in range(len(query.objects)):
        if rng.random() < rate:
            emphasise(k)
        if rng.random() < rate * 0.75:
            add_size(k)
        if rng.random() < rate * 0.4:
            add_position(k)
    if query.background is None and rng.random() < rate:
        bg = scene.background if scene is not None else rng.choice(list(BACKGROUNDS))
        edits.background = (rng.choice(grammar.BACKGROUND_WORDS[bg]), rng.random() < 0.3)
    return edits


def make_target(query: Query, scene: Scene, focus: int | None, err: str, rng: random.Random,
                query_text: str | None = None, current: str | None = None, p_keep: float = 0.1,
                max_tokens: int | None = None) -> str:
    """A near-copy of the user query: its own words in order plus a few fact-keeping edits
    (`sample_edits`); with probability `p_keep` (more when the preview has no error) the current prompt
    unchanged. Edits that break the grammar, drop a query fact or push the caption past `max_tokens`
    MiniLM word pieces are dropped one by one (checked; the bare query is the last resort)."""
    if query_text is None:
        query_text = grammar.realise(query, rng)
    if current is not None and rng.random() < (p_keep * 3 if err == "none" else p_keep):
        if caption_keeps_query(current, query) == (True, True):
            return current
    edits = sample_edits(query, scene, focus, err, rng)
    while True:
        text = apply_edits(query_text, edits)
        ok, keeps = caption_keeps_query(text, query)
        if ok and keeps and (max_tokens is None or minilm_length(text) <= max_tokens):
            return text
        if not edits:
            return query_text
        # drop one edit and retry
        if edits.background is not None:
            edits.background = None
        elif edits.positions:
            edits.positions.pop(next(iter(edits.positions)))
        elif edits.sizes:
            edits.sizes.pop(next(iter(edits.sizes)))
        else:
            edits.emphasis.pop(next(iter(edits.emphasis)))


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
                 with_preview: bool = True, max_tokens: int | None = TEXT_WINDOW) -> RewriteExample:
    """A synthetic SFT example from a scene (see the module docstring)."""
    query = grammar.query_from_scene(scene, rng)
    query_text = grammar.realise(query, rng)
    current = query_text
    if rng.random() < 0.5:  # an earlier rewrite of the policy: the query with random edits
        edited = apply_edits(query_text, sample_edits(query, None, None, "none", rng, rate=0.3))
        if caption_keeps_query(edited, query) == (True, True):
            current = edited
    objs, bg, err, k = corrupt(scene, query, rng)
    preview = degrade(render_objects(objs, bg), rng) if with_preview else None
    if progress is None:
        progress = rng.choice([0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8])
    if not with_preview:  # nothing to condition on: random edits only
        err, k = "none", None
    target = make_target(query, scene, k, err, rng, query_text=query_text, current=current, max_tokens=max_tokens)
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
    "Edits",
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
    "minilm_length",
    "apply_edits",
    "sample_edits",
    "render_objects",
    "world_words",
]
