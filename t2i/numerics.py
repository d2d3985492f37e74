"""Which kind of CPU computed a run: a fingerprint of the kernels PyTorch picks on this machine.

The CPU math libraries inside PyTorch (MKL, oneDNN, ATen's vector code) choose their kernels by
the CPU, so two CPU kinds sum in different orders and train different bytes from the same
inputs (docs/reliability.md, "Across machines"). The fingerprint is what decides that: the
hash of G's weights after a few plain GAN-CLS steps on one fixed batch, ATen's vector width,
and the CPU's name for people. Two machines with the same ``train`` hash and ``aten`` compute
the trained stages alike; ``t2i check`` records the fingerprint of the machine that wrote
``dvc.lock`` and compares this machine's with it. ``scripts/numerics_fingerprint.py`` prints
the same hash under each pinned kernel choice.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

EMB_DIM = 384  # all-MiniLM-L6-v2's, the default text model's


def cpu_name() -> str:
    """The CPU's vendor, model name and widest vector extensions, from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine() or "unknown CPU"
    first = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.split("\n\n")[0].splitlines())}
    flags = first.get("flags", "").split()
    wide = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile") if f in flags]
    return (f"{first.get('vendor_id', '?')} {first.get('model name', '?')} (family {first.get('cpu family', '?')}, "
            f"model {first.get('model', '?')}; {' '.join(wide)})")


def train_hash(steps: int = 3, emb_dim: int = EMB_DIM, threads: int = 2) -> str:
    """md5 (12 hex digits) of G's weights after ``steps`` GAN-CLS steps at the default params with
    the levers off, on one fixed random batch, with ``threads`` torch threads."""
    import torch

    from t2i.bench import fake_batch
    from t2i.gan import gan_step, model_config, step_inputs, trainables
    from t2i.params import PLAIN, ShardParams, TrainParams

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            size = ShardParams().image_size
            cfg = TrainParams().model_copy(update={"device": "cpu", **PLAIN})
            t = trainables(cfg, model_config(cfg, emb_dim, size), "cpu")
            x = step_inputs(fake_batch(cfg.batch_size, size, emb_dim), cfg, torch.Generator().manual_seed(0), "cpu")
            for _ in range(steps):
                gan_step(t, x, cfg)
    finally:
        torch.set_num_threads(before)
    weights = b"".join(v.detach().numpy().tobytes() for v in t.G.state_dict().values())
    return hashlib.md5(weights).hexdigest()[:12]


def cpu_kind() -> dict[str, str]:
    """This machine's: ``cpu`` (for people), ``aten`` (ATen's vector width) and ``train``."""
    import torch

    return {"cpu": cpu_name(), "aten": torch.backends.cpu.get_cpu_capability(), "train": train_hash()}


def describe(kind: dict) -> str:
    """A ``cpu_kind()`` in one line."""
    return f"{kind['cpu']} (ATen {kind['aten']}, train {kind['train']})"


def same_kind(a: dict, b: dict) -> bool:
    """Whether two fingerprints promise the same bytes from the trained stages."""
    return (a.get("train"), a.get("aten")) == (b.get("train"), b.get("aten"))
