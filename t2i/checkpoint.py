"""Generator and training-state files: what ``generate`` and ``evaluate`` load without importing
the training loop, and what a resume must match.

``generator.pt`` holds the final generator's weights and the training config; ``checkpoint.pt``
holds G, D, both optimisers, the step counters, the RNG state and the same config. The config
names the model family (``arch``; none in a GAN-CLS file, which predates families), so every
reader builds the right network without being told.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from t2i import T2IError
from t2i.io import save_torch
from t2i.models import build, config_class

CHECKPOINT = "checkpoint.pt"
GENERATOR = "generator.pt"
# What a checkpoint must share with the run that wants to resume it: the data, the model, the
# losses, the optimiser and the data order. Not listed, so free to change: epochs (raising it
# continues a finished run), logging, device, threads and workers.
RESUME_KEYS = ("num_samples", "emb_dim", "image_size", "text_model", "batch_size", "lr", "beta1", "beta2",
               "z_dim", "proj_dim", "ngf", "ndf", "cls", "int_coef", "int_beta", "l1_coef", "fm_coef",
               "label_smoothing", "ca", "kl_coef", "ms_coef", "captions_per_step", "shuffle_buffer", "seed",
               "world_size", "arch", "df_gan")


def save_generator(path: Path, G: torch.nn.Module, config: dict) -> None:
    save_torch({"config": config, "state_dict": G.state_dict()}, path)


def load_generator(path: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The final generator of either family (eval mode) and the training config stored with it."""
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"missing generator checkpoint {path}: run the train stage first")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # bad bytes fail in many ways, and torch's text suggests weights_only=False: never
        raise T2IError(f"cannot read generator checkpoint {path}: not a generator.pt written by t2i train, "
                       "or a damaged one") from None
    try:
        config = blob["config"]
        arch = config.get("arch", "gan-cls")
        G = build(arch, config_class(arch)(**config["model"]))[0]
        G.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise T2IError(f"cannot read generator checkpoint {path}: {str(e).splitlines()[0].split('. ')[0]}") from None
    return G.to(device).eval(), config


def load_state(path: Path, device: str = "cpu") -> dict | None:
    """A training checkpoint, or None when there is none; an unreadable one is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise T2IError(f"cannot read checkpoint {path} ({e}); delete it to start over") from None


def resume_blockers(saved: dict, config: dict) -> list[str]:
    """Why a checkpoint (its ``saved`` blob) cannot continue the run ``config``: the resume keys
    that differ, as ``key old -> new``, or a finished epoch count past the one now asked for."""
    old = saved.get("config", {})
    arch = (old.get("arch", "gan-cls"), config.get("arch", "gan-cls"))
    if arch[0] != arch[1]:  # another family: its other keys differ anyway
        return [f"arch {arch[0]!r} -> {arch[1]!r}"]
    why = [f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in RESUME_KEYS if old.get(k) != config.get(k)]
    if not why and saved.get("epoch", 0) > config["epochs"]:
        why.append(f"it is at epoch {saved['epoch']}, past epochs={config['epochs']}")
    return why
