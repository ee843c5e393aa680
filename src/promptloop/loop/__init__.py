"""The sampling loop: rewrite the prompt during diffusion sampling from x0 previews (PromptLoop).

Public API:
    PromptLoopSampler(pipe, policy, mode=..., num_refinements=..., schedule=..., preview=..., preview_size=...)
    PromptLoopOutput, Trajectory, Refinement          -- typed outputs
    MODES = ("feedback", "no-feedback", "feed-forward", "none")
    make_schedule, uniform_schedule, random_schedule, validate_schedule
    predict_x0, StepRecorder                          -- Tweedie x0 for any diffusers scheduler
    FAMILIES, FamilySpec, detect_family, table_family -- the table route (SD, SDXL, SD3, FLUX.1)
    decode_preview, UnsupportedPipelineError         -- previews for any pipeline; the refusal error
    guidance_interval(pipe, start)                    -- guidance only from a fraction of sampling on (SD, SDXL, SD3)
Tiny offline pipelines for tests live in `promptloop.testing.pipelines` (imported on demand).
"""

from promptloop.loop.families import FAMILIES, FamilySpec, detect_family, table_family
from promptloop.loop.guidance_interval import guidance_interval
from promptloop.loop.outputs import PromptLoopOutput, Refinement, Trajectory
from promptloop.loop.pipeline_api import UnsupportedPipelineError
from promptloop.loop.preview import decode_preview
from promptloop.loop.sampler import MODES, PromptLoopSampler
from promptloop.loop.schedule import make_schedule, random_schedule, uniform_schedule, validate_schedule
from promptloop.loop.x0 import StepRecorder, predict_x0

__all__ = [
    "FAMILIES",
    "MODES",
    "FamilySpec",
    "PromptLoopOutput",
    "PromptLoopSampler",
    "Refinement",
    "StepRecorder",
    "UnsupportedPipelineError",
    "Trajectory",
    "decode_preview",
    "detect_family",
    "guidance_interval",
    "make_schedule",
    "predict_x0",
    "random_schedule",
    "table_family",
    "uniform_schedule",
    "validate_schedule",
]
