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


class _BitsandbytesKernelHubNotice(_logging.Filter):
    """Demote to DEBUG the two warnings bitsandbytes (>= 0.49, on CPUs with AVX512-BF16) logs at import when the
    optional Hub kernel 'kernels-community/quantization-bitsandbytes' is not cached: "Failed to load CPU
    gemm_4bit_forward from kernels-community ..." (logger `bitsandbytes.backends.cpu.ops`) and "Skipping publisher
    trust check ..." (logger `kernels._internals.hf_hub`). diffusers imports bitsandbytes whenever it is installed,
    so every user saw them, quantization asked for or not; bitsandbytes falls back to its own CPU kernel, so
    nothing is lost. Only records naming that kernel repository are touched, and `logging.DEBUG` still shows them."""

    def filter(self, record: _logging.LogRecord) -> bool:
        if "kernels-community/quantization-bitsandbytes" in record.getMessage():
            record.levelno, record.levelname = _logging.DEBUG, "DEBUG"
            return _logging.getLogger(record.name).isEnabledFor(_logging.DEBUG)
        return True


for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    _logging.getLogger(_name).addFilter(_BitsandbytesKernelHubNotice())
