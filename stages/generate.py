"""``t2i generate``: captions -> an image grid (not a DVC stage; for people)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from stages.common import DataDir, Overrides, ParamsFile, params
from t2i.paths import Artifacts

MAX_COLUMNS = 16  # images per grid row


def main(
    captions: Annotated[list[str], typer.Argument(help="One or more captions.")],
    n: Annotated[int, typer.Option("-n", help="Images per caption.")] = 8,
    out: Annotated[Path, typer.Option("--out", help="Grid PNG to write.")] = Path("grid.png"),
    seed: Annotated[int, typer.Option(help="Noise seed (same seed, same images).")] = 0,
    checkpoint: Annotated[Optional[Path], typer.Option(help="generator.pt (default: that of params.yaml's dataset).")] = None,
    text_model: Annotated[Optional[str], typer.Option(help="Override the text model stored in the checkpoint.")] = None,
    each: Annotated[Optional[Path], typer.Option(help="Also write one PNG per image into this folder.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    params_file: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
    data: DataDir = Path("data"),
) -> None:
    """Draw -n images for each caption with the trained generator of params.yaml's dataset
    (-S dataset=cub for another; the format follows --out's extension: .png, .jpg, .jpeg or .webp)."""
    from t2i import T2IError
    from t2i.grid import image_format, make_grid, save_image
    from t2i.generate import generate

    if out.is_dir():
        raise T2IError(f"--out {out} is a folder: name an image file, e.g. {out / 'grid.png'}")
    image_format(out)  # a bad extension fails before any work
    if each is not None and each.exists() and not each.is_dir():
        raise T2IError(f"--each {each} is a file: name a folder")
    images = generate(checkpoint or Artifacts(data, params(params_file, overrides).dataset).generator, captions, n=n, seed=seed,
                      device=device, text_model=text_model)
    per_row = min(n, MAX_COLUMNS)  # a caption's images wrap onto rows of at most MAX_COLUMNS
    rows = -(-n // per_row)
    tiles = torch.cat([torch.cat([c, c.new_ones(rows * per_row - n, *c.shape[1:])])  # white cells pad a row
                       for c in images.split(n)])
    labels = [caption if r == 0 else "" for caption in captions for r in range(rows)]
    save_image(make_grid(tiles, nrow=per_row, labels=labels), out)
    if each is not None:
        each.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            save_image(make_grid(img[None], nrow=1), each / f"{i // n:03d}_{i % n:02d}.png")
    typer.echo(f"generate: {len(images)} images -> {out}")
