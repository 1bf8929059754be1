"""Reduced precision for the forward passes: ``fp32`` (none), ``bf16`` (autocast; no scaling needed: bf16 keeps fp32's
exponent range) or ``fp16`` (autocast and a gradient scaler per optimiser). Parameters, optimiser states and
checkpoints stay fp32 whatever the precision, so a run resumes across precisions."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler: active for fp16 only (a disabled one passes losses and steps through unchanged)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
