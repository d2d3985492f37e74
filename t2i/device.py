"""The one device resolver of every command, and the precision that follows from the device (its
own module, so that code which only needs a device does not depend on the text encoder)."""

from __future__ import annotations

import re

from t2i import T2IError


def pick_device(device: str) -> str:
    """cpu, cuda, cuda:N or auto (cuda if present) -> the torch device string to use."""
    import torch

    if device != "auto" and device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise T2IError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise T2IError(f"device {device!r} requested but no CUDA GPU is available")
    return device


def pick_precision(precision: str, device: str) -> str:
    """``train.precision`` on ``device`` -> fp32 or bf16: auto is bf16 on CUDA and fp32 elsewhere
    (4 seeds of each on the default run scored alike: docs/performance.md, "Four seeds each")."""
    if precision != "auto":
        return precision
    return "bf16" if str(device).startswith("cuda") else "fp32"


# The environment that pins the CPU math libraries' kernel choice to AVX2 (MKL's conditional
# numerical reproducibility, ATen's vector width, oneDNN's instruction set): on a CPU with wider
# vectors, the kernels another CPU kind would run. Tests and scripts/numerics_fingerprint.py use
# it to stand in for another machine (docs/reliability.md).
PINNED_ISA = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
