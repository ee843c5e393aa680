"""Refinement policies: the contract (`base`), the transformers VLM policy (`vlm`), its instruction
templates (`instruction`), output sanitation (`sanitize`) and tiny offline test builders (`testing`)."""

from promptloop.policy.base import (
    FixedPromptPolicy,
    NullPolicy,
    PolicyInput,
    PolicyOutput,
    RefinementPolicy,
    StagedPolicy,
)
from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.sanitize import Sanitizer, clean_text, rough_length
from promptloop.policy.vlm import QwenVLComponentProcessor, VLMPolicy

__all__ = [
    "FixedPromptPolicy",
    "InstructionTemplate",
    "NullPolicy",
    "PolicyInput",
    "PolicyOutput",
    "QwenVLComponentProcessor",
    "RefinementPolicy",
    "StagedPolicy",
    "Sanitizer",
    "VLMPolicy",
    "clean_text",
    "rough_length",
]
