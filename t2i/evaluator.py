"""A fixed evaluator network for generated images, trained on real TRAIN images only.

A small CNN maps an SxS image in [-1, 1] to a pooled feature vector. On top sit a classifier
per attribute (petal colour, centre colour, ... from the samples' meta; the class id when a
dataset has no attributes; none when it has neither class labels nor attributes) and a projection into the text-embedding space, trained CLIP-style
against the captions' sentence embeddings. The metrics use all three: attribute accuracy on
fake images, R-precision of image-caption retrieval, and a Frechet distance between features.

Training is deterministic on CPU for a seed: one seeded torch.Generator drives the caption
picks, the augmentation and the restarted glimpses, and the loader's shuffle is seeded per epoch.
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
from t2i.augment import shift_turn_flip
from t2i.io import load_model, save_torch
from t2i.named import attribute_labels, discover_attributes
from t2i.losses import contrastive_loss
from t2i.params import IMAGE_SIZES, EvaluatorParams

PATH_TOLERANCE = 0.02  # keep the local head if its train accuracy is at most this much lower
GLIMPSES = 3  # attention maps per local head, each with its own scores; the best one is kept
ENTROPY_COEF = 0.05  # weight of the attention maps' entropy in the loss: look at one part
RESTART_EVERY = 2  # epochs between checks for stuck glimpses, in the first half of training
RESTART_GAP = 0.1  # a glimpse is stuck if its train accuracy trails the global head's by more
PATHS = ("global", *(f"local{g}" for g in range(GLIMPSES)))  # the heads an attribute can be read from


def conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class Evaluator(nn.Module):
    """Image -> pooled features, per-attribute logits and an L2-normalised text-space projection.

    Every attribute has two heads. The *global* head reads the pooled deep features. The *local*
    head answers "what colour is the part there": attention pooling, over a grid of 4 px
    windows, of colour codes that see nothing else. Where to look comes from a separate
    *where* trunk (18 px context) that is trained on recoloured images (``recolour``), so
    it finds a part by shape and brightness, whatever the colours around it.
    On class-disjoint splits the global head can learn combinations instead of parts ("yellow
    and orange in the picture" -> orange centre), which fails on unseen combinations; the local
    head cannot, but it cannot count petals either.

    Attention learnt this way either finds the part or settles on a wrong one, depending on the
    initial weights. So each local head has ``GLIMPSES`` attention maps, each with its own
    scores, trained side by side with an entropy penalty that makes each map pick one part,
    and in the first half of training every glimpse but the best that still trails the global
    head is started afresh (``restart_stuck_glimpses``): without that, at seed 1 all three
    centre-colour glimpses stayed at chance (train accuracy 0.3 against the global head's 1.0)
    and the global head's colour-pair shortcut was read instead. After training, ``paths`` names,
    per attribute, the glimpse that fits the training images best ("local0", ...) if it fits
    them about as well as the global head, else "global" (see ``choose_paths``).

    Shapes below are for the default 64x64, feat_dim=256 config; the where grid is 16x16 for
    all sizes.
    """

    def __init__(self, attributes: dict[str, list[str]], emb_dim: int, image_size: int = 64,
                 feat_dim: int = 256, paths: dict[str, str] | None = None) -> None:
        super().__init__()
        if image_size not in IMAGE_SIZES:
            raise T2IError(f"evaluator image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
        self.attributes = {k: list(v) for k, v in attributes.items()}
        self.emb_dim, self.image_size, self.feat_dim = emb_dim, image_size, feat_dim
        self.paths = dict(paths) if paths is not None else {k: "global" for k in self.attributes}
        if self.paths.keys() != self.attributes.keys() or not set(self.paths.values()) <= set(PATHS):
            raise T2IError(f"evaluator paths {self.paths} must map each attribute to one of {PATHS}")

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
        # Local heads. Colour codes of 4 px windows: (B, 3, 64, 64) -> (B, 32, 32, 32)
        self.colour = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU(inplace=True), nn.AvgPool2d(2))
        where: list[nn.Module] = []  # (B, 3, 64, 64) -> (B, 16, 32, 32) -> (B, 32, 16, 16) -> (B, 64, 16, 16)
        for i in range(n_stem):
            where += conv_bn(3 if i == 0 else 16, 32 if i == n_stem - 1 else 16, k=4, stride=2)
        self.where = nn.Sequential(*where, *conv_bn(32, 64))
        self.attend = nn.ModuleDict({k: nn.Conv2d(64, GLIMPSES, 1) for k in K})  # one map per glimpse
        self.local_scores = nn.ModuleDict(  # one linear map per glimpse: (B, G * 32, 1) -> (B, G * K, 1)
            {k: nn.Conv1d(GLIMPSES * 32, GLIMPSES * n, 1, groups=GLIMPSES) for k, n in K.items()})
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

    def heads(self, x: torch.Tensor, x_where: torch.Tensor | None = None) -> tuple[torch.Tensor, dict, dict, torch.Tensor]:
        """Average and max pooled deep features (B, 2 * feat_dim), both heads' logits
        ({attr: (B, GLIMPSES, K)} local, {attr: (B, K)} global) and the mean entropy of the
        attention maps (0 without attributes). ``x_where``: the images the where trunk sees
        instead of ``x`` (recoloured ones in training)."""
        self._check(x)
        B = x.shape[0]
        deep = self.deep(self.mid(self.stem(x)))  # (B, feat_dim, 4, 4)
        pooled = torch.cat([deep.mean(dim=(2, 3)), deep.amax(dim=(2, 3))], dim=1)  # (B, 2 * feat_dim)
        colour = self.colour(x)  # (B, 32, 32, 32)
        where = self.where(x if x_where is None else x_where)  # (B, 64, 16, 16)
        local, glob, entropies = {}, {}, []
        for k in self.attributes:
            attend = F.interpolate(self.attend[k](where), size=colour.shape[-2:], mode="bilinear")  # (B, G, 32, 32)
            log_w = attend.flatten(2).log_softmax(dim=-1)  # (B, G, 1024)
            entropies.append(-(log_w.exp() * log_w).sum(-1).mean())
            seen = torch.bmm(log_w.exp(), colour.flatten(2).transpose(1, 2))  # (B, G, 32): attended colour codes
            local[k] = self.local_scores[k](seen.reshape(B, -1, 1)).view(B, GLIMPSES, -1)  # (B, G, K)
            glob[k] = self.global_heads[k](pooled)  # (B, K)
        return pooled, local, glob, torch.stack(entropies).mean() if entropies else x.new_zeros(())

    def forward(self, x: torch.Tensor) -> dict:
        pooled, local, glob, _ = self.heads(x)
        return {
            "logits": {k: glob[k] if self.paths[k] == "global" else local[k][:, PATHS.index(self.paths[k]) - 1]
                       for k in self.attributes},
            "proj": F.normalize(self.proj(pooled), dim=-1),  # (B, emb_dim)
            "features": pooled[:, :self.feat_dim],  # (B, feat_dim), the average pooled half
        }


# --------------------------------------------------------------------------- labels


# --------------------------------------------------------------------------- training


def recolour(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image's colours turned by a random angle about the grey axis, and mirrored (two
    channels swapped) with p = 0.5: hues change, grey levels and shapes stay. Fed only to the
    where trunk, so it learns to find a part whatever the colours, while the labels are read
    from the true colours."""
    B = x.shape[0]
    angle = torch.rand(B, generator=gen)[:, None, None] * 2 * math.pi  # (B, 1, 1)
    u = torch.full((3,), 3 ** -0.5)  # the grey axis
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    turn = angle.cos() * torch.eye(3) + angle.sin() * cross + (1 - angle.cos()) * torch.outer(u, u)  # (B, 3, 3)
    mirror = torch.rand(B, generator=gen) < 0.5
    turn = torch.where(mirror[:, None, None], turn[:, [1, 0, 2]], turn)
    return torch.einsum("bij,bjhw->bihw", turn, x).clamp(-1, 1)  # (B, 3, S, S)


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
    """Set ``model.paths``: for each attribute, the local glimpse that fits the training images
    best if it is within ``tolerance`` of the global head's accuracy, else global. Returns
    every head's accuracy, {attr: {path: accuracy}}.

    The training images are all the evidence there is (test combinations must stay unseen), and
    there the shortcut of the global head is exactly right; so prefer the head that cannot take it
    whenever it explains the data about as well.
    """
    model.eval()
    hits = {k: torch.zeros(len(PATHS)) for k in model.attributes}
    n = dict.fromkeys(model.attributes, 0)
    for b in batches(urls, batch_size, drop_last=False):
        _, local, glob, _ = model.heads(to_float(b["image"]).to(device))
        for k, y in attribute_labels(b["meta"], model.attributes).items():
            y = y.to(device)
            known = y >= 0
            logits = torch.cat([glob[k][:, None], local[k]], dim=1)[known]  # (N, len(PATHS), K), PATHS order
            hits[k] += (logits.argmax(-1) == y[known, None]).sum(0).cpu()
            n[k] += known.sum().item()
    acc = {k: dict(zip(PATHS, (h / max(n[k], 1)).tolist())) for k, h in hits.items()}
    for k, a in acc.items():
        best = max(PATHS[1:], key=a.get)  # the first of equals
        model.paths[k] = best if a[best] >= a["global"] - tolerance else "global"
    return acc


def restart_stuck_glimpses(model: Evaluator, opt: torch.optim.Optimizer, acc: dict[str, list[float]],
                           gen: torch.Generator, gap: float = RESTART_GAP) -> list[tuple[str, int]]:
    """Start afresh every glimpse, but each attribute's best, whose train accuracy trails the
    global head's by more than ``gap``: a new attention map and scores, drawn from ``gen`` as
    at construction, without Adam's moments. ``acc``: {attr: accuracies in PATHS order}.
    Returns the (attribute, glimpse) pairs restarted.

    A map that has settled on the wrong part gets no gradient from the right one, so it stays
    wrong (at seed 1 all three centre-colour maps did). A fresh draw looks elsewhere, on a
    trunk that has since learnt what the parts are. The best glimpse is kept, in case it is
    still on its way; the others are spares until one of them overtakes it. Adam's step count
    is shared and not reset, so a restarted row's first updates are larger than lr (the bias
    correction no longer scales its fresh moments up to size).
    """
    restarted = []
    for k, (glob, *local) in acc.items():
        best = max(range(GLIMPSES), key=local.__getitem__)
        for g in range(GLIMPSES):
            if g == best or local[g] >= glob - gap:
                continue
            attend, scores = model.attend[k], model.local_scores[k]
            n = scores.out_channels // GLIMPSES
            for module, rows in ((attend, slice(g, g + 1)), (scores, slice(g * n, (g + 1) * n))):
                bound = 1 / math.sqrt(module.weight[0].numel())  # PyTorch's default init: U(-1/sqrt(fan_in), .)
                for param in (module.weight, module.bias):
                    with torch.no_grad():
                        param[rows].uniform_(-bound, bound, generator=gen)
                    for moment in opt.state.get(param, {}).values():
                        if moment.shape == param.shape:  # exp_avg, exp_avg_sq; not the step count
                            moment[rows] = 0
            restarted.append((k, g))
    return restarted


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
            hits = {k: torch.zeros(len(PATHS)) for k in attributes}  # this epoch's train accuracy per path
            known = dict.fromkeys(attributes, 0)
            for step, b in enumerate(batches(train_urls, batch_size, shuffle=1000, seed=seed,
                                             epoch=epoch, drop_last=True)):
                if step == steps_per_epoch:
                    break  # the schedule's budget (the stream yields no more full batches anyway)
                x = to_float(b["image"])  # (B, 3, S, S)
                x_where = None
                if augment:
                    x = shift_turn_flip(x, gen, shift)
                    x_where = recolour(x, gen)  # where to look, learnt from shapes, not colours
                B, C, _ = b["emb"].shape
                pick = torch.randint(0, C, (B,), generator=gen)  # one caption per image
                txt = F.normalize(b["emb"][torch.arange(B), pick], dim=-1)  # (B, D)
                labels = attribute_labels(b["meta"], attributes)

                pooled, local, glob, entropy = model.heads(x.to(device), None if x_where is None else x_where.to(device))
                clip = contrastive_loss(F.normalize(model.proj(pooled), dim=-1), txt.to(device),
                                        model.logit_scale.clamp(max=math.log(100)).exp())
                loss = clip + ENTROPY_COEF * len(attributes) * entropy
                for k in attributes:  # every head and glimpse learns every attribute on its own
                    y = labels[k].to(device)
                    loss = loss + F.cross_entropy(local[k].transpose(1, 2), y[:, None].expand(-1, GLIMPSES),
                                                  ignore_index=-1)  # the mean over glimpses
                    loss = loss + F.cross_entropy(glob[k], y, ignore_index=-1)
                    with torch.no_grad():
                        logits = torch.cat([glob[k][:, None], local[k]], dim=1)[y >= 0]  # (n, len(PATHS), K)
                        hits[k] += (logits.argmax(-1) == y[y >= 0, None]).sum(0).cpu()
                        known[k] += int((y >= 0).sum())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                totals["loss"] += loss.item() * B
                totals["clip"] += clip.item() * B
                seen += B
            epoch_acc = {k: (h / max(known[k], 1)).tolist() for k, h in hits.items()}  # PATHS order
            if progress:
                print(f"evaluator epoch {epoch + 1}/{epochs}: loss={totals['loss'] / seen:.3f} "
                      f"clip={totals['clip'] / seen:.3f} train acc (global,local...) " + " ".join(
                          f"{k}=" + ",".join(f"{a:.2f}" for a in accs) for k, accs in epoch_acc.items()),
                      file=sys.stderr)
            if (epoch + 1) % RESTART_EVERY == 0 and epoch + 1 <= epochs // 2:
                restarted = restart_stuck_glimpses(model, opt, epoch_acc, gen)
                if progress and restarted:
                    print("evaluator: restarted glimpses " + " ".join(f"{k}/local{g}" for k, g in restarted),
                          file=sys.stderr)
        train_acc = choose_paths(model, train_urls, 256, device)
        if progress:
            for k, a in train_acc.items():
                print(f"evaluator {k}: train acc " + " ".join(f"{p}={v:.3f}" for p, v in a.items())
                      + f" -> {model.paths[k]}", file=sys.stderr)
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
    return load_model(path, Evaluator, "evaluator checkpoint", "run the evaluator stage first", device)
