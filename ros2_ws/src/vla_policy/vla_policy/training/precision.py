"""Mixed precision for training: bf16 autocast on GPUs that have it, fp32 elsewhere.

The weights, gradients and AdamW state stay fp32 (the master copy); autocast runs the matrix products in
bf16. bf16 needs no loss scaling (same exponent range as fp32). On the CPU the default is fp32; ``bf16``
can be asked for there too (autocast exists on the CPU), which is how the tests exercise the path.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


class PrecisionError(ValueError):
    """An unknown or unsupported precision; one line says why."""


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on a CUDA device that supports it, else ``fp32``; others are checked."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if cuda_bf16 else "fp32"
    if precision == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise PrecisionError(f"{torch.cuda.get_device_name(device)} has no bf16; use --precision fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[None]:
    """The forward pass's autocast context for a resolved ``precision``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
