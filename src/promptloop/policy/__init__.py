"""Refinement policies: the contract (`base`), the transformers VLM policy (`vlm`), the per-family processors it
loads (`processors`), its instruction templates (`instruction`) and output sanitation (`sanitize`); the tiny offline
test policies are in `promptloop.testing`."""

from promptloop.policy.base import (
    FixedPromptPolicy,
    NullPolicy,
    PolicyInput,
    PolicyOutput,
    RefinementPolicy,
    StagedPolicy,
)
from promptloop.policy.instruction import InstructionTemplate
from promptloop.policy.processors import QwenVLComponentProcessor
from promptloop.policy.sanitize import Sanitizer, clean_text, rough_length
from promptloop.policy.vlm import VLMPolicy

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
