"""Text -> images with a trained generator: ``t2i generate "a caption" -n 8 --out grid.png``."""

from __future__ import annotations

from pathlib import Path

import torch

from t2i import T2IError
from t2i.checkpoint import load_generator
from t2i.data.raw import check_captions


BATCH = 256  # images drawn at a time


@torch.no_grad()
def fake_images(generator: torch.nn.Module, z: torch.Tensor, emb: torch.Tensor, device: str,
                batch_size: int = BATCH) -> torch.Tensor:
    """G(z, emb) in batches of ``batch_size`` -> (N, 3, S, S) float in [-1, 1] on the CPU."""
    return torch.cat([generator(zb.to(device), eb.to(device)).cpu()
                      for zb, eb in zip(z.split(batch_size), emb.split(batch_size))])


def load_with_text(generator_path: Path, device: str, text_model: str | None = None):
    """The generator (eval mode), its stored config and its text encoder (``text_model``, or the
    one it was trained with), on the resolved ``device``; an encoder of another size is an error."""
    from t2i.text import TextEncoder

    G, config = load_generator(generator_path, device)
    if config.get("text") == "oracle":
        raise T2IError(f"{generator_path} was trained with train.text: oracle (the attributes each caption names, "
                       "a diagnostic): it draws no free captions; t2i evaluate scores it")
    encoder = TextEncoder(text_model or config["text_model"], device)
    if encoder.dim != G.cfg.emb_dim:
        raise T2IError(f"text model {encoder.name!r} gives {encoder.dim}-d embeddings but "
                       f"{generator_path} was trained on {G.cfg.emb_dim}-d ones ({config['text_model']})")
    return G, config, encoder


def generate(generator_path: Path, captions: list[str], *, n: int = 8, seed: int = 0,
             device: str = "cpu", text_model: str | None = None) -> torch.Tensor:
    """(len(captions) * n, 3, S, S) images in [-1, 1]: ``n`` noise vectors per caption."""
    from t2i.device import pick_device

    check_captions(captions, "t2i generate")
    if n < 1:
        raise T2IError(f"-n must be at least 1, got {n}")
    device = pick_device(device)
    G, config, encoder = load_with_text(generator_path, device, text_model)
    emb = torch.from_numpy(encoder.encode(captions)).to(device)  # (C, D)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(len(captions) * n, G.cfg.z_dim, generator=g).to(device)
    emb = emb.repeat_interleave(n, dim=0)  # (C * n, D)
    return fake_images(G, z, emb, device, BATCH)
