"""Generator and training-state files, written and read here only: what ``generate`` and
``evaluate`` load without importing the training loop, and what a resume must match.

``generator.pt`` holds the final generator's weights (with ``train.ema``, the averaged ones) and
the training config; ``checkpoint.pt`` holds G (and its average), D, both optimisers, the step
counters, the RNG state and the same config
(``save_checkpoint``, read back by ``restore``). The config names the model family (``arch``;
none in a GAN-CLS file, which predates families), so every reader builds the right network
without being told.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from t2i import T2IError
from t2i.families import arch_of, get_family
from t2i.io import save_torch

CHECKPOINT = "checkpoint.pt"
GENERATOR = "generator.pt"
# The few config keys a resume may change: how long (raising epochs continues a finished run),
# how often it logs, where and on how many threads it runs (the same run, moved), and on how
# many processes (world_size: the run goes on with another global batch; t2i.run_state says so).
# Every other key of the stored config must match, including any added later: the data, the
# model, the losses, the optimiser, the data order (workers change which samples a step sees)
# and the numerics (precision, channels_last, compile, sync_bn); t2i.run_state resolves precision
# "auto" to a resumed run's own, so that moving a run between CPU and CUDA still resumes it.
FREE_ON_RESUME = frozenset({"epochs", "log_every", "threads", "device", "world_size"})


def save_generator(path: Path, G: torch.nn.Module, config: dict, text_head: dict | None = None) -> None:
    """``text_head`` (``t2i.ground.text_head_blob``): the grounded code's head, for a generator
    trained with ``train.text: grounded``; the file then turns captions into images alone."""
    save_torch({"config": config, "state_dict": G.state_dict(), **({"text_head": text_head} if text_head else {})}, path)


def save_checkpoint(path: Path, config: dict, nets, rngs: list, text_head: dict | None,
                    step: int, epoch: int, step_in_epoch: int) -> None:
    """The training state: ``config`` (the record), G, D and their optimisers from ``nets`` (a
    ``t2i.gan.Trainables``; not imported here, so that readers of generator.pt need no step), every
    rank's random stream ``rngs`` (rank 0's alone when there is one rank), the grounded text head
    (``t2i.ground.text_head_blob``) and where the run is."""
    ema = {"G_ema": nets.G_ema.state_dict()} if nets.G_ema is not None else {}  # train.ema: the average beside G
    save_torch({"config": config, "G": nets.G.state_dict(), **ema, "D": nets.D.state_dict(),
                "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(), "rng": rngs[0],
                **({"text_head": text_head} if text_head else {}),
                **({"rng_ranks": rngs} if len(rngs) > 1 else {}),
                "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch}, path)


def restore(saved: dict, nets) -> tuple[list, int, int, int]:
    """Load a checkpoint's models and optimisers into ``nets``; return every rank's random stream
    it holds (one per rank of the run that wrote it), and its step, epoch and step in the epoch."""
    nets.G.load_state_dict(saved["G"]), nets.D.load_state_dict(saved["D"])
    if nets.G_ema is not None:
        nets.G_ema.load_state_dict(saved["G_ema"])
    nets.opt_g.load_state_dict(saved["opt_g"]), nets.opt_d.load_state_dict(saved["opt_d"])
    rngs = saved.get("rng_ranks", [saved["rng"]] * saved["config"].get("world_size", 1))  # rank 0's alone: older files
    return rngs, saved["step"], saved["epoch"], saved["step_in_epoch"]


def _coded(net: torch.nn.Module, blob: dict, device: str) -> torch.nn.Module:
    """``net`` behind the grounded text head that ``blob`` carries, if it carries one."""
    if "text_head" not in blob:
        return net
    from t2i.ground import Coded, load_text_head

    return Coded(net, load_text_head(blob["text_head"], device))


def load_generator(path: Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The final generator of any family (eval mode) and the training config stored with it."""
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
        family = get_family(arch_of(config))
        G = family.generator(family.Config(**config["model"]))  # no discriminator: generating needs none
        G.load_state_dict(blob["state_dict"])
        G = _coded(G.to(device), blob, device)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise T2IError(f"cannot read generator checkpoint {path}: {str(e).splitlines()[0].split('. ')[0]}") from None
    return G.to(device).eval(), config


def load_discriminator(path: Path, device: str = "cpu") -> torch.nn.Module | None:
    """The discriminator of a training checkpoint (eval mode), built from its stored config, or
    None when there is no checkpoint (a generator.pt trained elsewhere)."""
    saved = load_state(path, device)
    if saved is None:
        return None
    try:
        from t2i.families.common import build_discriminator
        from t2i.params import TrainParams

        config = saved["config"]
        D = build_discriminator(TrainParams.from_record(config), get_family(arch_of(config)).Config(**config["model"]),
                                config.get("attributes"), config.get("ground_cells"))
        D.load_state_dict(saved["D"])
        D = _coded(D.to(device), saved, device)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise T2IError(f"cannot read the discriminator of {path}: {str(e).splitlines()[0].split('. ')[0]}") from None
    return D.to(device).eval()


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
    """Why a checkpoint (its ``saved`` blob) cannot continue the run ``config``: the keys outside
    ``FREE_ON_RESUME`` that differ, as ``key old -> new``, or a finished epoch count past the one now asked for."""
    old = saved.get("config", {})
    arch = (arch_of(old), arch_of(config))
    if arch[0] != arch[1]:  # another family: its other keys differ anyway
        return [f"arch {arch[0]!r} -> {arch[1]!r}"]
    keys = [k for k in [*config, *(k for k in old if k not in config)] if k not in FREE_ON_RESUME]
    why = [f"{k} {old.get(k)!r} -> {config.get(k)!r}" for k in keys if old.get(k) != config.get(k)]
    if not why and saved.get("epoch", 0) > config["epochs"]:
        why.append(f"it is at epoch {saved['epoch']}, past epochs={config['epochs']}")
    return why
