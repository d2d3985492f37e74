"""``synthetic-flowers``: the built-in dataset, drawn procedurally (see ``t2i/data/synth.py``)."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from t2i.data import synth
from t2i.params import Params


def prepare_synthetic(folder: Path, params: Params, progress: bool = True) -> dict:
    cfg = params.synth
    with tqdm(total=cfg.num_images, desc="synth", unit="img", disable=not progress) as bar:
        return synth.write(folder, cfg.num_images, cfg.render_size, cfg.seed, cfg.test_fraction, progress=bar.update)
