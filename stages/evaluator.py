"""``t2i evaluator``: train the fixed evaluator on real training images -> data/evaluator/<dataset>."""

from __future__ import annotations

from pathlib import Path

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Fit the attribute classifier + text-space projection that scores generated images."""
    p = params(params_file, overrides)
    from t2i.data.loader import embedded_urls
    from t2i.evaluator import train_evaluator
    from t2i.device import pick_device

    at = Artifacts(data, p.dataset)
    out = at.evaluator
    with Timer() as t:
        summary = train_evaluator(embedded_urls(at.embeddings, "train"), out, p.evaluator,
                                  device=pick_device(p.evaluator.device))
    done("evaluator", t.seconds, f"{summary} -> {out}")
