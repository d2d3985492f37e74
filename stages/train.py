"""``t2i train``: the ``train.arch`` family on the embedded shards -> data/models/<dataset>/generator.pt."""

from __future__ import annotations

from pathlib import Path

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts
from t2i.data.shards import read_manifest


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Train (resuming from data/checkpoints/<dataset> when the params are unchanged)."""
    p = params(params_file, overrides)
    from t2i.data.loader import batches, embedded_urls
    from t2i.train import DataSpec, training_loop

    at = Artifacts(data, p.dataset)
    src = at.embeddings
    manifest = read_manifest(src)
    urls = embedded_urls(src, "train")
    show = "test" if "test" in manifest["splits"] else "train"  # grid captions: unseen ones if any
    fixed = next(batches(embedded_urls(src, show), 8, drop_last=False))
    with Timer() as t:
        summary = training_loop(
            urls, at.models, p.train,
            data=DataSpec(emb_dim=manifest["emb_dim"], image_size=manifest["image_size"],
                          text_model=manifest["text_model"], num_samples=manifest["splits"]["train"]["count"]),
            checkpoint_dir=at.checkpoints, live_dir=at.train_logs,
            sample_emb=fixed["emb"][:, 0], sample_captions=[c[0] for c in fixed["captions"]],
        )
    how = "resumed, " if summary["resumed"] else ""
    done("train", t.seconds, f"{how}{summary['steps']} steps, {summary['epochs']} epochs -> {at.models}")
