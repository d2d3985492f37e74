"""``t2i synth``: draw the synthetic flowers into data/raw/synthetic-flowers."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.data import raw_dir, synth
from t2i.io import atomic_dir, write_json_atomic


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Generate the built-in captioned dataset (deterministic for a given seed)."""
    p = params(params_file, overrides)
    cfg = p.synth
    out = raw_dir(data, p.dataset)
    with Timer() as t, atomic_dir(out) as tmp, tqdm(total=cfg.num_images, desc="synth", unit="img") as bar:
        info = synth.write(tmp, cfg.num_images, cfg.render_size, cfg.seed, cfg.test_fraction, progress=bar.update)
        write_json_atomic(tmp / "info.json", info)
    c = info["counts"]
    done("synth", t.seconds, f"{c['train']} train + {c['test']} test images -> {out}")
