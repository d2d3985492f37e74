"""Real flowers beside generated ones, at the same size and for the same captions, to judge form
(petal count and shape) by eye.

For ``--rows`` test captions of distinct colour pairs (seeded), the left panel holds up to
``--cols`` real test images that fit everything the caption names (the caption's own image
first), the right panel ``--cols`` images the generator draws from that caption (one noise
vector per column, the same for every row). Run it in a workspace after ``make repro``:

    python scripts/real_vs_generated.py                                   # docs/real-vs-generated.png
    python scripts/real_vs_generated.py --data /tmp/run/data --out a.png  # another run's outputs

An oracle generator (``train.text: oracle``) is drawn through its table, as evaluate draws it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from t2i.checkpoint import load_generator
from t2i.data.loader import batches, embedded_urls, to_float
from t2i.evaluate import pick_distinct
from t2i.grid import add_header, make_grid, save_image
from t2i.named import fits
from t2i.params import load_params
from t2i.paths import Artifacts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--out", type=Path, default=Path("docs/real-vs-generated.png"))
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--cols", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    at = Artifacts(args.data, load_params(args.params).dataset)
    G, config = load_generator(at.generator)
    test = list(batches(embedded_urls(at.embeddings, "test"), 256, drop_last=False))
    images = torch.cat([b["image"] for b in test])  # (N, 3, S, S) uint8
    emb = torch.cat([b["emb"] for b in test])  # (N, C, D)
    metas = [m for b in test for m in b["meta"]]
    captions = [c for b in test for c in b["captions"]]
    gen = torch.Generator().manual_seed(args.seed)
    rows = pick_distinct(metas, args.rows, gen)
    picks = [next(c for c in range(len(captions[i])) if metas[i]["named"][c]) for i in rows]
    if config.get("text") == "oracle":
        from t2i.ground import Coded
        from t2i.oracle import head_for

        G = Coded(G, head_for(at.embeddings, config["attributes"]))
    chosen = torch.zeros(len(metas), 1, dtype=torch.long)  # the caption of each row's sample (others unused)
    chosen[rows, 0] = torch.tensor(picks)
    fit = fits(metas, chosen, captions)  # (N, N): [j, i] when sample i's chosen caption describes image j
    real, labels = [], []
    for i, c in zip(rows, picks):
        same = [i] + [j for j in fit[:, i].nonzero().flatten().tolist() if j != i]
        same = (same * args.cols)[: args.cols]  # repeated when fewer fit
        real.append(to_float(images[same]))
        labels.append(captions[i][c])
    z = torch.randn(args.cols, G.cfg.z_dim, generator=gen).repeat(len(rows), 1)  # the same noise in every row
    e = torch.stack([emb[i, c] for i, c in zip(rows, picks)]).float().repeat_interleave(args.cols, dim=0)
    with torch.no_grad():
        fake = G.eval()(z, e).cpu()
    left = make_grid(torch.cat(real), args.cols, labels)  # PIL images, the same height
    right = make_grid(fake, args.cols)
    both = Image.new("RGB", (left.width + right.width, left.height), "white")
    both.paste(left, (0, 0)), both.paste(right, (left.width, 0))
    both = add_header(both, ["left: real test flowers that fit the caption; right: what the generator draws from it"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(both, args.out)
    print(f"wrote {args.out}: {len(rows)} captions, real (left) and generated (right)")


if __name__ == "__main__":
    main()
