"""Image grids with a caption strip per row (per-epoch samples, evaluation grids, ``t2i generate``)."""

from __future__ import annotations

import os

import torch
from PIL import Image, ImageDraw, ImageFont

from t2i import T2IError
from t2i.data.loader import to_uint8
from t2i.io import atomic_file
from t2i.losses import interpolate_embeddings

PAD = 2  # pixels between grid cells
LABEL_WIDTH = 256  # pixels of the caption strip left of each grid row
TEXT, BACKGROUND = (20, 20, 20), (255, 255, 255)
FONT_SIZE = 11
INTERP_STEPS = 8  # images in a GAN-INT strip (evaluation's interpolation.png, ``t2i serve``)


def _font():
    """DejaVu Sans (Latin, Greek, Cyrillic, Vietnamese, many symbols) where the system has it
    (Debian: fonts-dejavu-core), else Pillow's built-in font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", FONT_SIZE)
    except OSError:
        return ImageFont.load_default()


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` pixels wide."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _text_block(text: str, width: int, height: int, font) -> Image.Image:
    """A white ``width`` x ``height`` tile with ``text`` wrapped to fit; lines that don't fit are cut."""
    tile = Image.new("RGB", (width, height), BACKGROUND)
    line_h = font.getbbox("Ay")[3] + 2
    lines = _wrap(text, font, width - 2 * PAD)
    fit = max(1, (height - PAD) // line_h)
    if len(lines) > fit:
        lines = lines[:fit]
        lines[-1] += " ..."
    pen = ImageDraw.Draw(tile)
    for i, line in enumerate(lines):
        pen.text((PAD, PAD + i * line_h), line, fill=TEXT, font=font)
    return tile


def make_grid(images: torch.Tensor, nrow: int, labels: list[str] | None = None,
              label_width: int = LABEL_WIDTH) -> Image.Image:
    """Tile (N, 3, S, S) images, ``nrow`` per row, with an optional caption strip per row."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise T2IError(f"make_grid expects (N, 3, S, S) images, got shape {tuple(images.shape)}")
    if nrow < 1:
        raise T2IError(f"make_grid nrow must be >= 1, got {nrow}")
    pixels = to_uint8(images).cpu().permute(0, 2, 3, 1).contiguous().numpy()  # (N, S, S, 3)
    n, h, w = pixels.shape[:3]
    rows = -(-n // nrow)
    if labels is not None and len(labels) != rows:
        raise T2IError(f"make_grid got {len(labels)} labels for {rows} rows")
    left = label_width + PAD if labels is not None else 0
    canvas = Image.new("RGB", (left + nrow * (w + PAD) + PAD, rows * (h + PAD) + PAD), BACKGROUND)
    font = _font()
    for r in range(rows):
        y = PAD + r * (h + PAD)
        if labels is not None:
            canvas.paste(_text_block(labels[r], label_width, h, font), (PAD, y))
        for c in range(min(nrow, n - r * nrow)):
            canvas.paste(Image.fromarray(pixels[r * nrow + c]), (left + PAD + c * (w + PAD), y))
    return canvas


def gan_int_strip(left: torch.Tensor, right: torch.Tensor, z: torch.Tensor,
                  steps: int = INTERP_STEPS) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator inputs of a GAN-INT strip: the one noise vector ``z`` (1, z_dim) at every
    step, and the caption embedding moving in equal steps from ``left`` (D,) to ``right`` (D,).
    Returns z (steps, z_dim) and emb (steps, D)."""
    emb = torch.stack([interpolate_embeddings(right, left, t) for t in torch.linspace(0, 1, steps).tolist()])
    return z.expand(steps, -1), emb


def add_header(image: Image.Image, lines: list[str]) -> Image.Image:
    """``image`` below a text header: each of ``lines`` wrapped to the image width."""
    font = _font()
    line_h = font.getbbox("Ay")[3] + 2
    wrapped = [line for text in lines for line in _wrap(text, font, image.width - 2 * PAD)]
    header = Image.new("RGB", (image.width, len(wrapped) * line_h + 2 * PAD), BACKGROUND)
    pen = ImageDraw.Draw(header)
    for i, line in enumerate(wrapped):
        pen.text((PAD, PAD + i * line_h), line, fill=TEXT, font=font)
    out = Image.new("RGB", (image.width, header.height + image.height), BACKGROUND)
    out.paste(header, (0, 0))
    out.paste(image, (0, header.height))
    return out


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: str | os.PathLike) -> str:
    """The format an image path's extension asks for; anything else is an error naming the path."""
    fmt = FORMATS.get(os.path.splitext(str(path))[1].lower())
    if fmt is None:
        raise T2IError(f"{path}: unknown image type (use {', '.join(FORMATS)})")
    return fmt


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write ``image`` atomically, as the format of ``path``'s extension (PNG, JPEG or WebP)."""
    fmt = image_format(path)
    with atomic_file(path) as tmp:
        image.save(tmp, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
