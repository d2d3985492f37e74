"""Training: ``training_loop`` wires the run's state (t2i/run_state.py: record, resume, save),
the step loop (``run_epochs``: epochs, the skip to a resume point, ``t2i.gan.gan_step``, the
guard, the cadence) and the reporter (t2i/report.py: progress, DVCLive, grids, probes).

The update itself is ``t2i.gan.gan_step``; this file feeds it batches and random draws.
Checkpoints hold G (and its average, with train.ema), D, both optimisers, the step counters, the
RNG state and the record; a
rerun whose params match resumes from the last one (t2i/run_state.py).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from t2i import T2IError
from t2i.checkpoint import CHECKPOINT, GENERATOR, save_generator
from t2i.data.loader import Loader
from t2i.distributed import all_reduce_mean, init
from t2i.gan import Trainables, gan_step, model_config, needs_grounding, step_inputs, trainables
from t2i.io import sole_writer
from t2i.params import TrainParams
from t2i.report import Reporter
from t2i.run_state import RunState, run_record


@dataclass(frozen=True)
class DataSpec:
    """What the embedded shards' manifest says about the training data."""

    emb_dim: int  # caption embedding size
    image_size: int
    text_model: str
    num_samples: int | None = None  # training-set size: an epoch is num_samples // world // batch_size steps on every rank; required under torchrun
    attributes: dict[str, list[str]] | None = None  # {attribute: values} of the training samples (t2i.named.discover_attributes), for train.ac_coef


def training_loop(
    train_urls: list[str],
    out_dir: Path,
    cfg: TrainParams = TrainParams(),
    *,
    data: DataSpec,
    checkpoint_dir: Path | None = None,
    live_dir: Path | None = None,
    sample_emb: torch.Tensor | None = None,
    sample_captions: list[str] | None = None,
    on_step: Callable[[int, torch.nn.Module, torch.nn.Module], None] | None = None,
    probe: Callable[[torch.nn.Module, torch.nn.Module], dict[str, float]] | None = None,
    ground=None,
    oracle: torch.nn.Module | None = None,
    progress: bool = True,
) -> dict:
    """Train G and D on embedded shards; write ``generator.pt`` to ``out_dir``; return a summary.

    ``cfg`` holds every training param (defaults and ranges in t2i/params.py). ``sample_emb``
    (N, D) with ``sample_captions`` gives the fixed captions of the per-epoch sample grids (with
    fixed noise). ``on_step(step, G, D)`` is called after every step (and after its checkpoint).
    ``probe(G, D) -> {metric name: value}`` (the train stage's ``epoch_probe``:
    ``t2i.probes.caption_check`` of D on the test images and ``t2i.outline.outline_check`` of G)
    is logged after every epoch, by rank 0; it must draw no random numbers from the run's generators.
    ``ground`` (``t2i.ground.Grounding``): the frozen grounding that ``cfg.text: grounded``,
    ``cfg.match_coef`` and ``cfg.ground_d_coef`` read; with ``text: grounded`` its text head is saved with G and D, and
    the grids and ``probe`` see them behind it (called with sentence embeddings). ``oracle``
    (``t2i.oracle.OracleHead``): with ``text: oracle``, what the grids and ``probe`` see them behind.

    Under torchrun G and D train in DistributedDataParallel: each rank reads its own shards (or,
    with too few shards, its own slice of the samples) for the same number of steps per epoch,
    gradients are averaged across ranks and only rank 0 writes.
    """
    from t2i.device import pick_device, pick_precision

    rank, world, device = init(pick_device(cfg.device))
    if world > 1 and (levers := cfg.outside_d_forward()):
        from t2i.params import OUTSIDE_D_FORWARD

        k = levers[0]
        raise T2IError(f"train.{k}: not under torchrun ({OUTSIDE_D_FORWARD[k]} outside D's one forward call, which "
                       f"DistributedDataParallel does not support); set train.{k}=0")
    auto = cfg.precision == "auto"
    cfg = cfg.model_copy(update={"precision": pick_precision(cfg.precision, device)})  # recorded as run: fp32 or bf16
    steps = steps_per_epoch(data, cfg.batch_size, world)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ground = ground if needs_grounding(cfg) else None
    coded = ground is not None and cfg.text == "grounded"
    cond_dim = ground.config["dim"] if coded else data.emb_dim  # what G and D are conditioned on
    if cfg.text == "oracle":
        from t2i.oracle import code_size

        if not data.attributes:
            raise T2IError("train.text: oracle: this dataset's samples have no attribute labels to condition on")
        cond_dim = code_size(data.attributes)
        if oracle is None and (sample_emb is not None or probe is not None):
            raise T2IError("train.text: oracle: the grids and the probe need the oracle's table (t2i.oracle.head_for)")
    try:
        model_cfg = model_config(cfg, cond_dim, data.image_size)
    except ValueError as e:
        raise T2IError(f"cannot train on these shards: {e}") from None
    head = None
    if coded:  # its text head is saved with G (and D): generator.pt turns captions into images alone
        from t2i.ground import text_head_blob

        head = text_head_blob(ground)
    state, cfg, saved = RunState.open(Path(checkpoint_dir or out_dir) / CHECKPOINT, cfg,
                                      run_record(cfg, data, model_cfg, world, ground), head, rank, device, auto)
    nets = trainables(cfg, model_cfg, device, world, ground, data.attributes)
    rng = torch.Generator().manual_seed(cfg.seed + 100_003 * rank)  # every random draw of the loop
    fixed_z = torch.randn(64, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
    resumed = state.resume(saved, nets, rng)
    report = Reporter(live_dir if rank == 0 else None, state.saved_at, initial=state.step,
                      progress=rank == 0 and progress, grid=(fixed_z, sample_emb, sample_captions),
                      probe=probe if rank == 0 else None)
    loader = Loader(train_urls, cfg.batch_size, shuffle=cfg.shuffle_buffer, seed=cfg.seed, workers=cfg.workers,
                    rank=rank, world=world, steps=steps, pin_memory=device.startswith("cuda"))
    text = nets.ground.text if coded else None if oracle is None else oracle.to(device)  # what grids and probe see behind
    start = state.step
    try:
        with sole_writer(state.path.parent, "t2i train") if rank == 0 else contextlib.nullcontext():
            out = run_epochs(nets, cfg, loader, state, rng, report, device, text=text, on_step=on_step)
    except KeyboardInterrupt:
        again = f"rerun to resume from step {state.saved_at}" if state.saved_at else "no checkpoint of this run yet"
        state.say(f"train: interrupted at step {state.step}; {again}")
        raise
    finally:
        report.bar.close()
    if state.step == 0:
        raise T2IError(f"no training step ran: fewer than batch_size={cfg.batch_size} training images?")
    if state.step != start:  # a finished checkpoint is left as it was written
        state.save(nets, rng)
    final = {k: v.item() for k, v in out.items()}  # this run's last losses (empty: no step ran in this run)
    if rank == 0:
        if final and state.step % cfg.log_every:  # logged even off the log_every grid
            report.metrics(state.step, {**final, "epoch": state.epoch - 1})
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_generator(Path(out_dir) / GENERATOR, nets.G_out.cpu(), state.config, state.text_head)
    report.end()
    return {"steps": state.step, "epochs": state.epoch, "resumed": resumed, **final}


def steps_per_epoch(data: DataSpec, batch_size: int, world: int) -> int | None:
    """Steps per epoch on every rank (None: as many as the shards give, on one process)."""
    if data.num_samples is not None and data.num_samples // world < batch_size:
        raise T2IError(f"batch_size={batch_size} is more than the {data.num_samples} training images"
                       + (f" split across {world} ranks" if world > 1 else ""))
    if world > 1 and not data.num_samples:
        raise T2IError("distributed training needs num_samples (the training-set size)")
    return data.num_samples // world // batch_size if data.num_samples else None


def run_epochs(nets: Trainables, cfg: TrainParams, loader: Loader, state: RunState, rng: torch.Generator,
               report: Reporter, device: str, *, text: torch.nn.Module | None = None,
               on_step: Callable[[int, torch.nn.Module, torch.nn.Module], None] | None = None) -> dict:
    """Step from ``state`` to ``cfg.epochs``: a resumed epoch replays its order and skips what was
    done; every ``log_every`` steps the losses are logged, every ``checkpoint_every`` the state is
    saved, after every epoch a grid and the probe, which see G and D as a caption's sentence
    embedding reaches them: behind ``text`` (the grounded text head, or the oracle's table) when
    there is one. Returns the last step's outputs (empty if none ran)."""
    guard = Guard(state, cfg, device)
    if text is not None:
        from t2i.ground import Coded

        seen_by_text = lambda net: Coded(net, text)  # noqa: E731
    else:
        seen_by_text = lambda net: net  # noqa: E731
    out: dict[str, torch.Tensor] = {}
    nets.G.train(), nets.D.train()
    while state.epoch < cfg.epochs:
        for i, batch in enumerate(loader.epoch(state.epoch)):
            if i < state.step_in_epoch:
                continue  # resuming mid-epoch: replay the same order, skip what was done
            x = step_inputs(batch, cfg, rng, device, nets)
            out = gan_step(nets, x, cfg, guard=guard)
            state.step, state.step_in_epoch = state.step + 1, i + 1
            report.stepped(x.real.size(0))
            if state.step % cfg.log_every == 0:  # reads the losses back from the device
                report.losses(state.step, state.epoch, out)
            if state.step % cfg.checkpoint_every == 0:
                state.save(nets, rng)
            if on_step is not None:
                on_step(state.step, nets.G, nets.D)
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        report.epoch_end(state.epoch, state.step, seen_by_text(nets.G_out), seen_by_text(nets.D), device)
    return out


class Guard:
    """Stops before a non-finite loss updates a model (``gan_step``'s ``guard``): every step on the
    CPU, where reading a value back costs nothing; on a GPU, where it waits for the device, on
    logging and checkpoint steps only. Every rank stops if any rank diverged."""

    def __init__(self, state: RunState, cfg: TrainParams, device: str) -> None:
        self.state, self.cfg, self.every_step = state, cfg, device == "cpu"

    def __call__(self, name: str, loss: torch.Tensor) -> None:
        upcoming = self.state.step + 1
        if not self.every_step and upcoming % self.cfg.log_every and upcoming % self.cfg.checkpoint_every:
            return
        bad = (~torch.isfinite(loss)).float()
        all_reduce_mean([bad])
        if bad.item() > 0:
            at = self.state.saved_at
            where = f"last good checkpoint: {self.state.path} (step {at})" if at else "no checkpoint of this run"
            raise T2IError(f"non-finite loss at step {upcoming} ({name}={loss.item()}); stopped, {where}")
