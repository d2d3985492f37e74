"""Which CPU math libraries make a run's bytes depend on the machine: a fingerprint to compare.

``dvc repro`` is byte-identical on one machine, but two machine kinds have written different
embeddings (and so different everything after them). This prints, for the machine it runs on,
the hash of two computations of the default pipeline:

- ``embed``: all-MiniLM-L6-v2 on the first ``--captions`` distinct captions of the default
  synthetic flowers, in ``--precision`` (fp64, the embed stage's default, or fp32), stored as
  the embed stage stores them (float16);
- ``train``: ``--steps`` GAN-CLS steps at the default params with the levers off (``PLAIN``: no
  grounding) on one fixed random batch (G's weights);

and what each costs (the embed call's seconds, the training step's images/s by
``t2i.bench.train_step``), each under the CPU's own kernels ("native") and with one dispatch
pinned by its environment variable: MKL's conditional numerical reproducibility
(``MKL_CBWR``), ATen's vector width (``ATEN_CPU_CAPABILITY``), oneDNN's instruction set
(``ONEDNN_MAX_CPU_ISA``), and all three.
Each row runs in a fresh process with 2 torch threads. Run it on two machines: a row whose
hashes agree on both is a setting under which they compute the same bytes
(docs/reliability.md, "Across machines", has one machine's table).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/numerics_fingerprint.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from t2i.device import PINNED_ISA as PINS  # noqa: E402
from t2i.numerics import cpu_name  # noqa: E402
ROWS = {"native": {}, **{k: {k: v} for k, v in PINS.items()}, "all three": PINS}


def digest(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()[:12]


def measure(captions: int, steps: int, seconds: float, precision: str) -> dict:
    """The two hashes and their costs in this process (its environment already set)."""
    import time

    import numpy as np
    import torch

    from t2i.bench import train_step
    from t2i.data import synth
    from t2i.numerics import train_hash
    from t2i.params import PLAIN, load_params
    from t2i.text import TextEncoder

    torch.set_num_threads(2)
    p = load_params(ROOT / "params.yaml")
    s = p.synth
    texts: dict[str, None] = {}  # distinct captions, in order
    for x in synth.flowers(s.num_images, s.render_size, s.seed, s.test_fraction):
        texts.update(dict.fromkeys(x.captions))
        if len(texts) >= captions:
            break
    encoder = TextEncoder(p.embed.model, "cpu", p.embed.batch_size, precision)
    encoder.encode(["a warm-up caption"])
    t0 = time.perf_counter()
    emb = encoder.encode(sorted(list(texts)[:captions]))
    embed_s = time.perf_counter() - t0
    train = train_hash(steps, emb.shape[1])
    cfg = p.train.model_copy(update={"device": "cpu", **PLAIN})
    img_s = train_step(cfg, p.shard.image_size, emb.shape[1], "cpu", seconds)["img_s"] if seconds > 0 else None
    return {"embed": digest(emb.astype(np.float16).tobytes()), "train": train,
            "aten": torch.backends.cpu.get_cpu_capability(), "embed_s": round(embed_s, 2),
            "img_s": round(img_s, 1) if img_s else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="timing of the training step per row (0: none)")
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--precision", choices=["fp64", "fp32"], default="fp64",
                    help="the text model's arithmetic (embed.precision; fp32: the embed stage before fp64)")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.captions, a.steps, a.seconds, a.precision)))
        return
    clean = {k: v for k, v in os.environ.items() if k not in PINS}
    out = {"cpu": cpu_name(), "rows": {}}
    for name in a.rows:
        r = subprocess.run([sys.executable, __file__, "--child", "--captions", str(a.captions), "--steps", str(a.steps),
                            "--seconds", str(a.seconds), "--precision", a.precision],
                           env={**clean, "HF_HUB_OFFLINE": "1", **ROWS[name]}, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"numerics_fingerprint: row {name!r} failed: {r.stderr.strip().splitlines()[-1]}")
        out["rows"][name] = json.loads(r.stdout.strip().splitlines()[-1])
    if a.json:
        print(json.dumps(out))
        return
    print(out["cpu"])
    print(f"{'row':<22} {'embed':<13} {'train':<13} {'ATen':<7} {'embed s':>8} {'step img/s':>11}")
    for name, r in out["rows"].items():
        print(f"{name:<22} {r['embed']:<13} {r['train']:<13} {r['aten']:<7} {r['embed_s']:>8} {r['img_s'] or '-':>11}")


if __name__ == "__main__":
    main()
