"""``t2i ground``: the text code grounded in images -> data/grounding/<dataset> (ground.pt, metrics.json)."""

from __future__ import annotations

from pathlib import Path

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Train a text head and an image encoder contrastively on the training split; report how
    well the code tells a caption from the same caption with one attribute changed."""
    p = params(params_file, overrides)
    import torch

    from t2i import probes
    from t2i.data.loader import batches, embedded_urls, to_float
    from t2i.device import pick_device
    from t2i.ground import train_grounding

    from t2i.data.shards import read_manifest

    at = Artifacts(data, p.dataset)
    n_train = read_manifest(at.embeddings)["splits"]["train"]["count"]
    cfg = p.ground.model_copy(update={"batch_size": max(2, min(p.ground.batch_size, n_train))})  # a small split: one batch
    found, test = probes.load_probes(at.embeddings), None
    if found is not None:  # the report needs the test images the probes are keyed by
        b = list(batches(embedded_urls(at.embeddings, "test"), 256, drop_last=False))
        test = to_float(torch.cat([x["image"] for x in b])), [k for x in b for k in x["key"]]
    with Timer() as t:
        summary = train_grounding(embedded_urls(at.embeddings, "train"), at.grounding_dir, cfg,
                                  device=pick_device(cfg.device), test=test, probes=found)
    shown = {k: v for k, v in summary.items() if k.startswith(("ground_check/", "cos/code/"))}
    done("ground", t.seconds, f"{summary['steps']} steps, loss {summary['loss'][-1]} {shown} -> {at.grounding_dir}")
