"""Can the discriminator's image trunk learn an attribute at all in the default's steps? Trains
the family's D trunk (``D.features``, as ``train.*`` builds it) with a linear head on its pooled
features, *supervised* on one attribute of the real training images, for as many steps as the
default GAN run takes, and prints the accuracy on the test split's real images as it goes.

It is the most direct signal D could ever get for that attribute: if the trunk cannot learn it
this way, no caption-matching loss will teach it to D either. ``--augment`` passes every batch
through ``train.augment``'s transforms (t2i/diffaugment.py), e.g. ``turn``. Run in a workspace
after ``make repro`` (it reads the shards only):

    python scripts/probe_d.py --attribute petal_count                      # no augmentation
    python scripts/probe_d.py --attribute petal_count --augment translation,turn
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i.data.loader import batches, embedded_urls, to_float
from t2i.families.common import build_discriminator, feature_shape
from t2i.gan import model_config
from t2i.named import attribute_labels, discover_attributes
from t2i.params import TrainParams, load_params
from t2i.paths import Artifacts


def load(urls: list[str]) -> tuple[torch.Tensor, list[dict], int]:
    """Every image of ``urls`` (N, 3, S, S) uint8, their metas, and the embedding size."""
    got = list(batches(urls, 256, drop_last=False))
    return torch.cat([b["image"] for b in got]), [m for b in got for m in b["meta"]], got[0]["emb"].shape[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--attribute", default="petal_count")
    ap.add_argument("--augment", default="", help="train.augment's transforms for every batch (default: none)")
    ap.add_argument("--steps", type=int, default=1125, help="the default GAN run's: 30 epochs of 2437 images / 64")
    ap.add_argument("--lr", type=float, default=None, help="default: train.lr, D's own")
    ap.add_argument("--every", type=int, default=225)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-S", "--set", action="append", default=[], help="train.* overrides, as for the stages")
    args = ap.parse_args()

    params = load_params(args.params, args.set)
    at = Artifacts(args.data, params.dataset)
    cfg = TrainParams.model_validate({**params.train.model_dump(), "augment": args.augment})  # the name checked
    x_train, m_train, emb_dim = load(embedded_urls(at.embeddings, "train"))
    x_test, m_test, _ = load(embedded_urls(at.embeddings, "test"))
    vocab = discover_attributes(m_train)
    if args.attribute not in vocab:
        raise SystemExit(f"unknown attribute {args.attribute!r} (this dataset's: {', '.join(vocab)})")
    y_train = attribute_labels(m_train, vocab)[args.attribute]
    y_test = attribute_labels(m_test, vocab)[args.attribute]

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(args.seed)
    D = build_discriminator(cfg, model_config(cfg, emb_dim, x_train.shape[-1]))
    channels = feature_shape(D, x_train.shape[-1])[0]
    head = nn.Linear(channels, len(vocab[args.attribute]))
    params_ = [*D.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params_, args.lr or cfg.lr, betas=(cfg.beta1, cfg.beta2))
    rng = torch.Generator().manual_seed(args.seed)
    classify = lambda x: head(D.features(x).mean(dim=(2, 3)))  # noqa: E731  (B, K), as AC-GAN's heads read D
    print(f"{args.attribute}: {len(vocab[args.attribute])} values, {len(x_train)} train / {len(x_test)} test images, "
          f"augment {args.augment or 'none'}, lr {args.lr or cfg.lr}")
    for step in range(1, args.steps + 1):
        i = torch.randint(len(x_train), (cfg.batch_size,), generator=rng)
        x = to_float(x_train[i])
        if args.augment:
            from t2i import diffaugment

            x = diffaugment.apply(x, diffaugment.draws(args.augment, len(x), x.shape[-1], rng))
        keep = y_train[i] >= 0
        loss = F.cross_entropy(classify(x)[keep], y_train[i][keep])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            D.eval()
            with torch.no_grad():
                pred = torch.cat([classify(to_float(x_test[j:j + 256])).argmax(1) for j in range(0, len(x_test), 256)])
            D.train()
            ok = y_test >= 0
            acc = (pred[ok] == y_test[ok]).float().mean().item()
            print(f"step {step}: train loss {loss.item():.3f}, test accuracy {acc:.3f}", flush=True)


if __name__ == "__main__":
    main()
