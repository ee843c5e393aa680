"""PromptLoop: plug-and-play prompt refinement via latent feedback for diffusion model alignment."""

import logging as _logging

__version__ = "0.1.0"


class _NoTorchvisionNotice(_logging.Filter):
    """Drop transformers' "`XImageProcessor` requires torchvision (not installed); falling back to
    `XImageProcessorPil`" notice: PromptLoop does without torchvision on purpose and the PIL processors
    are the intended ones. Only that message of that one logger is dropped."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())
