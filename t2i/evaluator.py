"""A fixed evaluator network for generated images, trained on real TRAIN images only.

A small CNN maps an SxS image in [-1, 1] to a pooled feature vector. On top sit a classifier
per attribute (petal colour, centre colour, ... from the samples' meta; the class id when a
dataset has no attributes; none when it has neither class labels nor attributes) and a projection into the text-embedding space, trained CLIP-style
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
from t2i.data.loader import batches, to_float
from t2i.io import save_torch
from t2i.params import IMAGE_SIZES, EvaluatorParams

CLASS_HEAD = "class"  # the single head of a dataset without attributes
PATH_TOLERANCE = 0.02  # keep the local head if its train accuracy is at most this much lower


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Evaluator(nn.Module):
    """Image -> pooled features, per-attribute logits and an L2-normalised text-space projection.

    Every attribute has two heads. The *global* head reads the pooled deep features. The *local*
    head is attention pooling over a 16x16 grid: an attention map from features that see 18 px
    of a 64 px image picks where to look, and the class scores at each cell come from shallow
    features that see 10 px.
    On class-disjoint splits the global head can learn combinations instead of parts ("yellow
    and orange in the picture" -> orange centre), which fails on unseen combinations; the local
    head cannot, but it cannot count petals either. After training, ``paths`` keeps the local
    head for every attribute it fits about as well as the global head (see ``choose_paths``).

    Shapes below are for the default 64x64, feat_dim=256 config; the grid is 16x16 for all sizes.
    """

    def __init__(self, attributes: dict[str, list[str]], emb_dim: int, image_size: int = 64,
                 feat_dim: int = 256, paths: dict[str, str] | None = None) -> None:
        super().__init__()
        if image_size not in IMAGE_SIZES:
            raise T2IError(f"evaluator image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
        self.attributes = {k: list(v) for k, v in attributes.items()}
        self.emb_dim, self.image_size, self.feat_dim = emb_dim, image_size, feat_dim
        self.paths = dict(paths) if paths is not None else {k: "global" for k in self.attributes}
        if self.paths.keys() != self.attributes.keys() or not set(self.paths.values()) <= {"local", "global"}:
            raise T2IError(f"evaluator paths {self.paths} must map each attribute to 'local' or 'global'")

        # Stride-2 convs down to the 16x16 grid: (B, 3, 64, 64) -> (B, 32, 32, 32) -> (B, 64, 16, 16)
        n_stem = int(math.log2(image_size)) - 4
        stem: list[nn.Module] = []
        for i in range(n_stem):
            stem += conv_bn(3 if i == 0 else 32, 32 if i < n_stem - 1 else 64, k=4, stride=2)
        self.stem = nn.Sequential(*stem)
        self.mid = nn.Sequential(*conv_bn(64, 128))  # (B, 128, 16, 16)
        self.deep = nn.Sequential(  # (B, 128, 16, 16) -> (B, 256, 8, 8) -> (B, feat_dim, 4, 4)
            nn.MaxPool2d(2), *conv_bn(128, 256), nn.MaxPool2d(2), *conv_bn(256, feat_dim))

        K = {k: len(v) for k, v in self.attributes.items()}
        self.global_heads = nn.ModuleDict({k: nn.Linear(2 * feat_dim, n) for k, n in K.items()})
        self.local_scores = nn.ModuleDict({k: nn.Conv2d(64, n, 1) for k, n in K.items()})
        self.attend = nn.ModuleDict({k: nn.Conv2d(128, 1, 1) for k in K})
        self.proj = nn.Linear(2 * feat_dim, emb_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    @property
    def config(self) -> dict:
        return {"attributes": self.attributes, "emb_dim": self.emb_dim, "image_size": self.image_size,
                "feat_dim": self.feat_dim, "paths": self.paths}

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise T2IError(f"evaluator expects {self.image_size}x{self.image_size} images, "
                           f"got {tuple(x.shape[-2:])}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, feat_dim): the average pooled deep features."""
        self._check(x)
        return self.deep(self.mid(self.stem(x))).mean(dim=(2, 3))  # (B, feat_dim, 4, 4) -> (B, feat_dim)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
        """Average and max pooled deep features (B, 2 * feat_dim) and both heads' logits,
        ({attr: (B, K)} local, {attr: (B, K)} global)."""
        self._check(x)
        shallow = self.stem(x)  # (B, 64, 16, 16)
        mid = self.mid(shallow)  # (B, 128, 16, 16)
        deep = self.deep(mid)  # (B, feat_dim, 4, 4)
        pooled = torch.cat([deep.mean(dim=(2, 3)), deep.amax(dim=(2, 3))], dim=1)  # (B, 2 * feat_dim)
        local, glob = {}, {}
        for k in self.attributes:
            weights = self.attend[k](mid).flatten(1).softmax(dim=1)  # (B, 256)
            scores = self.local_scores[k](shallow).flatten(2)  # (B, K, 256)
            local[k] = (scores * weights[:, None]).sum(-1)  # (B, K)
            glob[k] = self.global_heads[k](pooled)  # (B, K)
        return pooled, local, glob

    def forward(self, x: torch.Tensor) -> dict:
        pooled, local, glob = self.heads(x)
        return {
            "logits": {k: local[k] if self.paths[k] == "local" else glob[k] for k in self.attributes},
            "proj": F.normalize(self.proj(pooled), dim=-1),  # (B, emb_dim)
            "features": pooled[:, :self.feat_dim],  # (B, feat_dim), the average pooled half
        }


# --------------------------------------------------------------------------- labels


def _value_key(v: str) -> tuple:
    """Sort numbers numerically ("3" < "10"), then words alphabetically."""
    return (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v)


def attribute_values(meta: dict) -> dict[str, str]:
    """{attribute: value as a string} of one sample; the class id when it has no attributes."""
    if "attributes" in meta:  # an image may lack some or all of its dataset's attributes (CUB)
        return {k: str(v) for k, v in meta["attributes"].items()}
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


@torch.no_grad()
def choose_paths(model: Evaluator, urls: list[str], batch_size: int, device: str,
                 tolerance: float = PATH_TOLERANCE) -> dict[str, dict[str, float]]:
    """Set ``model.paths``: local for each attribute whose local head fits the training images
    within ``tolerance`` of the global head's accuracy, else global. Returns both accuracies.

    The training images are all the evidence there is (test combinations must stay unseen), and
    there the shortcut of the global head is exactly right; so prefer the head that cannot take it
    whenever it explains the data about as well.
    """
    model.eval()
    hits = {k: {"local": 0, "global": 0, "n": 0} for k in model.attributes}
    for b in batches(urls, batch_size, drop_last=False):
        _, local, glob = model.heads(to_float(b["image"]).to(device))
        for k, y in attribute_labels(b["meta"], model.attributes).items():
            y = y.to(device)
            known = y >= 0
            hits[k]["local"] += (local[k].argmax(1) == y)[known].sum().item()
            hits[k]["global"] += (glob[k].argmax(1) == y)[known].sum().item()
            hits[k]["n"] += known.sum().item()
    acc = {k: {p: h[p] / max(h["n"], 1) for p in ("local", "global")} for k, h in hits.items()}
    model.paths = {k: "local" if a["local"] >= a["global"] - tolerance else "global" for k, a in acc.items()}
    return acc


def train_evaluator(train_urls: list[str], out_path: str | os.PathLike,
                    cfg: EvaluatorParams = EvaluatorParams(), *, device: str = "cpu", progress: bool = True) -> dict:
    """Train an Evaluator on real training images; save it atomically to ``out_path``.
    ``cfg``'s defaults and ranges live in t2i/params.py (``device`` is the resolved one)."""
    epochs, batch_size, lr, seed = cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed
    threads, augment, feat_dim = cfg.threads, cfg.augment, cfg.feat_dim
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
            model = Evaluator(attributes, emb_dim, image_size=size, feat_dim=feat_dim).to(device)
        batch_size = min(batch_size, len(metas))
        steps_per_epoch = len(metas) // batch_size
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        total = epochs * steps_per_epoch
        warmup = max(1, total // 10)  # linear warm-up, then cosine decay to 0
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: min((i + 1) / warmup, 0.5 * (1 + math.cos(math.pi * i / total))))
        gen = torch.Generator().manual_seed(seed)
        shift = max(1, size // 16)
        for epoch in range(epochs):
            model.train()
            totals = {"loss": 0.0, "clip": 0.0}
            seen = 0
            for step, b in enumerate(batches(train_urls, batch_size, shuffle=1000, seed=seed,
                                             epoch=epoch, drop_last=True)):
                if step == steps_per_epoch:
                    break  # the schedule's budget (the stream yields no more full batches anyway)
                x = to_float(b["image"])  # (B, 3, S, S)
                if augment:
                    x = shift_flip(x, gen, shift)
                B, C, _ = b["emb"].shape
                pick = torch.randint(0, C, (B,), generator=gen)  # one caption per image
                txt = F.normalize(b["emb"][torch.arange(B), pick], dim=-1)  # (B, D)
                labels = attribute_labels(b["meta"], attributes)

                pooled, local, glob = model.heads(x.to(device))
                clip = clip_loss(F.normalize(model.proj(pooled), dim=-1), txt.to(device), model.logit_scale)
                loss = clip
                for k in attributes:  # both heads learn every attribute on their own
                    y = labels[k].to(device)
                    loss = loss + F.cross_entropy(local[k], y, ignore_index=-1)
                    loss = loss + F.cross_entropy(glob[k], y, ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                totals["loss"] += loss.item() * B
                totals["clip"] += clip.item() * B
                seen += B
            if progress:
                print(f"evaluator epoch {epoch + 1}/{epochs}: loss={totals['loss'] / seen:.3f} "
                      f"clip={totals['clip'] / seen:.3f}", file=sys.stderr)
        train_acc = choose_paths(model, train_urls, 256, device)
        if progress:
            for k, a in train_acc.items():
                print(f"evaluator {k}: train acc local={a['local']:.3f} global={a['global']:.3f} "
                      f"-> {model.paths[k]}", file=sys.stderr)
        save_torch({"config": model.config, "state_dict": model.state_dict()}, out_path)
        return {
            "out": str(out_path),
            "n_train": len(metas),
            "epochs": epochs,
            "seconds": round(time.perf_counter() - start, 1),
            "attributes": {k: len(v) for k, v in attributes.items()},
            "paths": dict(model.paths),
            "final_loss": totals["loss"] / seen,
            "train_acc": train_acc,
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
