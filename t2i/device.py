"""The one device resolver of every command, and the precision that follows from the device (its
own module, so that code which only needs a device does not depend on the text encoder)."""

from __future__ import annotations

import functools
import os
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
    """``train.precision`` on ``device`` -> fp32 or bf16: auto is bf16 on CUDA and on a CPU with
    bf16 arithmetic in hardware (``cpu_has_bf16``), fp32 elsewhere (4 seeds of each on the default
    run scored alike: docs/performance.md, "Four seeds each")."""
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        return "bf16"
    return "bf16" if cpu_has_bf16() else "fp32"


BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX), Arm (FEAT_BF16): /proc/cpuinfo's names
BF16_ISAS = ("BF16", "FP16", "AMX", "AVX10", "ALL")  # ONEDNN_MAX_CPU_ISA values that let oneDNN use them


def cpu_has_bf16(cpuinfo: str | None = None, env: dict | None = None) -> bool:
    """Does this CPU do bf16 arithmetic in hardware, and may oneDNN (PyTorch's CPU convolutions)
    use it? The flags of ``cpuinfo`` (/proc/cpuinfo's text; none readable: no), unless
    ONEDNN_MAX_CPU_ISA in ``env`` (os.environ) caps oneDNN below them (``PINNED_ISA`` does)."""
    env = os.environ if env is None else env
    cap = env.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and not any(name in cap for name in BF16_ISAS):
        return False
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = {word for line in cpuinfo.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for word in line.partition(":")[2].split()}
    return bool(flags & BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo's text, read once per process ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


# The environment that pins the CPU math libraries' kernel choice to AVX2 (MKL's conditional
# numerical reproducibility, ATen's vector width, oneDNN's instruction set): on a CPU with wider
# vectors, the kernels another CPU kind would run. Tests and scripts/numerics_fingerprint.py use
# it to stand in for another machine (docs/reliability.md).
PINNED_ISA = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
