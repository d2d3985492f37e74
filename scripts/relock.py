"""dvc.lock's code and params hashes for this checkout, its outputs kept: for a change that leaves
every output byte-identical, on a machine whose CPU kind cannot reproduce the lock's outputs
(another kind sums in another order from the ground stage on, see docs/ci.md), where `dvc commit`
in a workspace whose outputs match the lock is not possible.

Every dep outside data/ and every param of every stage is hashed here by DVC itself
(``Repo().index``, ``dep.get_hash()``, the params' values); data deps, outputs and everything
else come from the committed dvc.lock. Show first, separately, that the outputs are unchanged
(a `dvc repro` of the old and the new code on one machine with the same md5 for every out).

    python scripts/relock.py            # rewrite dvc.lock
    python scripts/relock.py --check    # exit 1 if dvc.lock's code or params hashes are stale
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def relocked(lock: dict) -> dict:
    """``lock`` with every stage's code deps and params as this checkout has them."""
    from dvc.repo import Repo

    repo = Repo(str(ROOT))
    out = {**lock, "stages": dict(lock["stages"])}
    for stage in repo.index.stages:
        old = lock["stages"][stage.addressing]
        kept = {d["path"]: d for d in old.get("deps", [])}
        deps, params = [], {}
        for dep in stage.deps:
            if type(dep).__name__ == "ParamsDependency":
                values = dep.get_hash().value
                params[dep.def_path] = {k: values[k] for k in sorted(values)}
                continue
            p = dep.def_path
            if p.startswith("data/"):
                deps.append(kept[p])
                continue
            entry = {"path": p, "hash": "md5", "md5": dep.get_hash().value}
            if (ROOT / p).is_dir():  # DVC's own .dvcignore drops the bytecode caches
                files = [f for f in (ROOT / p).rglob("*") if f.is_file() and "__pycache__" not in f.parts]
                entry["size"], entry["nfiles"] = sum(f.stat().st_size for f in files), len(files)
            else:
                entry["size"] = os.path.getsize(ROOT / p)
            deps.append(entry)
        new = {"cmd": old["cmd"], "deps": sorted(deps, key=lambda d: d["path"])}
        if params:
            new["params"] = params
        new.update({k: v for k, v in old.items() if k not in new})
        out["stages"][stage.addressing] = new
    return out


def dump(lock: dict) -> str:
    """DVC's layout: block style, no line folding, an empty value for null."""
    text = yaml.safe_dump(lock, sort_keys=False, default_flow_style=False, width=10**6, allow_unicode=True)
    return "\n".join(line[: -len(" null")] if line.endswith(": null") else line for line in text.split("\n"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if dvc.lock's code or params hashes are stale")
    args = ap.parse_args()
    path = ROOT / "dvc.lock"
    lock = yaml.safe_load(path.read_text())
    new = relocked(lock)
    if args.check:
        stale = [name for name in lock["stages"] if lock["stages"][name] != new["stages"][name]]
        if stale:
            sys.exit(f"dvc.lock: stale code or params hashes in {', '.join(stale)}: run python scripts/relock.py "
                     "(outputs unchanged) or dvc repro")
        return
    from t2i.io import write_bytes_atomic

    write_bytes_atomic(path, dump(new).encode())
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
