"""What a training run shows (rank 0 only): the progress bar, DVCLive's logs, a sample grid per
epoch and the probes (``d_check``, ``silhouette``). Every model it runs is put back in the mode it was in.

A resumed run keeps the logs up to its checkpoint and appends; a fresh run replaces the old
logs only once it has taken its first step, so a run that fails before that (bad shard, bad
params) leaves the previous run's logs as they were.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from t2i.modes import evaluating


class Reporter:
    """Logs to ``live_dir`` (None: nothing written, as on ranks other than 0); a progress bar
    from step ``initial`` when ``progress``. ``grid``: the fixed noise (N, z_dim), caption
    embeddings (R, D) and captions of the per-epoch sample grid (embeddings None: no grid).
    ``probe(G, D) -> {metric name: value}`` (None on ranks other than 0) runs after every epoch
    and must draw no random numbers from the run's generators."""

    def __init__(self, live_dir: Path | None, resumed_at: int | None, *, initial: int, progress: bool,
                 grid: tuple[torch.Tensor, torch.Tensor | None, list[str] | None],
                 probe: Callable[[torch.nn.Module, torch.nn.Module], dict[str, float]] | None) -> None:
        self.dir, self.resumed_at, self.live = (Path(live_dir) if live_dir else None), resumed_at, None
        self.grid_z, self.grid_emb, self.grid_captions = grid
        self.probe = probe
        self.bar = tqdm(desc="train", unit="step", disable=not progress, initial=initial)
        self.seen, self.t0 = 0, time.perf_counter()

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

    def stepped(self, images: int) -> None:
        """A step of ``images`` images ran: from now on this run's logs replace the old ones."""
        self._open()
        self.seen += images
        self.bar.update(1)

    def metrics(self, step: int, values: dict[str, float], prefix: str = "train/") -> None:
        if live := self._open():
            live.step = step  # plots are indexed by training step
            for k, v in values.items():
                live.log_metric(f"{prefix}{k}", v)
            live.next_step()

    def losses(self, step: int, epoch: int, out: dict[str, torch.Tensor]) -> dict[str, float]:
        """Log a step's losses (read back from the device here) and show them on the bar."""
        last = {k: v.item() for k, v in out.items()}
        self.metrics(step, {**last, "epoch": epoch})
        rate = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix(epoch=epoch + 1, d=f"{last['loss_d']:.3f}", g=f"{last['loss_g']:.3f}", img_s=f"{rate:.0f}")
        return last

    def epoch_end(self, epoch: int, step: int, G: torch.nn.Module, D: torch.nn.Module, device: str) -> None:
        """The sample grid of ``epoch`` (1-based) and the probe; G and D as the caption's sentence
        embedding reaches them."""
        if self.dir is not None and self.grid_emb is not None:
            sample_grid(G, self.grid_z, self.grid_emb, self.grid_captions,
                        self.dir / "samples" / f"epoch_{epoch:03d}.png", device)
        if self.probe is not None:  # t2i.probes' caption_check and outline_check: eval mode, then as they were
            self.metrics(step, self.probe(G, D), prefix="")

    def end(self) -> None:
        """Close the bar and DVCLive (after the run's last log)."""
        self.bar.close()
        if self.live is not None:
            self.live.end()


@torch.no_grad()
def sample_grid(G: torch.nn.Module, z: torch.Tensor, emb: torch.Tensor, captions: list[str] | None,
                path: Path, device: str) -> None:
    """Fixed captions (rows) x fixed noise (columns) -> PNG with the captions drawn beside; G in
    eval mode meanwhile."""
    from t2i.grid import make_grid, save_image

    rows, cols = emb.size(0), max(1, z.size(0) // max(emb.size(0), 1))
    e = emb.to(device).repeat_interleave(cols, dim=0)  # (rows*cols, D)
    with evaluating(G):
        images = G(z[: rows * cols].to(device), e).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(make_grid(images, nrow=cols, labels=captions), path)
