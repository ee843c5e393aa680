"""The Gradio layout of the app: a Sample tab (live loop, compare switch, models) and a Runs tab.

The page only arranges and formats: sampling is `session.stream_session`, models are `models.ModelStore`,
runs are `runs.read_run`. Every handler turns bad input into a message in the page.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from promptloop.app.models import ModelLoadError, ModelSpec, ModelStore, world_choices, world_pipeline  # noqa: E402
from promptloop.app.runs import RunError, curves_figure, find_runs, prompt_table, read_run  # noqa: E402
from promptloop.app.session import MAX_STEPS, LiveState, SampleRequest, stream_session  # noqa: E402
from promptloop.loop.sampler import MODES  # noqa: E402
from promptloop.loop.schedule import SCHEDULE_KINDS  # noqa: E402
from promptloop.validation import InputError, check_device  # noqa: E402

QUERY_PLACEHOLDER = "a crimson disc left of a blue box"  # a query of the default world (no world: any pipeline)
PRIVATE = "private"  # every event: the page's own, not an API (Gradio lists public ones even before the login)
DISPLAY = 192  # pixels of the longest side of shown images (the world's 32 px, enlarged without smoothing)
PROMPT_HEADERS = ["run", "step", "at", "prompt", "negative prompt", "fallback"]
COMPARE_HEADERS = ["row", "reward", "final prompt", "seconds"]
PROMPT_WIDTHS = ["12%", "7%", "7%", "54%", "12%", "8%"]
PREVIEW_HEADER = "the preview shows"  # the prompts table's extra column where the world describes previews
PREVIEW_WIDTHS = ["10%", "6%", "6%", "34%", "10%", "6%", "28%"]
WORLD_HEADERS = ["the world's analyzer reads", "in the final image"]
CSS = """
#status .bar {height: 8px; background: #e5e7eb; border-radius: 4px; overflow: hidden; margin: 4px 0;}
#status .bar > div {height: 100%; background: #6366f1;}
#status .error, #run-status .error, #model-status .error {color: #b91c1c; font-weight: 600;}
#status .note, #model-status .note {color: #92400e;}
"""


def enlarge(image: Image.Image, size: int = DISPLAY) -> Image.Image:
    """A small image enlarged to `size` px (nearest neighbour, so pixels stay pixels); large ones as they are."""
    if max(image.size) >= size:
        return image
    scale = max(1, size // max(image.size))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


IMAGE_DIR = Path(tempfile.mkdtemp(prefix="promptloop-app-"))  # shown images, each written once (see ImageFiles)


class ImageFiles:
    """Each image of a session written once, as an enlarged PNG, and shown by its path.

    Gradio writes a PIL value to its cache again at every update, even when unchanged, and a browser reading
    that file meanwhile gets a truncated image; a file path it copies once."""

    def __init__(self) -> None:
        self._paths: dict[int, tuple[Image.Image, str]] = {}

    def path(self, image: Image.Image) -> str:
        if id(image) not in self._paths:
            fd, name = tempfile.mkstemp(suffix=".png", dir=IMAGE_DIR)
            with os.fdopen(fd, "wb") as fh:
                enlarge(image).save(fh, format="PNG")
            self._paths[id(image)] = (image, name)  # the image is kept so that its id stays its own
        return self._paths[id(image)][1]


def status_html(text: str, fraction: float, error: bool = False) -> str:
    if error:
        return f'<div class="error">{html.escape(text)}</div>'
    return (f'<div class="bar"><div style="width: {100 * fraction:.0f}%"></div></div>'
            f"<div>{html.escape(text)}</div>")


def _notes(state: LiveState) -> list[str]:
    """Per decision, what the world reads in its preview ("" where nothing: a world without the hook)."""
    return [*state.notes, *[""] * (len(state.refinements) - len(state.notes))]


def _prompt_table(state: LiveState) -> Any:
    """The prompts table; with a column of what each preview shows where the world describes previews (v3: the
    backdrop, which a policy reads)."""
    rows = []
    label = state.rows[state.row] if state.row < len(state.rows) else ""
    notes = _notes(state)
    described = any(notes)
    for r, note in zip(state.refinements, notes, strict=True):
        rows.append([label, r.step + 1, f"{r.progress:.0%}", r.prompt, getattr(r, "negative_prompt", None) or "",
                     "yes" if r.fallback else "", *([note] if described else [])])
    if not described:
        return rows
    return gr.Dataframe(value=rows, headers=[*PROMPT_HEADERS, PREVIEW_HEADER], column_widths=PREVIEW_WIDTHS)


def preview_caption(refinement: Any, note: str) -> str:
    """A preview's caption: when it was made, the prompt chosen from it, and what the world reads in it."""
    return f"{refinement.progress:.0%}: {refinement.prompt}" + (f" | preview: {note}" if note else "")


def render(state: LiveState, files: ImageFiles, shown: tuple[int, int, int] | None = None) -> tuple[Any, ...]:
    """The values of the Sample tab's outputs for one snapshot of the session; outputs unchanged since the
    snapshot `shown` (row, refinements, results) are skipped."""
    key = (state.row, len(state.refinements), len(state.results))
    new_refinements = shown is None or key[:2] != shown[:2]
    new_results = shown is None or key[2] != shown[2]
    skip = gr.skip()
    previews = [(files.path(r.preview), preview_caption(r, note)) for r, note in zip(state.refinements, _notes(state),
                                                                                     strict=True)
                if r.preview is not None]
    final = reward_md = None
    parts: list[list[str]] = []
    world_rows: list[list[str]] = []
    if state.results:
        last = state.results[-1]
        final = files.path(last.image)
        s = last.score
        head = f"**{last.label}**: reward **{s.total:.3f}**" if s.total is not None else f"**{last.label}**: {s.note}"
        lines = [head, "", f"final prompt: `{last.trajectory.final_prompt}`"]
        if s.detections:
            lines += ["", "found in the image: " + "; ".join(s.detections)]
        reward_md = "\n".join(lines)
        parts = [[k, v] for k, v in s.parts]
        world_rows = [[k, v] for k, v in s.world_rows]
    compare = [(files.path(r.image), f"{r.label}: " + (f"{r.score.total:.3f}" if r.score.total is not None else "n/a")
                + f" | {r.trajectory.final_prompt}") for r in state.results]
    return (
        status_html(state.status(), state.fraction, bool(state.error)),
        previews if new_refinements else skip,
        _prompt_table(state) if new_refinements else skip,
        final if new_results else skip,
        (reward_md or "") if new_results else skip,
        parts if new_results else skip,
        gr.Dataframe(value=world_rows, visible=bool(world_rows)) if new_results else skip,
        gr.Gallery(value=compare, visible=len(state.rows) > 1) if new_results else skip,
        gr.Dataframe(value=[[r.label, "n/a" if r.score.total is None else round(r.score.total, 3),
                             r.trajectory.final_prompt, round(r.seconds, 1)] for r in state.results],
                     visible=len(state.rows) > 1) if new_results else skip,
    )


def build_app(store: ModelStore | None = None, run_roots: tuple[str, ...] = ("runs", "outputs")) -> gr.Blocks:
    """The app's Blocks (not launched). The Runs tab lists and opens run folders under `run_roots` only."""
    store = store or ModelStore()
    examples = _example_queries(store.spec)

    def sample(query: str, seed: float, steps: float, guidance: str, mode: str, refinements: float,
               schedule: str, negative: str, compare: bool) -> Iterator[tuple[Any, ...]]:
        req = SampleRequest(query=query, seed=seed, steps=steps, guidance=guidance, mode=mode,  # type: ignore[arg-type]
                            refinements=refinements, schedule=schedule, negative_prompt=negative or "",  # type: ignore[arg-type]
                            compare=bool(compare))
        files, shown = ImageFiles(), None
        for state in stream_session(store.get, req, store.lock):
            yield render(state, files, shown)
            shown = (state.row, len(state.refinements), len(state.results))

    def load_models(pipeline: str, policy: str, adapter: str, ff_adapter: str, reward: str, device: str,
                    dtype: str) -> tuple[str, Any, Any, Any]:
        spec = ModelSpec(pipeline=pipeline.strip() or "world", policy=policy.strip() or "world",
                         adapter=adapter.strip() or None, feed_forward_adapter=ff_adapter.strip() or None,
                         reward=reward.strip() if reward.strip() else None, device=device.strip() or "auto",
                         dtype=dtype)
        with store.lock:
            try:
                check_device(spec.device, "device")
                store.load(spec)
            except (ModelLoadError, InputError) as e:
                return (f'<div class="error">{html.escape(str(e))}</div><div>Still using: {_describe(store.spec)}</div>',
                        gr.skip(), gr.skip(), gr.skip())
        examples = _example_queries(store.spec)  # the loaded world's: its guidance, a query of its grammar
        return (f"Loaded: {_describe(store.spec)}", _default_guidance(store.spec),
                gr.Textbox(placeholder=examples[0] if examples else QUERY_PLACEHOLDER), _policy_note(store.spec))

    def pick_world(name: str) -> tuple[Any, str]:
        """A world picked from the list: its shipped backbone into the pipeline box, or a note saying there is none
        yet (and how to give one by folder)."""
        if not name:
            return gr.skip(), ""
        pipeline, note = world_pipeline(name)
        if pipeline is None:
            return gr.skip(), f'<div class="note">{html.escape(note)}</div>'
        return pipeline, html.escape(f"{note}: press Load")

    def open_run(path: str) -> tuple[Any, ...]:
        try:
            view = read_run(path, roots=run_roots)
        except RunError as e:
            return (f'<div class="error">{html.escape(str(e))}</div>', None, [], [], {}, "", [])
        headers, rows = prompt_table(view.prompts)
        images = [(Image.open(p).convert("RGB"), caption) for p, caption in view.images]
        config = view.config or {"note": "no config.json or summary.json in this run"}
        return (html.escape(view.summary()), curves_figure(view.train, view.evals), images,
                gr.Dataframe(value=rows, headers=headers), config, view.report, view.prompts)

    def filter_prompts(records: list[dict[str, Any]], text: str, min_reward: str) -> Any:
        try:
            bound = float(min_reward) if (min_reward or "").strip() else None
        except ValueError:
            return gr.Dataframe(value=[[f"minimum reward must be a number, got {min_reward!r}"]], headers=["error"])
        headers, rows = prompt_table(records or [], text, bound)
        return gr.Dataframe(value=rows, headers=headers)

    with gr.Blocks(title="PromptLoop") as demo:
        gr.Markdown("# PromptLoop\nA policy rewrites the prompt *during* diffusion sampling, from the decoded x0 "
                    "preview. Watch it decide, compare it with the plain model and a feed-forward rewriter, and "
                    "browse training runs.")
        with gr.Tab("Sample"):
            with gr.Row():
                query = gr.Textbox(label="query", placeholder=examples[0] if examples else QUERY_PLACEHOLDER,
                                   scale=4, elem_id="query")
                negative = gr.Textbox(label="negative prompt (optional)", scale=2, elem_id="negative")
                run_btn = gr.Button("Sample", variant="primary", scale=1, elem_id="sample-btn")
            if examples:
                gr.Examples(examples=[[q] for q in examples], inputs=[query], label="example queries (heldout)")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, label="seed", min_width=80, elem_id="seed")
                steps = gr.Number(value=20, precision=0, label=f"steps (2-{MAX_STEPS})", min_width=80, elem_id="steps")
                guidance = gr.Textbox(value=_default_guidance(store.spec), elem_id="guidance", min_width=80,
                                      label="guidance (empty: default)")
                refinements = gr.Number(value=5, precision=0, label="N_R (refinements)", min_width=80,
                                        elem_id="refinements")
                mode = gr.Radio(list(MODES), value="feedback", label="mode", scale=2, elem_id="mode")
                schedule = gr.Radio(list(SCHEDULE_KINDS), value="uniform", label="schedule", scale=1)
                compare = gr.Checkbox(value=False, label="compare: base, feed-forward and PromptLoop, same seed",
                                      scale=1, elem_id="compare-switch")
            status = gr.HTML(_policy_note(store.spec), elem_id="status")  # before sampling: a missing policy
            with gr.Row():
                previews = gr.Gallery(label="x0 previews the policy saw, with the prompt it chose", columns=5,
                                      fit_columns=False, height=230, object_fit="contain", format="png", scale=3,
                                      elem_id="previews")
                final = gr.Image(label="final image", type="pil", format="png", height=230, scale=1, elem_id="final")
            with gr.Row():
                prompts = gr.Dataframe(headers=PROMPT_HEADERS, label="the policy's prompts (in force after step)",
                                       interactive=False, wrap=True, column_widths=PROMPT_WIDTHS, scale=3,
                                       elem_id="prompts")
                with gr.Column(scale=2):
                    reward = gr.Markdown(elem_id="reward")
                    breakdown = gr.Dataframe(headers=["facts", "satisfied / asserted"], label="reward breakdown",
                                             interactive=False, elem_id="breakdown")
                    world_facts = gr.Dataframe(headers=WORLD_HEADERS, label="what the reward reads beyond the facts",
                                               interactive=False, wrap=True, visible=False, column_widths=["35%", "65%"],
                                               elem_id="world-facts")
            with gr.Row():
                compare_gallery = gr.Gallery(label="same seed, side by side", columns=3, fit_columns=False,
                                             height=260, format="png", object_fit="contain", visible=False, scale=1,
                                             elem_id="compare")
                compare_table = gr.Dataframe(headers=COMPARE_HEADERS, label="compare", interactive=False, wrap=True,
                                             visible=False, scale=1, elem_id="compare-table")
            with gr.Accordion("models", open=False, elem_id="models"):
                gr.Markdown("`world` is the embedded Shapes world (backbone A + the shipped policies); another "
                            "world's backbone is `world:PATH` (pick a world for its shipped one), with the policy "
                            "`world` its shipped policy where it has one. Otherwise a diffusers pipeline / "
                            "transformers VLM / LoRA adapter by folder or Hub id.")
                with gr.Row():
                    m_world = gr.Dropdown(choices=world_choices(), value=None, label="world (fills the pipeline)",
                                          elem_id="m-world")
                    m_pipe = gr.Textbox(value=store.spec.pipeline, label="pipeline", elem_id="m-pipeline")
                    m_policy = gr.Textbox(value=store.spec.policy, label="policy", elem_id="m-policy")
                    m_adapter = gr.Textbox(value=store.spec.adapter or "", label="PromptLoop adapter (empty: default)")
                    m_ff = gr.Textbox(value=store.spec.feed_forward_adapter or "",
                                      label="feed-forward adapter (empty: default)")
                with gr.Row():
                    m_reward = gr.Textbox(value=store.spec.reward or "", label="reward (empty: alignment on the world)")
                    m_device = gr.Textbox(value=store.spec.device, label="device")
                    m_dtype = gr.Radio(["float32", "bfloat16", "float16"], value=store.spec.dtype, label="dtype")
                    m_btn = gr.Button("Load", elem_id="m-load")
                m_status = gr.HTML(f"Using: {_describe(store.spec)}", elem_id="model-status")
            outputs = [status, previews, prompts, final, reward, breakdown, world_facts, compare_gallery, compare_table]
            inputs = [query, seed, steps, guidance, mode, refinements, schedule, negative, compare]
            run_btn.click(sample, inputs, outputs, show_progress="hidden", api_visibility=PRIVATE)
            query.submit(sample, inputs, outputs, show_progress="hidden", api_visibility=PRIVATE)
            m_btn.click(load_models, [m_pipe, m_policy, m_adapter, m_ff, m_reward, m_device, m_dtype],
                        [m_status, guidance, query, status], api_visibility=PRIVATE)
            m_world.change(pick_world, [m_world], [m_pipe, m_status], api_visibility=PRIVATE)

        with gr.Tab("Runs"):
            with gr.Row():
                run_path = gr.Dropdown(choices=find_runs(run_roots), value=None, allow_custom_value=True, scale=4,
                                       label="run directory (pick one, or type a path)", elem_id="run-path")
                refresh = gr.Button("Refresh list", scale=1)
                open_btn = gr.Button("Open", variant="primary", scale=1, elem_id="open-run")
            run_status = gr.HTML(elem_id="run-status")
            curves = gr.Image(label="reward and KL", type="pil", format="png", elem_id="curves")
            grids = gr.Gallery(label="trajectory grids and figures", columns=4, fit_columns=False, height=360,
                               object_fit="contain", format="png", elem_id="grids")
            with gr.Row():
                p_filter = gr.Textbox(label="filter prompts (text in the query or prompt)", elem_id="prompt-filter")
                p_min = gr.Textbox(value="", label="minimum reward (empty: all)", elem_id="prompt-min")
            records = gr.State([])
            p_table = gr.Dataframe(label="prompts and their rewards", interactive=False, wrap=True,
                                   elem_id="run-prompts")
            with gr.Row():
                config = gr.JSON(label="config", elem_id="run-config")
                report = gr.Markdown()
            refresh.click(lambda: gr.Dropdown(choices=find_runs(run_roots)), None, [run_path], api_visibility=PRIVATE)
            run_outputs = [run_status, curves, grids, p_table, config, report, records]
            open_btn.click(open_run, [run_path], run_outputs, api_visibility=PRIVATE)
            p_filter.change(filter_prompts, [records, p_filter, p_min], [p_table], api_visibility=PRIVATE)
            p_min.change(filter_prompts, [records, p_filter, p_min], [p_table], api_visibility=PRIVATE)
    return demo


def _describe(spec: ModelSpec) -> str:
    s = spec.resolved()
    world = _world_of(spec)
    text = html.escape(f"pipeline {s.pipeline}{f' (world {world.NAME}, {world.VERSION})' if world else ''}, policy "
                       f"{s.policy} (PromptLoop adapter {_short(s.adapter)}, feed-forward adapter "
                       f"{_short(s.feed_forward_adapter)}), reward {s.reward or 'none'}")
    missing = s.missing_policy()
    return text + (f'<div class="note">{html.escape(missing)}</div>' if missing else "")


def _policy_note(spec: ModelSpec) -> str:
    """The Sample tab's status before sampling: why the loop cannot run where the world ships no policy, else empty."""
    missing = spec.resolved().missing_policy()
    return f'<div class="note">{html.escape(missing)}</div>' if missing else ""


def _short(path: str | None) -> str:
    return Path(path).name if path else "none"


def _world_of(spec: ModelSpec) -> Any:
    """The world of the spec's backbone; None for other pipelines and for an unreadable backbone folder (the page
    reports that when the models load)."""
    try:
        return spec.world
    except Exception:
        return None


def _default_guidance(spec: ModelSpec) -> str:
    world = _world_of(spec)
    return "" if world is None else str(world.GUIDANCE)


def _example_queries(spec: ModelSpec) -> list[str]:
    world = _world_of(spec)
    return [] if world is None else [it.caption for it in world.sample_prompts("heldout", 4, seed=1)]


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
           auth: tuple[str, str] | None = None) -> Any:
    """Serve the app at http://host:port (never opens a browser); with block=False return at once. `auth`: (user,
    password) of Gradio's login page (the CLI requires it when `host` is not loopback)."""
    return app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, inbrowser=False, share=False, prevent_thread_lock=not block,
        show_error=False, ssr_mode=False, allowed_paths=[str(IMAGE_DIR)], theme=gr.themes.Soft(), css=CSS, quiet=True,
        footer_links=[], auth=auth)
