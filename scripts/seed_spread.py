"""Score generators under evaluators trained at several seeds: how much of a difference between
two models is the scorer's own seed?

For each evaluator seed, trains the evaluator stage (`t2i evaluator -S evaluator.seed=N`) in a
scratch data folder that links this workspace's embeddings, then runs `t2i evaluate` there on
each generator. Nothing under this workspace's data/ is written.

    python scripts/seed_spread.py --seeds 0 1 2 \\
        gan-cls=data/models/synthetic-flowers/generator.pt df-gan=/path/to/df/generator.pt

Prints a markdown table (rows: model x seed, real-image ceilings once per seed) and writes
everything to <scratch>/spread.json, each model's evaluate outputs to <scratch>/seed<N>/eval-<name>/. ``--evaluators DIR`` reuses DIR/seed<N>/evaluator.pt where
present (e.g. the workspace's own seed-0 evaluator) instead of training it again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from t2i.params import load_params
from t2i.paths import Artifacts

COLUMNS = ("attr/petal_colour", "attr/centre_colour", "attr/petal_count", "attr/petal_shape")
SCORES = ("r_precision/fake", "diversity/ratio", "fd_evaluator", "phrasing/petal_colour/novel",
          "phrasing/petal_colour/template", "phrasing/centre_colour/novel", "phrasing/centre_colour/template")


def t2i(*args: str) -> None:
    subprocess.run(["t2i", *args], check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="name=path/to/generator.pt")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/t2i-seed-spread"))
    ap.add_argument("--evaluators", type=Path, help="reuse <dir>/seed<N>/evaluator.pt where present")
    args = ap.parse_args()
    dataset = load_params("params.yaml").dataset
    models = dict(m.split("=", 1) for m in args.models)
    results: dict = {}
    for seed in args.seeds:
        data = args.scratch / f"seed{seed}"
        at = Artifacts(data, dataset)
        at.embeddings.parent.mkdir(parents=True, exist_ok=True)
        if not at.embeddings.exists():
            at.embeddings.symlink_to(Artifacts(Path("data"), dataset).embeddings.resolve())
        given = args.evaluators / f"seed{seed}" / "evaluator.pt" if args.evaluators else None
        if given is not None and given.is_file():
            at.evaluator_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(given, at.evaluator)
        elif not at.evaluator.is_file():
            t2i("evaluator", "-S", f"evaluator.seed={seed}", "--data", str(data))
        for name, path in models.items():
            at.models.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, at.generator)
            t2i("evaluate", "--data", str(data))
            kept = data / f"eval-{name}"  # metrics.json, grid.png, interpolation.png of this model
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(at.eval, kept)
            results[f"{name} seed{seed}"] = json.loads((kept / "metrics.json").read_text())
    (args.scratch / "spread.json").write_text(json.dumps(results, indent=1))
    head = ["model, evaluator seed", *(c.split("/")[1] for c in COLUMNS), *SCORES]
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for seed in args.seeds:
        real = next(v for k, v in results.items() if k.endswith(f" seed{seed}"))
        print(f"| real images (ceiling), seed {seed} | " + " | ".join(f"{real[c + '/real']:.3f}" for c in COLUMNS)
              + " |" + " - |" * len(SCORES))
    for key, m in results.items():
        print(f"| {key} | " + " | ".join(f"{m[c + '/fake']:.3f}" for c in COLUMNS) + " | "
              + " | ".join(f"{m[s]:.3f}" if s in m else "-" for s in SCORES) + " |")


if __name__ == "__main__":
    main()
