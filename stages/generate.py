"""``t2i generate``: captions -> an image grid (not a DVC stage; for people)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from stages.common import DataDir


def main(
    captions: Annotated[list[str], typer.Argument(help="One or more captions.")],
    n: Annotated[int, typer.Option("-n", help="Images per caption.")] = 8,
    out: Annotated[Path, typer.Option("--out", help="Grid PNG to write.")] = Path("grid.png"),
    seed: Annotated[int, typer.Option(help="Noise seed (same seed, same images).")] = 0,
    checkpoint: Annotated[Optional[Path], typer.Option(help="generator.pt (default: data/models/<dataset>/).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset whose generator to use.")] = "synthetic-flowers",
    text_model: Annotated[Optional[str], typer.Option(help="Override the text model stored in the checkpoint.")] = None,
    each: Annotated[Optional[Path], typer.Option(help="Also write one PNG per image into this folder.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    data: DataDir = Path("data"),
) -> None:
    """Draw ``-n`` images for each caption with the trained generator."""
    from t2i.grid import make_grid
    from t2i.generate import generate
    from t2i.io import atomic_file

    images = generate(checkpoint or data / "models" / dataset / "generator.pt", captions, n=n, seed=seed,
                      device=device, text_model=text_model)
    with atomic_file(out) as tmp:
        make_grid(images, nrow=n, labels=captions).save(tmp, format="PNG")
    if each is not None:
        each.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            with atomic_file(each / f"{i // n:03d}_{i % n:02d}.png") as tmp:
                make_grid(img[None], nrow=1).save(tmp, format="PNG")
    typer.echo(f"generate: {len(images)} images -> {out}")
