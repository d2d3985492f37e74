"""``t2i download``: bring ``dataset`` into data/raw/<dataset> (draw it, or fetch, verify and unpack it)."""

from __future__ import annotations

from pathlib import Path

import typer

from stages.common import DataDir, Overrides, ParamsFile, Timer, done, params
from t2i.paths import Artifacts


def main(params_file: ParamsFile = Path("params.yaml"), overrides: Overrides = None, data: DataDir = Path("data")) -> None:
    """Synthetic flowers are drawn; cub and oxford-102 are downloaded to download.root (verified,
    resumable, kept across reruns) and prepared; hf and folder are read from where they are."""
    p = params(params_file, overrides)
    from t2i.data.sources import prepare_raw

    out = Artifacts(data, p.dataset).raw
    with Timer() as t:
        info = prepare_raw(out, p)
    for name, src in info.get("sources", {}).items():
        pinned = "official md5" if src["official"] else f"md5 {src['md5']}"
        typer.echo(f"  {name}: {src['bytes']} bytes, {pinned}, sha256 {src['sha256']}")
    dropped = info.get("captions", {})
    if dropped.get("images_without_captions") or dropped.get("images_with_too_few_captions"):
        typer.echo(f"  dropped for lack of captions: {dropped['images_without_captions']} without, "
                   f"{dropped['images_with_too_few_captions']} with too few (e.g. "
                   f"{', '.join(dropped['first_without'] + dropped['first_too_few'])})")
    c = info["counts"]
    done("download", t.seconds, f"{c['train']} train + {c['test']} test images -> {out}")
