"""The training loop of both model families (``train.arch``): epochs, resume, logging, sample grids.

The update itself is ``t2i.gan.gan_step``; this file feeds it batches and random draws and
handles everything around it. Checkpoints hold G, D, both optimisers, the step counters, the
RNG state and the resolved config; a rerun whose config matches, but for ``checkpoint.FREE_ON_RESUME``,
resumes from the last one and, on CPU, ends with exactly the weights an uninterrupted run would
have; raising ``epochs`` continues a finished run.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from t2i import T2IError
from t2i.checkpoint import CHECKPOINT, GENERATOR, load_state, resume_blockers, save_generator
from t2i.data.loader import Loader
from t2i.distributed import all_gather_object, all_reduce_mean, init
from t2i.gan import gan_step, model_config, step_inputs, trainables
from t2i.io import save_torch, sole_writer
from t2i.params import TrainParams


@dataclass(frozen=True)
class DataSpec:
    """What the embedded shards' manifest says about the training data."""

    emb_dim: int  # caption embedding size
    image_size: int
    text_model: str
    num_samples: int | None = None  # training-set size: an epoch is num_samples // world // batch_size steps on every rank; required under torchrun
    attributes: dict[str, list[str]] | None = None  # {attribute: values} of the training samples (t2i.named.discover_attributes), for train.ac_coef


class TrainLog:
    """DVCLive logs and per-epoch sample grids in ``live_dir`` (rank 0 only).

    A resumed run keeps the logs up to its checkpoint and appends; a fresh run replaces the old
    logs only once it has taken its first step, so a run that fails before that (bad shard,
    bad params) leaves the previous run's logs as they were.
    """

    def __init__(self, live_dir: Path | None, resumed_at: int | None) -> None:
        self.dir, self.resumed_at, self.live = (Path(live_dir) if live_dir else None), resumed_at, None

    def _open(self):
        if self.live is None and self.dir is not None:
            from dvclive import Live

            if self.resumed_at is not None:
                self._trim(self.resumed_at)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.live = Live(str(self.dir), resume=self.resumed_at is not None, dvcyaml=None,
                             save_dvc_exp=False, report=None)
        return self.live

    def _trim(self, step: int) -> None:
        """Drop logged rows after ``step`` (written after the checkpoint a resume starts from)."""
        for tsv in (self.dir / "plots" / "metrics").rglob("*.tsv"):
            with open(tsv, newline="") as f:
                rows = list(csv.reader(f, delimiter="\t"))
            if rows:
                col = rows[0].index("step")
                keep = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= step]
                with open(tsv, "w", newline="") as f:
                    csv.writer(f, delimiter="\t", lineterminator="\n").writerows(keep)

    def stepped(self) -> None:
        """The run has taken a step: from now on its logs replace the old ones."""
        self._open()

    def metrics(self, step: int, values: dict[str, float], prefix: str = "train/") -> None:
        if live := self._open():
            live.step = step  # plots are indexed by training step
            for k, v in values.items():
                live.log_metric(f"{prefix}{k}", v)
            live.next_step()

    def grid(self, epoch: int, G: torch.nn.Module, z: torch.Tensor, emb: torch.Tensor | None,
             captions: list[str] | None, device: str) -> None:
        if self.dir is not None and emb is not None:
            _sample_grid(G, z, emb, captions, self.dir / "samples" / f"epoch_{epoch:03d}.png", device)

    def end(self) -> None:
        if self.live is not None:
            self.live.end()


def _resume(path: Path, saved: dict | None, config: dict, t, g: torch.Generator, rank: int) -> dict | None:
    """Load ``saved``, the checkpoint read from ``path``, into ``t`` (models, optimisers) and ``g``
    (this rank's random stream) if its config matches ``config`` (but for the keys free on
    resume); say why not if not."""
    if saved is None:
        return None
    if why := resume_blockers(saved, config):
        if rank == 0:
            print(f"train: not resuming {path}, starting over: {'; '.join(why)}", file=sys.stderr)
        return None
    t.G.load_state_dict(saved["G"]), t.D.load_state_dict(saved["D"])
    t.opt_g.load_state_dict(saved["opt_g"]), t.opt_d.load_state_dict(saved["opt_d"])
    old, world = saved["config"].get("world_size", 1), config["world_size"]
    rngs = saved.get("rng_ranks", [saved["rng"]] * old)  # rank 0's alone: older files
    if rank < len(rngs):
        g.set_state(rngs[rank])  # a rank the old run did not have keeps its fresh stream
    if old != world:
        # The same samples seen so far in this epoch, counted in this run's steps.
        saved = {**saved, "step_in_epoch": saved["step_in_epoch"] * old // world}
        if rank == 0:
            batch = config["batch_size"]
            print(f"train: resuming {path} (written by {old} process{'es' * (old > 1)}) on {world}: the global "
                  f"batch goes from {old * batch} to {world * batch} images per step ({batch} per process) at the "
                  f"same learning rate, and the rest of epoch {saved['epoch'] + 1} reads its samples in another "
                  f"order; the result will differ from an uninterrupted run on either", file=sys.stderr)
    return saved


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
    probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    ground=None,
    progress: bool = True,
) -> dict:
    """Train G and D on embedded shards; write ``generator.pt`` to ``out_dir``; return a summary.

    ``cfg`` holds every training param (defaults and ranges in t2i/params.py). ``sample_emb``
    (N, D) with ``sample_captions`` gives the fixed captions of the per-epoch sample grids (with
    fixed noise). ``on_step(step, G, D)`` is called after every step (and after its checkpoint).
    ``probe(D) -> {attribute: share}`` (``t2i.probes.caption_check`` on the test images) is logged as
    ``d_check/<attribute>`` after every epoch, by rank 0; it must draw no random numbers.
    ``ground`` (``t2i.ground.Grounding``): the frozen grounding that ``cfg.text: grounded`` and
    ``cfg.match_coef`` read; with ``text: grounded`` its text head is saved with G and D, and
    the grids and ``probe`` see them behind it (called with sentence embeddings).

    Under torchrun G and D train in DistributedDataParallel: each rank reads its own shards (or,
    with too few shards, its own slice of the samples) for the same number of steps per epoch,
    gradients are averaged across ranks and only rank 0 writes.
    """
    from t2i.device import pick_device, pick_precision

    rank, world, device = init(pick_device(cfg.device))
    auto = cfg.precision == "auto"
    cfg = cfg.model_copy(update={"precision": pick_precision(cfg.precision, device)})  # recorded as run: fp32 or bf16
    if data.num_samples is not None and data.num_samples // world < cfg.batch_size:
        raise T2IError(f"batch_size={cfg.batch_size} is more than the {data.num_samples} training images"
                       + (f" split across {world} ranks" if world > 1 else ""))
    if world > 1 and not data.num_samples:
        raise T2IError("distributed training needs num_samples (the training-set size)")
    steps = data.num_samples // world // cfg.batch_size if data.num_samples else None  # per epoch, on every rank
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    from t2i.gan import needs_grounding

    ground = ground if needs_grounding(cfg) else None
    coded = ground is not None and cfg.text == "grounded"
    try:
        model_cfg = model_config(cfg, ground.config["dim"] if coded else data.emb_dim, data.image_size)
    except ValueError as e:
        raise T2IError(f"cannot train on these shards: {e}") from None
    # The config stored with the weights: the data it was trained on and every training param.
    config = {**({"num_samples": data.num_samples} if data.num_samples is not None else {}),
              "emb_dim": data.emb_dim, "image_size": data.image_size, "text_model": data.text_model,
              **cfg.recorded(), "model": asdict(model_cfg), "world_size": world}
    if cfg.ac_coef > 0 and data.attributes:  # the heads' labels, so that load_discriminator can rebuild them
        config["attributes"] = data.attributes
    if ground is not None:  # a run resumes only on the grounding it started with
        from t2i.ground import fingerprint, text_head_blob

        config["grounding"] = fingerprint(ground)
    head = text_head_blob(ground) if coded else None  # saved with G (and D): generator.pt turns captions into images alone
    ckpt_path = Path(checkpoint_dir or out_dir) / CHECKPOINT
    saved = load_state(ckpt_path, device)
    was = saved["config"].get("precision") if saved is not None else None
    if auto and was in ("fp32", "bf16"):  # auto keeps the precision of a run it resumes (e.g. one moved from CPU to CUDA)
        kept = {**config, "precision": was}
        if not resume_blockers(saved, kept):
            config, cfg = kept, cfg.model_copy(update={"precision": was})

    t = trainables(cfg, model_cfg, device, world, ground, data.attributes)

    def seen_by_text(net: torch.nn.Module) -> torch.nn.Module:
        """G or D as a caption's sentence embedding reaches it."""
        if not coded:
            return net
        from t2i.ground import Coded

        return Coded(net, t.ground.text)
    G, D = t.G, t.D
    g = torch.Generator().manual_seed(cfg.seed + 100_003 * rank)  # every random draw of the loop
    fixed_z = torch.randn(64, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
    step = epoch = step_in_epoch = 0
    saved_at = None  # the step of this run's last checkpoint (resumed from, or written)
    if (saved := _resume(ckpt_path, saved, config, t, g, rank)) is not None:
        step, epoch, step_in_epoch = saved["step"], saved["epoch"], saved["step_in_epoch"]
        saved_at = step
    resumed = saved_at is not None
    log = TrainLog(live_dir if rank == 0 else None, saved_at)  # only rank 0 writes

    def checkpoint() -> None:
        nonlocal saved_at
        # BatchNorm running stats differ per rank (each saw its own batches): average them, so
        # every rank holds, and the file stores, the same buffers.
        all_reduce_mean([b for m in (G, D) for b in m.buffers() if b.is_floating_point()])
        rngs = all_gather_object(g.get_state())  # every rank's stream, so a resume replays each
        saved_at = step
        if rank == 0:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            save_torch({"config": config, "G": G.state_dict(), "D": D.state_dict(),
                        "opt_g": t.opt_g.state_dict(), "opt_d": t.opt_d.state_dict(), "rng": rngs[0],
                        **({"text_head": head} if head else {}),
                        **({"rng_ranks": rngs} if world > 1 else {}),
                        "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch}, ckpt_path)

    def guard(name: str, loss: torch.Tensor) -> None:
        """Stop before a non-finite loss updates a model: every step on CPU; on GPU (where reading
        the flag waits for the device) on logging and checkpoint steps only."""
        upcoming = step + 1
        if device != "cpu" and upcoming % cfg.log_every and upcoming % cfg.checkpoint_every:
            return
        bad = (~torch.isfinite(loss)).float()
        all_reduce_mean([bad])  # every rank stops if any rank diverged
        if bad.item() > 0:
            where = f"last good checkpoint: {ckpt_path} (step {saved_at})" if saved_at else "no checkpoint of this run"
            raise T2IError(f"non-finite loss at step {upcoming} ({name}={loss.item()}); stopped, {where}")

    loader = Loader(train_urls, cfg.batch_size, shuffle=cfg.shuffle_buffer, seed=cfg.seed, workers=cfg.workers,
                    rank=rank, world=world, steps=steps, pin_memory=device.startswith("cuda"))
    start_step, seen, t0 = step, 0, time.perf_counter()
    out: dict[str, torch.Tensor] = {}
    try:
        with (sole_writer(ckpt_path.parent, "t2i train") if rank == 0 else contextlib.nullcontext(),
              tqdm(desc="train", unit="step", disable=rank != 0 or not progress, initial=step) as bar):
            while epoch < cfg.epochs:
                G.train(), D.train()
                for i, batch in enumerate(loader.epoch(epoch)):
                    if i < step_in_epoch:
                        continue  # resuming mid-epoch: replay the same order, skip what was done
                    x = step_inputs(batch, cfg, g, device, t)
                    out = gan_step(t, x, cfg, guard=guard)
                    step, step_in_epoch, seen = step + 1, i + 1, seen + x.real.size(0)
                    log.stepped()
                    bar.update(1)
                    if step % cfg.log_every == 0:  # the only steps that read values back from the device
                        last = {k: v.item() for k, v in out.items()}
                        log.metrics(step, {**last, "epoch": epoch})
                        bar.set_postfix(epoch=epoch + 1, d=f"{last['loss_d']:.3f}", g=f"{last['loss_g']:.3f}",
                                        img_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}")
                    if step % cfg.checkpoint_every == 0:
                        checkpoint()
                    if on_step is not None:
                        on_step(step, G, D)
                epoch, step_in_epoch = epoch + 1, 0
                log.grid(epoch, seen_by_text(G), fixed_z, sample_emb, sample_captions, device)
                if probe is not None and rank == 0:
                    log.metrics(step, probe(seen_by_text(D)), prefix="d_check/")
                G.train()
    except KeyboardInterrupt:
        if rank == 0:
            again = f"rerun to resume from step {saved_at}" if saved_at else "no checkpoint of this run yet"
            print(f"train: interrupted at step {step}; {again}", file=sys.stderr)
        raise
    if step == 0:
        raise T2IError(f"no training step ran: fewer than batch_size={cfg.batch_size} training images?")
    if step != start_step:  # a finished checkpoint is left as it was written
        checkpoint()
    final = {k: v.item() for k, v in out.items()}  # this run's last losses (empty: no step ran in this run)
    if rank == 0:
        if final and step % cfg.log_every:  # logged even off the log_every grid
            log.metrics(step, {**final, "epoch": epoch - 1})
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_generator(Path(out_dir) / GENERATOR, G.cpu(), config, head)
    log.end()
    return {"steps": step, "epochs": epoch, "resumed": resumed, **final}


@torch.no_grad()
def _sample_grid(G: torch.nn.Module, z: torch.Tensor, emb: torch.Tensor, captions: list[str] | None,
                 path: Path, device: str) -> None:
    """Fixed captions (rows) x fixed noise (columns) -> PNG with the captions drawn beside."""
    from t2i.grid import make_grid, save_image

    G.eval()
    rows, cols = emb.size(0), max(1, z.size(0) // max(emb.size(0), 1))
    e = emb.to(device).repeat_interleave(cols, dim=0)  # (rows*cols, D)
    images = G(z[: rows * cols].to(device), e).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images, nrow=cols, labels=captions), path)
