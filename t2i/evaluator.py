"""A fixed evaluator network for generated images, trained on real TRAIN images only.

A small CNN maps an SxS image in [-1, 1] to a pooled feature vector. On top sit one classifier
per attribute (petal colour, centre colour, ... from the samples' meta; the class id when a
dataset has no attributes) and a projection into the text-embedding space, trained CLIP-style
against the captions' sentence embeddings. The metrics use all three: attribute accuracy on
fake images, R-precision of image-caption retrieval, and a Frechet distance between features.

Training is deterministic on CPU for a seed: one seeded torch.Generator drives the caption
picks and the augmentation, and the loader's shuffle is seeded per epoch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i import T2IError
from t2i.data.loader import batches
from t2i.io import atomic_file

SUPPORTED_IMAGE_SIZES = (32, 64, 128)
CLASS_HEAD = "class"  # the single head of a dataset without attributes


class Evaluator(nn.Module):
    """Image -> pooled features, per-attribute logits and an L2-normalised text-space projection.

    Shapes below are for the default 64x64, feat_dim=256 config.
    """

    def __init__(self, attributes: dict[str, list[str]], emb_dim: int, image_size: int = 64,
                 feat_dim: int = 256) -> None:
        super().__init__()
        if image_size not in SUPPORTED_IMAGE_SIZES:
            raise T2IError(f"evaluator image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size!r}")
        if not attributes:
            raise T2IError("the evaluator needs at least one attribute (or class) to classify")
        self.attributes = {k: list(v) for k, v in attributes.items()}
        self.emb_dim, self.image_size, self.feat_dim = emb_dim, image_size, feat_dim

        # One conv block per halving, down to a 4x4 map: 64x64 -> widths [32, 64, 128, 256].
        n_blocks = int(math.log2(image_size)) - 2
        widths = [max(feat_dim >> (n_blocks - 1 - i), 16) for i in range(n_blocks)]
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in widths:  # (B, 3, 64, 64) -> (B, 32, 32, 32) -> ... -> (B, 256, 4, 4)
            layers += [
                nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        layers += [  # (B, 256, 4, 4) -> (B, feat_dim, 4, 4)
            nn.Conv2d(c_in, feat_dim, 3, 1, 1, bias=False),
            nn.BatchNorm2d(feat_dim),
            nn.ReLU(inplace=True),
        ]
        self.net = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({k: nn.Linear(feat_dim, len(v)) for k, v in self.attributes.items()})
        self.proj = nn.Linear(feat_dim, emb_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    @property
    def config(self) -> dict:
        return {"attributes": self.attributes, "emb_dim": self.emb_dim,
                "image_size": self.image_size, "feat_dim": self.feat_dim}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, feat_dim), global average pooled."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise T2IError(f"evaluator expects {self.image_size}x{self.image_size} images, "
                           f"got {tuple(x.shape[-2:])}")
        return self.net(x).mean(dim=(2, 3))  # (B, feat_dim, 4, 4) -> (B, feat_dim)

    def forward(self, x: torch.Tensor) -> dict:
        feat = self.features(x)  # (B, feat_dim)
        return {
            "logits": {k: head(feat) for k, head in self.heads.items()},  # {attr: (B, K)}
            "proj": F.normalize(self.proj(feat), dim=-1),  # (B, emb_dim)
            "features": feat,
        }


# --------------------------------------------------------------------------- labels


def _value_key(v: str) -> tuple:
    """Sort numbers numerically ("3" < "10"), then words alphabetically."""
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)


def attribute_values(meta: dict) -> dict[str, str]:
    """{attribute: value as a string} of one sample; the class id when it has no attributes."""
    attrs = meta.get("attributes")
    if attrs:
        return {k: str(v) for k, v in attrs.items()}
    return {CLASS_HEAD: str(meta.get("class_id", -1))}


def discover_attributes(metas: list[dict]) -> dict[str, list[str]]:
    """The vocabulary of every attribute seen in ``metas``, each sorted."""
    seen: dict[str, set[str]] = {}
    for m in metas:
        for k, v in attribute_values(m).items():
            seen.setdefault(k, set()).add(v)
    if CLASS_HEAD in seen:
        seen[CLASS_HEAD].discard("-1")  # samples without a class id teach nothing
    return {k: sorted(v, key=_value_key) for k, v in sorted(seen.items()) if v}


def attribute_labels(metas: list[dict], attributes: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    """{attribute: (N,) vocab index}; -1 where a sample lacks the attribute or has an unseen value."""
    index = {k: {v: i for i, v in enumerate(vocab)} for k, vocab in attributes.items()}
    values = [attribute_values(m) for m in metas]
    return {k: torch.tensor([index[k].get(vals.get(k, ""), -1) for vals in values], dtype=torch.long)
            for k in attributes}


# --------------------------------------------------------------------------- training


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def shift_flip(x: torch.Tensor, gen: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (edges replicated) and horizontal flip.

    Neither changes a colour, a count or a shape, so the labels stay true.
    """
    B, _, S, _ = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, 3, S + 2m, S + 2m)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, B), generator=gen).tolist()
    flip = torch.rand(B, generator=gen) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + S, dx[i]:dx[i] + S] for i in range(B)])
    return torch.where(flip[:, None, None, None], out.flip(-1), out)  # (B, 3, S, S)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of L2-normalised (B, D) image and text vectors."""
    logits = logit_scale.clamp(max=math.log(100)).exp() * img @ txt.t()  # (B, B)
    target = torch.arange(len(img), device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _scan(urls: list[str]) -> tuple[list[dict], int, int]:
    """One pass over the training split: every sample's meta, the image size and emb_dim."""
    metas: list[dict] = []
    size = emb_dim = 0
    for b in batches(urls, 256, drop_last=False):
        metas += b["meta"]
        size, emb_dim = b["image"].shape[-1], b["emb"].shape[-1]
    if not metas:
        raise T2IError(f"no training samples in {urls[:1]}{'...' if len(urls) > 1 else ''}")
    return metas, size, emb_dim


def train_evaluator(train_urls: list[str], out_path: str | os.PathLike, *, epochs: int = 8,
                    batch_size: int = 64, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                    threads: int = 0, augment: bool = True, progress: bool = True) -> dict:
    """Train an Evaluator on real training images; save it atomically to ``out_path``."""
    if epochs < 1:
        raise T2IError(f"evaluator epochs must be >= 1, got {epochs}")
    if batch_size < 2:
        raise T2IError(f"evaluator batch_size must be >= 2 (contrastive loss), got {batch_size}")
    if not train_urls:
        raise T2IError("no training shards given to train the evaluator")
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        metas, size, emb_dim = _scan(train_urls)
        attributes = discover_attributes(metas)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Evaluator(attributes, emb_dim, image_size=size).to(device)
        batch_size = min(batch_size, len(metas))
        steps_per_epoch = len(metas) // batch_size
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
        gen = torch.Generator().manual_seed(seed)
        shift = max(1, size // 16)
        model.train()
        for epoch in range(epochs):
            totals = {"loss": 0.0, "clip": 0.0, **{k: 0.0 for k in attributes}}
            seen = steps = 0
            for b in batches(train_urls, batch_size, shuffle=1000, seed=seed, epoch=epoch,
                             drop_last=True):
                if steps == steps_per_epoch:
                    break  # the schedule's budget (every full batch is yielded anyway)
                x = to_float(b["image"])  # (B, 3, S, S)
                if augment:
                    x = shift_flip(x, gen, shift)
                B, C, _ = b["emb"].shape
                pick = torch.randint(0, C, (B,), generator=gen)
                txt = F.normalize(b["emb"][torch.arange(B), pick], dim=-1)  # (B, D)
                labels = attribute_labels(b["meta"], attributes)

                out = model(x.to(device))
                clip = clip_loss(out["proj"], txt.to(device), model.logit_scale)
                loss = clip
                for k, logits in out["logits"].items():
                    y = labels[k].to(device)
                    loss = loss + F.cross_entropy(logits, y, ignore_index=-1)
                    totals[k] += (logits.argmax(1) == y).sum().item()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                totals["loss"] += loss.item() * B
                totals["clip"] += clip.item() * B
                seen += B
                steps += 1
            summary = {k: v / max(seen, 1) for k, v in totals.items()}
            if progress:
                accs = " ".join(f"{k}={summary[k]:.3f}" for k in attributes)
                print(f"evaluator epoch {epoch + 1}/{epochs}: loss={summary['loss']:.3f} "
                      f"clip={summary['clip']:.3f} train acc {accs}", file=sys.stderr)
        model.eval()
        with atomic_file(out_path) as tmp:
            torch.save({"config": model.config, "state_dict": model.state_dict()}, tmp)
        return {
            "out": str(out_path),
            "n_train": len(metas),
            "epochs": epochs,
            "seconds": round(time.perf_counter() - start, 1),
            "attributes": {k: len(v) for k, v in attributes.items()},
            "final_loss": summary["loss"],
            "train_acc": {k: summary[k] for k in attributes},
        }
    finally:
        torch.set_num_threads(old_threads)


def load_evaluator(path: str | os.PathLike, device: str = "cpu") -> Evaluator:
    """Load a saved Evaluator in eval mode; a missing or corrupt file raises T2IError."""
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"missing evaluator checkpoint {path}: run the evaluator stage first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        model = Evaluator(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
    except T2IError:
        raise
    except Exception as e:  # unpickling, missing keys, shape mismatches
        raise T2IError(f"corrupt evaluator checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    return model.to(device).eval()
