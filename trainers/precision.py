"""Reduced precision for the forward passes: ``fp32`` (none), ``bf16`` (autocast; no scaling needed: bf16 keeps fp32's
exponent range) or ``fp16`` (autocast and a gradient scaler per optimiser). Parameters, optimiser states and
checkpoints stay fp32 whatever the precision, so a run resumes across precisions."""

from __future__ import annotations

import contextlib

import torch

from ..errors import hint, named

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


CPU_ARITHMETIC = {"bf16": ("_is_avx512_bf16_supported", "_is_amx_tile_supported"), "fp16": ("_is_amx_fp16_supported",)}


def slower_here(precision: str, device: torch.device) -> str | None:
    """A warning where ``precision`` costs time instead of saving it: reduced precision on a CPU without arithmetic
    for it (torch's own probes: AVX512-BF16 or AMX for bf16, AMX-FP16 for fp16), where autocast converts every
    operation's inputs and runs it no faster — on the development machine's AVX2 CPU a dcgan run took 2.4× as long
    in fp16, and 24× in bf16 at 64 px (``benchmarks/train_faults.py``); None elsewhere."""
    if precision == "fp32" or device.type != "cpu":
        return None
    if any(getattr(torch.cpu, probe, lambda: False)() for probe in CPU_ARITHMETIC[precision]):
        return None
    return (f"{named('precision', precision)}: slower than fp32 on this CPU, which has no {precision} arithmetic "
            f"(2 to 24 times, measured); it is for GPUs (or CPUs with it) — use {hint('precision', 'fp32')} here")
