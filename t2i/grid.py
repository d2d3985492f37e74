"""Image grids with optional caption labels, for sample PNGs."""

from __future__ import annotations

import textwrap

import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) float in [-1, 1] (or uint8) -> uint8."""
    if images.dtype == torch.uint8:
        return images
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int, labels: list[str] | None = None, pad: int = 2,
              label_width: int = 200) -> Image.Image:
    """Tile ``images`` ``nrow`` per row; ``labels[r]`` is drawn in a strip left of row ``r``."""
    images = to_uint8(images).cpu()
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    left = label_width if labels else 0
    grid = Image.new("RGB", (left + nrow * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i in range(n):
        tile = Image.fromarray(images[i].permute(1, 2, 0).numpy(), "RGB")
        grid.paste(tile, (left + pad + (i % nrow) * (w + pad), pad + (i // nrow) * (h + pad)))
    if labels:
        pen, font = ImageDraw.Draw(grid), ImageFont.load_default()
        chars = max(8, label_width // 6)
        lines_fit = max(1, (h + pad) // 11)
        for r, text in enumerate(labels[:rows]):
            wrapped = textwrap.wrap(text, chars)[:lines_fit]
            pen.multiline_text((4, pad + r * (h + pad) + 2), "\n".join(wrapped), fill=(0, 0, 0), font=font, spacing=1)
    return grid
