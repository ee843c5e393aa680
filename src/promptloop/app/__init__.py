"""The PromptLoop web app (`promptloop app`, needs the `app` extra: `pip install 'promptloop[app]'`).

- `session`: one sampling session, streamed step by step (previews, prompts, final image and reward);
- `runs`: what a run directory holds (curves, trajectory grids, prompts, config);
- `models`: the pipeline / policies / reward the app samples with, loaded once;
- `layout`: the Gradio page (imports gradio; the modules above do not).
"""

from __future__ import annotations

from promptloop.app.models import ModelLoadError, ModelSpec, ModelStore
from promptloop.app.runs import RunError, read_run
from promptloop.app.session import LiveState, SampleRequest, stream_session

__all__ = ["LiveState", "ModelLoadError", "ModelSpec", "ModelStore", "RunError", "SampleRequest", "read_run",
           "stream_session"]
