"""What the embed stage's fp64 text model costs against fp32 at the scale of a real dataset.

Encodes ``--captions`` distinct bird captions of CUB's kind (one sentence of 13 to 19 words,
drawn from parts; the real ones are not on this machine) with all-MiniLM-L6-v2 in fp32 and in
fp64, each in one ``TextEncoder.encode`` call after a warm-up, and prints captions/s, the fp64 /
fp32 time ratio and the minutes each would take on CUB-200-2011 (117,880 captions) and
Oxford-102 (81,890). ``--captions 117880`` is CUB's own count (about half an hour on 2 cores).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/embed_cost.py --captions 8000 --device cpu
"""

from __future__ import annotations

import argparse
import itertools
import random
import time

COUNTS = {"CUB-200-2011": 117_880, "Oxford-102": 81_890}  # images x 10 captions (Reed et al.)
COLOURS = ["black", "white", "grey", "brown", "yellow", "red", "blue", "orange", "buff", "olive"]
PARTS = ["crown", "breast", "belly", "nape", "throat", "back", "rump", "cheek patch", "eyebrow", "tail"]
BEAKS = ["a short pointed", "a long thin", "a thick cone-shaped", "a hooked", "a small curved"]


def bird_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct captions in the manner of CUB's: colours of parts, a beak, wing bars."""
    rng, out = random.Random(seed), set()
    for _ in itertools.count():
        a, b = rng.sample(PARTS, 2)
        text = (f"this {rng.choice(['bird', 'small bird', 'medium sized bird'])} has a {rng.choice(COLOURS)} {a} "
                f"and {rng.choice(COLOURS)} {b}, {rng.choice(BEAKS)} {rng.choice(COLOURS)} beak"
                f"{rng.choice(['', ' and white wing bars', ' and dark grey feet'])}")
        out.add(text)
        if len(out) == n:
            return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=int, default=8000)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args()
    from t2i.text import TextEncoder

    texts = bird_captions(a.captions)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} captions, {words:.1f} words each on average, device {a.device}")
    rate = {}
    for precision in ("fp32", "fp64"):
        enc = TextEncoder("all-MiniLM-L6-v2", a.device, a.batch_size, precision)
        enc.encode(texts[:8])  # warm-up
        t0 = time.perf_counter()
        enc.encode(texts)
        rate[precision] = len(texts) / (time.perf_counter() - t0)
        print(f"{precision}: {rate[precision]:.0f} captions/s; " +
              ", ".join(f"{name} {n / rate[precision] / 60:.1f} min" for name, n in COUNTS.items()))
    print(f"fp64 / fp32 time: {rate['fp32'] / rate['fp64']:.2f}x")


if __name__ == "__main__":
    main()
