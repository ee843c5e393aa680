"""The instruction a VLM policy reads at each refinement step.

An instruction template is a plain `str.format` string with the fields

- ``{query}``: the user's original query (what the final image must show, and what the reward judges);
- ``{prompt}``: the prompt currently in force (what the diffusion model is conditioned on now);
- ``{progress}``: the progress through sampling, as an integer percentage 0..100;
- ``{image_note}``: `IMAGE_NOTE` when a preview is given (the image is the decoded Tweedie estimate
  x0_hat of the final image at this step), `NO_IMAGE_NOTE` otherwise (no-feedback / feed-forward modes);
- ``{history}``: earlier prompts of this trajectory (empty unless the policy is configured to show them).

With `negative_note` set (a policy that also chooses the negative prompt), the note is appended, its
``{negative}`` field filled with the negative prompt in force ("none" when there is none); it asks for
the two-line completion format that `Sanitizer.parse_completion` parses (`DEFAULT_NEGATIVE_NOTE`).

The rendered instruction is put in a single user turn of the model's chat template, after the image
(when there is one); the policy's answer (the assistant turn) is the new prompt and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_INSTRUCTION = (
    "You refine the prompt of an image generator while it is sampling an image.\n"
    "User query: {query}\n"
    "Current prompt: {prompt}\n"
    "Sampling progress: {progress} percent.\n"
    "{image_note}{history}"
    "Write one new prompt for the rest of sampling that keeps every fact of the user query and "
    "corrects what the image gets wrong. Answer with the prompt only."
)
DEFAULT_IMAGE_NOTE = "The image is the current estimate of the final image.\n"
DEFAULT_NO_IMAGE_NOTE = "No image is shown.\n"
DEFAULT_HISTORY = "Earlier prompts: {items}\n"

# A compact variant for small word-level policies (every word of it is in the Shapes world vocabulary).
DEFAULT_NEGATIVE_NOTE = (
    "\nCurrent negative prompt: {negative}\n"
    "You may add a second line 'Negative: ...' with a new negative prompt (what the image must not show)."
)

COMPACT_INSTRUCTION = "query : {query} . prompt : {prompt} . progress : {progress} % . {image_note}{history}rewrite :"
COMPACT_IMAGE_NOTE = "image : current estimate of the final image . "
COMPACT_NO_IMAGE_NOTE = "no image . "
COMPACT_HISTORY = "earlier : {items} . "


@dataclass
class InstructionTemplate:
    """How (query, current prompt, progress, preview?, history) become the user turn's text."""

    template: str = DEFAULT_INSTRUCTION
    image_note: str = DEFAULT_IMAGE_NOTE
    no_image_note: str = DEFAULT_NO_IMAGE_NOTE
    history: str = DEFAULT_HISTORY
    show_history: bool = False
    negative_note: str = ""  # appended when the policy also chooses the negative prompt ("" = off)

    @classmethod
    def compact(cls) -> InstructionTemplate:
        """The compact template used by the Shapes-world policy."""
        return cls(COMPACT_INSTRUCTION, COMPACT_IMAGE_NOTE, COMPACT_NO_IMAGE_NOTE, COMPACT_HISTORY)

    def render(
        self,
        query: str,
        prompt: str,
        progress: float,
        has_image: bool,
        history: list[str] | None = None,
        negative: str | None = None,
    ) -> str:
        """The instruction text for one sample."""
        pct = int(round(100 * min(max(float(progress), 0.0), 1.0)))
        hist = ""
        if self.show_history and history:
            hist = self.history.format(items=" ; ".join(history))
        text = self.template.format(
            query=query,
            prompt=prompt,
            progress=pct,
            image_note=self.image_note if has_image else self.no_image_note,
            history=hist,
        )
        if self.negative_note:
            text += self.negative_note.format(negative=negative or "none")
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "template": self.template,
            "image_note": self.image_note,
            "no_image_note": self.no_image_note,
            "history": self.history,
            "show_history": self.show_history,
            "negative_note": self.negative_note,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> InstructionTemplate:
        return cls(**d)  # type: ignore[arg-type]
