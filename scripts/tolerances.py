"""Measure tolerances.yaml from runs of the default recipe that differ in every seed.

Each tolerance is ``--factor`` (2) times the range (largest minus smallest) of its metric over
the runs, at least ``--floor`` (0.02), rounded up to 0.001 (0.1 from 1 on). A run is a data root
holding the trained stages' metrics files (t2i.check.metrics_file), e.g. a workspace's ``data``
or a scratch folder that ``t2i ground/train/evaluator/evaluate --data <folder> -S
<stage>.seed=N`` wrote (docs/ci.md, "Where the tolerances come from"):

    python scripts/tolerances.py lock=data a=/tmp/spread/a/data b=/tmp/spread/b/data [--write]

Prints a markdown table (one column per run, the range, the tolerance); ``--write`` puts the new
values into tolerances.yaml in place, keeping its comments and its list of metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from t2i import T2IError
from t2i.check import TOLERANCES, flatten, load_tolerances, metrics_file
from t2i.paths import Artifacts


def round_up(x: float) -> float:
    """Up to the next 0.001 (0.1 from 1 on): a rounded tolerance never falls below its measure."""
    step = 0.001 if x < 1 else 0.1
    return round(math.ceil(x / step - 1e-9) * step, 3)


def measure(runs: dict[str, Path], wanted: dict[str, dict[str, float]], dataset: str,
            factor: float, floor: float) -> list[tuple[str, str, list[float], float]]:
    """[(stage, metric, values per run, tolerance)] for every metric ``wanted`` names."""
    rows = []
    for stage, metrics in wanted.items():
        found = {}
        for name, root in runs.items():
            path = metrics_file(Artifacts(root, dataset), stage)
            if not path.is_file():
                raise T2IError(f"run {name}: {path} not found")
            try:
                found[name] = flatten(json.loads(path.read_text()))
            except json.JSONDecodeError as e:
                raise T2IError(f"run {name}: {path} is not JSON ({e})") from None
        for metric in metrics:
            missing = [name for name, values in found.items() if metric not in values]
            if missing:
                raise T2IError(f"{stage} metric {metric} missing from run(s) {', '.join(missing)}")
            values = [found[name][metric] for name in runs]
            rows.append((stage, metric, values, round_up(max(factor * (max(values) - min(values)), floor))))
    return rows


def decimal(x: float) -> str:
    """0.075 -> "0.075", 33.0 -> "33": the rounded value exactly, at any size."""
    return f"{x:.3f}".rstrip("0").rstrip(".")


def rewrite(path: Path, rows) -> None:
    """Replace each ``  metric: value`` under its stage's heading, leaving every other line alone."""
    new = {(stage, metric): tol for stage, metric, _, tol in rows}
    stage, lines, done = None, [], set()
    for line in path.read_text().splitlines(keepends=True):
        if m := re.match(r"^(\w+):", line):
            stage = m.group(1)
        elif (m := re.match(r"^(\s+)(\S+): *([^\s#]+)", line)) and (stage, m.group(2)) in new:
            line = f"{m.group(1)}{m.group(2)}: {decimal(new[stage, m.group(2)])}{line[m.end():]}"
            done.add((stage, m.group(2)))
        lines.append(line)
    if missed := sorted(new.keys() - done):
        raise T2IError(f"{path}: cannot rewrite {', '.join(f'{s}.{k}' for s, k in missed)} "
                       "(write each as 'metric: value' on its own line under its stage)")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="NAME=DATA_ROOT, one per run (at least two)")
    ap.add_argument("--dataset", default="synthetic-flowers")
    ap.add_argument("--tolerances", type=Path, default=Path(TOLERANCES))
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--floor", type=float, default=0.02)
    ap.add_argument("--write", action="store_true", help="rewrite the tolerances file's values")
    args = ap.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs if "=" in r)
    if len(runs) != len(args.runs) or len(runs) < 2:
        raise SystemExit("error: give at least two runs as NAME=DATA_ROOT")
    try:
        rows = measure({k: Path(v) for k, v in runs.items()}, load_tolerances(args.tolerances), args.dataset,
                       args.factor, args.floor)
    except T2IError as e:
        raise SystemExit(f"error: {e}") from None
    print("| stage | metric | " + " | ".join(runs) + " | range | tolerance |")
    print("| --- | --- | " + " | ".join("---" for _ in runs) + " | --- | --- |")
    for stage, metric, values, tol in rows:
        fmt = (lambda v: f"{v:.1f}") if max(values) > 2 else (lambda v: f"{v:.3f}")
        print(f"| {stage} | `{metric}` | " + " | ".join(fmt(v) for v in values)
              + f" | {fmt(max(values) - min(values))} | {decimal(tol)} |")
    if args.write:
        try:
            rewrite(args.tolerances, rows)
        except T2IError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"wrote {args.tolerances}")


if __name__ == "__main__":
    main()
