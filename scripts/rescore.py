"""Re-score the generators of earlier commits or DVC experiments with today's evaluator.

When the evaluator changes, every earlier metrics.json is scored by the old one. Retraining
each experiment to re-score it costs its full training time; this copies each generator out
of the DVC cache instead and runs only `t2i evaluate` on it.

Run it in a workspace whose evaluator and test embeddings are up to date (`dvc status` clean):

    python scripts/rescore.py refs/exps/b3/eecc.../gan HEAD~3 ...   # git revisions holding a dvc.lock
    python scripts/rescore.py --cache /other/clone/.dvc/cache v1.0   # generators cached elsewhere

Prints one line of metrics per revision, writes them all to data/rescored.json, and restores the
workspace's own generator and evaluate outputs (`dvc checkout -f train evaluate`) at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import yaml

from t2i.params import load_params
from t2i.paths import Artifacts

SHOWN = (  # printed where the dataset has them (CUB has no phrasing metric)
         "attr/petal_colour/fake", "attr/centre_colour/fake", "attr/petal_count/fake", "attr/petal_shape/fake",
         "r_precision/fake", "diversity/ratio", "diversity/pixel_ratio", "fd_evaluator",
         "phrasing/petal_colour/novel", "phrasing/centre_colour/novel")


def generator_dir_md5(rev: str) -> str:
    """The md5 of the train stage's generator folder in ``rev``'s dvc.lock."""
    lock = yaml.safe_load(subprocess.check_output(["git", "show", f"{rev}:dvc.lock"]))
    return next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"].startswith("data/models/"))


def copy_from_cache(dir_md5: str, cache: Path, dest: Path) -> None:
    """Materialise a cached DVC folder (its ``.dir`` listing, then each file) at ``dest``."""
    blob = lambda md5: cache / "files" / "md5" / md5[:2] / md5[2:]  # noqa: E731
    listing = blob(dir_md5)
    if not listing.is_file():
        raise SystemExit(f"generator {dir_md5} is not in {cache}: pass --cache of the clone that trained it")
    shutil.rmtree(dest, ignore_errors=True)
    for entry in json.loads(listing.read_text()):
        (dest / entry["relpath"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blob(entry["md5"]), dest / entry["relpath"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="+", help="git revisions (commits, experiment refs) with a dvc.lock")
    ap.add_argument("--cache", type=Path, default=Path(".dvc/cache"), help="DVC cache holding the generators")
    args = ap.parse_args()
    at = Artifacts(Path("data"), load_params("params.yaml").dataset)
    models, metrics_json = at.models, at.metrics
    results = {}
    try:
        for rev in args.revs:
            md5 = generator_dir_md5(rev)
            copy_from_cache(md5, args.cache, models)
            subprocess.run(["t2i", "evaluate"], check=True, capture_output=True)
            results[rev] = {"generator": md5, **json.loads(metrics_json.read_text())}
            print(rev, " ".join(f"{k}={results[rev][k]:.3f}" for k in SHOWN if k in results[rev]), flush=True)
    finally:
        subprocess.run(["dvc", "checkout", "-f", "-q", "train", "evaluate"], check=True)
    Path("data/rescored.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
