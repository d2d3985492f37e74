"""A text code grounded in images: Reed et al.'s recipe, a text encoder trained on the dataset's
own image-caption pairs and then fixed for GAN training.

MiniLM's sentence space is ruled by the wording: two captions of one flower in two templates lie
further apart than one template with another centre colour. ``Grounding`` learns, on the
TRAINING split only, a head on the frozen sentence embedding (``TextHead``, the code G and D are
conditioned on with ``train.text: grounded``) together with a small image encoder
(``ImageEncoder``, the one G's matching loss scores fakes with), by a symmetric contrastive loss:
each image against its caption, the batch's other captions as negatives, except those that
describe the image just as well (``t2i.named.fits``); with ``ground.near_miss``, also captions
of other images that miss this one on one attribute alone (``t2i.named.NearMisses``).

The image encoder must see small parts (the evaluator could not read the centre colour until it
attended over local colour codes, docs/evaluation.md): ``glimpses`` attention maps over a 16x16
grid of cells, each cell a colour code of its own pixels beside an 18 px context, plus the
pooled deep features for counts and shapes. It shares nothing with the evaluator but the
augmentation: other layers, other weights, another seed (``ground.seed``), so that the scorer
and the trainer do not share a blind spot.

``ground.pt`` holds both parts and their config; ``metrics.json`` beside it says, on the test
split's attribute probes (``t2i.probes``), how often the code prefers an image's true caption
over the same caption with one attribute changed (``ground_check/<attr>``, 0.5 = blind to it),
and the cosines of two wordings of one flower, of one wording with one attribute changed, and
with the petal and centre colours swapped, in MiniLM's space and in the code's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import T2IError
from t2i.data.loader import batches, to_float
from t2i.augment import shift_turn_flip
from t2i.io import atomic_dir, dump_json, load_model, save_torch
from t2i.losses import contrastive_loss
from t2i.named import fits
from t2i.params import IMAGE_SIZES, GroundParams

FILE = "ground.pt"
METRICS = "metrics.json"


class TextHead(nn.Module):
    """(..., emb_dim) sentence embeddings -> (..., dim) unit text codes: a two-layer MLP beside a
    linear map (the MLP learns what the linear view of MiniLM's space mixes up)."""

    def __init__(self, emb_dim: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(emb_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.skip = nn.Linear(emb_dim, dim, bias=False)

    @property
    def in_dim(self) -> int:
        """The sentence embedding's size."""
        return self.skip.in_features

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(emb) + self.skip(emb), dim=-1)


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class ImageEncoder(nn.Module):
    """(B, 3, S, S) images in [-1, 1] -> (B, dim) unit image codes. Shapes for S = 64, width 32."""

    def __init__(self, image_size: int, dim: int, width: int, glimpses: int) -> None:
        super().__init__()
        if image_size not in IMAGE_SIZES:
            raise T2IError(f"grounding image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
        n = int(math.log2(image_size)) - 4  # stride-2 convs down to the 16x16 grid of cells
        trunk, c = [], 3
        for i in range(n):  # (B, 3, 64, 64) -> (B, 32, 32, 32) -> (B, 64, 16, 16)
            trunk += _conv(c, width * 2 ** min(i, 1), k=4, stride=2)
            c = width * 2 ** min(i, 1)
        self.trunk = nn.Sequential(*trunk, *_conv(c, 2 * width))  # (B, 64, 16, 16): 18 px of context per cell
        self.colour = nn.Sequential(  # (B, 32, 16, 16): each cell's own pixels only
            nn.Conv2d(3, width, 3, 1, 1), nn.ReLU(inplace=True), nn.AvgPool2d(image_size // 16))
        self.attend = nn.Conv2d(3 * width, glimpses, 1)  # (B, Q, 16, 16): where each glimpse looks
        self.deep = nn.Sequential(  # (B, 64, 16, 16) -> (B, 128, 8, 8) -> (B, 128, 4, 4)
            nn.MaxPool2d(2), *_conv(2 * width, 4 * width), nn.MaxPool2d(2), *_conv(4 * width, 4 * width))
        self.out = nn.Linear(glimpses * 3 * width + 8 * width, dim)

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 2 width, 16, 16): the trunk's features of each cell, with their context."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.cells(x)  # (B, 64, 16, 16)
        cells = torch.cat([self.colour(x), context], dim=1)  # (B, 96, 16, 16)
        where = self.attend(cells).flatten(2).softmax(dim=-1)  # (B, Q, 256)
        seen = torch.bmm(where, cells.flatten(2).transpose(1, 2))  # (B, Q, 96): the attended cells
        deep = self.deep(context)  # (B, 128, 4, 4)
        pooled = torch.cat([deep.mean(dim=(2, 3)), deep.amax(dim=(2, 3))], dim=1)  # (B, 256)
        return F.normalize(self.out(torch.cat([seen.flatten(1), pooled], dim=1)), dim=-1)  # (B, dim)


class Grounding(nn.Module):
    """The text head and the image encoder, trained together; ``forward(img, emb)`` is the
    cosine of their codes, (B,), a scorer of (image, caption) pairs like a matching-aware D."""

    def __init__(self, emb_dim: int, image_size: int, dim: int = 128, hidden: int = 512, width: int = 32,
                 glimpses: int = 4) -> None:
        super().__init__()
        self.config = {"emb_dim": emb_dim, "image_size": image_size, "dim": dim, "hidden": hidden,
                       "width": width, "glimpses": glimpses}
        self.text = TextHead(emb_dim, dim, hidden)
        self.image = ImageEncoder(image_size, dim, width, glimpses)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    @property
    def cell_shape(self) -> dict[str, int]:
        """What a D on ``image.cells`` is built for (``t2i.families.common.GroundHead``): their
        channels, and the text code's size."""
        return {"channels": 2 * self.config["width"], "dim": self.config["dim"]}

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100)).exp()

    def forward(self, img: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return (self.image(img) * self.text(emb)).sum(dim=-1)


class Coded(nn.Module):
    """A G or D conditioned on the grounded text code, called with sentence embeddings, as every
    reader of a generator calls it: ``Coded(G, head)(z, emb) == G(z, head(emb))``."""

    def __init__(self, net: nn.Module, text: TextHead) -> None:
        super().__init__()
        self.net, self.text = net, text

    @property
    def cfg(self):
        """The wrapped model's config, with the sentence embedding's size as its ``emb_dim``."""
        return dataclasses.replace(self.net.cfg, emb_dim=self.text.in_dim)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, *args, **kwargs):
        return self.net(x, self.text(emb), *args, **kwargs)


def text_head_blob(model: Grounding) -> dict:
    """What a generator or checkpoint file carries to turn a caption's embedding into its code."""
    c = model.config
    return {"config": {"emb_dim": c["emb_dim"], "dim": c["dim"], "hidden": c["hidden"]},
            "state_dict": {k: v.cpu() for k, v in model.text.state_dict().items()}}


def load_text_head(blob: dict, device: str = "cpu") -> TextHead:
    head = TextHead(**blob["config"])
    head.load_state_dict(blob["state_dict"])
    return head.to(device).eval().requires_grad_(False)


def fingerprint(model: Grounding) -> str:
    """md5 of the grounding's weights: recorded in the training config, so that a run resumes
    only on the grounding it started with."""
    h = hashlib.md5()
    for k, v in model.state_dict().items():
        h.update(k.encode()), h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_grounding(model: Grounding, path: str | os.PathLike) -> None:
    """``model`` as ``load_grounding`` reads it: its config and weights."""
    save_torch({"config": model.config, "state_dict": model.state_dict()}, Path(path))


def load_grounding(path: str | os.PathLike, device: str = "cpu") -> Grounding:
    """A saved Grounding, frozen, in eval mode; a missing or unreadable file is a T2IError."""
    return load_model(path, Grounding, "grounding", "run the ground stage first (dvc repro ground)",
                      device).requires_grad_(False)


def new_grounding(cfg: GroundParams, emb_dim: int, image_size: int) -> Grounding:
    """An untrained Grounding of ``cfg``'s shape, its weights drawn from ``cfg.seed`` (the global
    random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return Grounding(emb_dim, image_size, cfg.dim, cfg.hidden, cfg.width, cfg.glimpses)


def train_grounding(train_urls: list[str], out_dir: str | os.PathLike, cfg: GroundParams = GroundParams(), *,
                    device: str = "cpu", test: tuple[torch.Tensor, list[str]] | None = None,
                    probes: dict | None = None, progress: bool = True) -> dict:
    """Train a Grounding on the training images and their captions' embeddings; write ``ground.pt``
    and ``metrics.json`` (``report``, when ``test`` images (N, 3, S, S) in [-1, 1] with their
    sample keys and the attribute ``probes`` are given) to ``out_dir`` in one atomic swap."""
    if not train_urls:
        raise T2IError("no training shards given to train the grounding")
    old_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        start = time.perf_counter()
        first = next(batches(train_urls, 2, drop_last=False))
        size, emb_dim = first["image"].shape[-1], first["emb"].shape[-1]
        model = new_grounding(cfg, emb_dim, size).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        bank = None
        if cfg.near_miss > 0:  # every training caption, to draw each image's near misses from
            from t2i.named import NearMisses

            bank = NearMisses.collect(batches(train_urls, 256, drop_last=False))
        losses, steps = [], 0
        for epoch in range(cfg.epochs):
            model.train()
            total, seen = 0.0, 0
            for b in batches(train_urls, cfg.batch_size, shuffle=1000, seed=cfg.seed, epoch=epoch, drop_last=True):
                x = shift_turn_flip(to_float(b["image"]), gen, max(1, size // 16))  # (B, 3, S, S)
                B, C, _ = b["emb"].shape
                pick = torch.randint(0, C, (B,), generator=gen)  # one caption per image
                emb = b["emb"][torch.arange(B), pick]  # (B, D)
                same = fits(b["meta"], pick[:, None], b["captions"])  # (B, B) pairs that are no negatives
                extra = extra_fits = None
                if bank is not None:  # drawn after the step's other draws: off, the bytes stay as they were
                    values = bank.values(b["meta"])  # (B, A)
                    miss = bank.draw(values, cfg.near_miss, gen).flatten()  # (B * near_miss,)
                    extra_fits = bank.fits(values, miss)  # (B, B * near_miss) no negatives either
                    extra = model.text(bank.emb[miss].to(device))  # (B * near_miss, dim)
                loss = contrastive_loss(model.image(x.to(device)), model.text(emb.to(device)), model.scale(), same,
                                        extra=extra, extra_fits=extra_fits)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, seen, steps = total + loss.item() * B, seen + B, steps + 1
            if not seen:
                raise T2IError(f"ground.batch_size={cfg.batch_size} is more than the training images")
            losses.append(round(total / seen, 4))
            if progress:
                print(f"ground epoch {epoch + 1}/{cfg.epochs}: loss={losses[-1]:.3f}", file=sys.stderr)
        model.eval().requires_grad_(False)
        metrics = report(model, *test, probes, device=device) if test is not None and probes is not None else {}
        with atomic_dir(Path(out_dir)) as tmp:
            save_grounding(model, tmp / FILE)
            (tmp / METRICS).write_bytes(dump_json({**metrics, "train/loss": losses[-1]}))
        return {"steps": steps, "loss": losses, "seconds": round(time.perf_counter() - start, 1), **metrics}
    finally:
        torch.set_num_threads(old_threads)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The mean cosine of matching rows."""
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()


@torch.no_grad()
def report(model: Grounding, images: torch.Tensor, keys: list[str], probes: dict, device: str = "cpu") -> dict:
    """On the test split: ``ground_check/<attr>``, the share of images whose code scores the true
    caption above the one with that attribute changed (``t2i.probes.caption_check``), and the
    mean cosines (``cos/<space>/<pair>``, space ``sentence`` or ``code``) of two wordings of one
    flower (``wording``), of one wording with one attribute changed (``<attr>``) and with the
    petal and centre colours swapped (``swapped``)."""
    from t2i.probes import caption_check

    out = {f"ground_check/{k}": v for k, v in caption_check(model, images, probes, keys, 64, device).items()}
    pairs = {"wording": probes["pairs"]["wording"], "swapped": probes["pairs"]["swapped"],
             **{a: {"a_emb": r["true_emb"], "b_emb": r["altered_emb"]} for a, r in probes["d_check"].items()}}
    for name, p in pairs.items():
        out[f"cos/sentence/{name}"] = cosine(p["a_emb"], p["b_emb"])
        out[f"cos/code/{name}"] = cosine(*(model.text(p[e].float().to(device)) for e in ("a_emb", "b_emb")))
    return {k: round(v, 4) for k, v in out.items()}
