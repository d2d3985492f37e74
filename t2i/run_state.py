"""A training run's state: the record stored with its weights, where the run is (step, epoch,
step in epoch), resume and save. The checkpoint's layout is ``t2i.checkpoint``'s.

A rerun whose record matches the checkpoint's, but for ``checkpoint.FREE_ON_RESUME``, resumes
from it and, on CPU, ends with exactly the weights an uninterrupted run would have; raising
``epochs`` continues a finished run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from t2i.checkpoint import load_state, restore, resume_blockers, save_checkpoint
from t2i.distributed import all_gather_object, all_reduce_mean
from t2i.families.common import stored_shapes
from t2i.params import TrainParams

if TYPE_CHECKING:
    from t2i.gan import Trainables
    from t2i.ground import Grounding
    from t2i.train import DataSpec


def run_record(cfg: TrainParams, data: DataSpec, model_cfg, world: int, ground: Grounding | None) -> dict:
    """The config stored with the weights: the data it was trained on, every training param the
    family reads (``TrainParams.recorded``), the models' shapes and the number of processes;
    AC-GAN's labels (so that ``load_discriminator`` rebuilds its heads), the grounding's
    fingerprint (a run resumes only on the grounding it started with) and the ground head's
    shape (``ground_cells``) where they are used."""
    out = {**({"num_samples": data.num_samples} if data.num_samples is not None else {}),
           "emb_dim": data.emb_dim, "image_size": data.image_size, "text_model": data.text_model,
           **cfg.recorded(), "model": stored_shapes(model_cfg), "world_size": world}
    if (cfg.ac_coef > 0 or cfg.text == "oracle") and data.attributes:  # AC-GAN's labels, the oracle's codes
        out["attributes"] = data.attributes
    if ground is not None:
        from t2i.ground import fingerprint

        out["grounding"] = fingerprint(ground)
        if cfg.ground_d_coef > 0:  # the ground head's shape, for load_discriminator
            out["ground_cells"] = ground.cell_shape
    return out


@dataclass
class RunState:
    """Where a run is and what it stores. Every rank holds one; only rank 0 writes."""

    path: Path  # checkpoint.pt
    config: dict  # the record (``run_record``)
    text_head: dict | None  # the grounded text head saved with G and D (``t2i.ground.text_head_blob``)
    rank: int = 0
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    saved_at: int | None = None  # the step of this run's last checkpoint (resumed from, or written)

    @classmethod
    def open(cls, path: Path, cfg: TrainParams, config: dict, text_head: dict | None, rank: int, device: str,
             auto: bool) -> tuple[RunState, TrainParams, dict | None]:
        """The state of a run recorded as ``config``, its params and the checkpoint at ``path``
        (None when there is none). ``auto`` (``precision: auto``) keeps the precision of a
        checkpoint it can resume (a run moved from CPU to CUDA, say), in the params and the record."""
        saved = load_state(path, device)
        was = saved["config"].get("precision") if saved is not None else None
        if auto and was in ("fp32", "bf16"):
            kept = {**config, "precision": was}
            if not resume_blockers(saved, kept):
                config, cfg = kept, cfg.model_copy(update={"precision": was})
        return cls(Path(path), config, text_head, rank), cfg, saved

    def resume(self, saved: dict | None, nets: Trainables, rng: torch.Generator) -> bool:
        """Load ``saved`` into ``nets`` and ``rng`` (this rank's stream) and take its place, if its
        record matches this run's (but for the keys free on resume); say why not if not."""
        if saved is None:
            return False
        if why := resume_blockers(saved, self.config):
            self.say(f"train: not resuming {self.path}, starting over: {'; '.join(why)}")
            return False
        rngs, self.step, self.epoch, self.step_in_epoch = restore(saved, nets)
        if self.rank < len(rngs):
            rng.set_state(rngs[self.rank])  # a rank the old run did not have keeps its fresh stream
        self.saved_at = self.step
        old, world = saved["config"].get("world_size", 1), self.config["world_size"]
        if old != world:
            self.step_in_epoch = self.step_in_epoch * old // world  # the same samples, in this run's steps
            batch = self.config["batch_size"]
            self.say(f"train: resuming {self.path} (written by {old} process{'es' * (old > 1)}) on {world}: the "
                      f"global batch goes from {old * batch} to {world * batch} images per step ({batch} per "
                      f"process) at the same learning rate, and the rest of epoch {self.epoch + 1} reads its "
                      f"samples in another order; the result will differ from an uninterrupted run on either")
        return True

    def save(self, nets: Trainables, rng: torch.Generator) -> None:
        """Checkpoint the run (every rank calls it; rank 0 writes). BatchNorm running statistics
        differ per rank (each saw its own batches): they are averaged first, so every rank holds,
        and the file stores, the same buffers."""
        averaged = (nets.G, nets.D) if nets.G_ema is None else (nets.G, nets.D, nets.G_ema.module)
        all_reduce_mean([b for m in averaged for b in m.buffers() if b.is_floating_point()])
        rngs = all_gather_object(rng.get_state())  # every rank's stream, so a resume replays each
        self.saved_at = self.step
        if self.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(self.path, self.config, nets, rngs, self.text_head, self.step, self.epoch,
                            self.step_in_epoch)

    def say(self, message: str) -> None:
        """Print ``message`` to stderr, from rank 0 only."""
        if self.rank == 0:
            print(message, file=sys.stderr)
