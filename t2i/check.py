"""Does this workspace reproduce the committed ``dvc.lock``? To the byte where every CPU can, within
stated tolerances where another kind of CPU cannot.

- download, shard and embed must give the lock's bytes on any machine (the embed stage's text
  model runs in fp64: docs/reliability.md, "The embed stage in fp64").
- The trained stages (ground, train, evaluator, evaluate) give the lock's bytes only on the kind
  of CPU that wrote it: another kind's kernels sum in another order, and training turns the last
  bit into another model. There the stages' metrics must stay within ``tolerances.yaml`` of the
  committed ones (the metrics files are in git: ``cache: false`` in ``dvc.yaml``).
- Which rule applies comes from ``dvc.lock.cpu.json``, the numerics fingerprint of the machine
  that wrote the lock (``t2i.numerics``; ``t2i check --record`` writes it), against this
  machine's.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from t2i import T2IError
from t2i.paths import Artifacts

EVERYWHERE = ("download", "shard", "embed")  # stages whose bytes hold on every CPU kind
TRAINED = ("ground", "train", "evaluator", "evaluate")  # the rest: bytes on the lock's CPU kind only
TOLERANCES = "tolerances.yaml"               # stage -> {metric: largest move allowed}
LOCK_CPU = "dvc.lock.cpu.json"               # the fingerprint of the machine that wrote dvc.lock


def metrics_file(at: Artifacts, stage: str) -> Path:
    """The metrics file that speaks for ``stage`` (the evaluator's: its scores of real test
    images, which the evaluate stage reports)."""
    return {"ground": at.grounding_metrics, "train": at.train_metrics,
            "evaluator": at.metrics, "evaluate": at.metrics}[stage]


@dataclass
class Output:
    stage: str
    path: str
    committed: str
    now: str | None  # None: missing
    strict: bool     # must match to the byte here
    detail: str = ""

    @property
    def matches(self) -> bool:
        return self.now == self.committed


@dataclass
class Metric:
    stage: str
    key: str
    committed: float | None
    now: float | None
    tolerance: float

    @property
    def ok(self) -> bool:
        if self.committed is None or self.now is None:
            return False
        return abs(self.now - self.committed) <= self.tolerance + 1e-12


@dataclass
class Report:
    rev: str
    lock_cpu: dict | None       # None: no record
    this_cpu: dict
    same_kind: bool
    outputs: list[Output] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # stages in dvc.yaml but not in the lock

    def failures(self) -> list[str]:
        out = [f"{s}: not in {self.rev}'s dvc.lock (run dvc repro and commit dvc.lock)" for s in self.extra]
        for o in self.outputs:
            if o.now is None:
                out.append(f"{o.stage}: {o.path} is missing (run dvc repro)")
            elif o.strict and not o.matches:
                out.append(f"{o.stage}: {o.path} differs from dvc.lock{' (' + o.detail + ')' if o.detail else ''}")
        for m in self.metrics:
            if m.committed is None or m.now is None:
                out.append(f"{m.stage}: metric {m.key} is {'not committed' if m.committed is None else 'missing'}")
            elif not m.ok:
                out.append(f"{m.stage}: {m.key} moved {m.now - m.committed:+.4g}, past its tolerance {m.tolerance:g}")
        return out


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics -> {"a/b/c": number} (the names ``dvc metrics show`` prints)."""
    out: dict[str, float] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def load_tolerances(path: Path) -> dict[str, dict[str, float]]:
    """``tolerances.yaml``: {stage: {metric: tolerance}}, stages among the trained ones."""
    if not path.is_file():
        raise T2IError(f"tolerances file {path} not found")
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise T2IError(f"{path}: expected a mapping of stages")
    for stage, entries in tree.items():
        if stage not in TRAINED:
            raise T2IError(f"{path}: unknown stage {stage!r} (ground, train, evaluator or evaluate)")
        for key, tol in (entries or {}).items():
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0 or math.isinf(tol):
                raise T2IError(f"{path}: {stage}.{key}: tolerance {tol!r} is not a number >= 0")
    return {stage: {k: float(v) for k, v in (entries or {}).items()} for stage, entries in tree.items()}


def git_show(root: Path, rev: str, path: str) -> bytes | None:
    """``path`` as committed at ``rev`` (None: not in that commit)."""
    r = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path}"], capture_output=True)
    return r.stdout if r.returncode == 0 else None


def committed_lock(root: Path, rev: str) -> dict:
    r = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       capture_output=True, text=True)
    if r.returncode:
        inside = subprocess.run(["git", "-C", str(root), "rev-parse"], capture_output=True).returncode == 0
        raise T2IError(f"unknown revision {rev!r}" if inside else
                       f"{root} is not a git repository: t2i check compares with the committed dvc.lock")
    text = git_show(root, rev, "dvc.lock")
    if text is None:
        raise T2IError(f"{rev} has no dvc.lock: run dvc repro and commit dvc.lock")
    return yaml.safe_load(text).get("stages", {})


def which_files(repo, folder: Path, committed: str) -> str:
    """For a folder that differs: which files, if the committed listing is in the DVC cache."""
    from t2i.data.download import file_hashes

    listing = Path(repo.cache.local.oid_to_path(committed))
    if not listing.is_file():
        return f"dvc.lock {committed[:8]}, here another; the committed listing is not in the DVC cache"
    then = {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}
    now = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    changed = sorted(p for p in then.keys() & now if file_hashes(folder / p)[0] != then[p])
    parts = [f"{len(changed)} changed: {', '.join(changed[:3])}{' ...' * (len(changed) > 3)}" if changed else "",
             f"{len(then.keys() - now)} gone" if then.keys() - now else "",
             f"{len(now - then.keys())} new" if now - then.keys() else ""]
    return "; ".join(p for p in parts if p)


def check(root: Path = Path("."), rev: str = "HEAD", tolerances: Path | None = None) -> Report:
    """Compare ``root``'s outputs and metrics with ``rev``'s dvc.lock and metrics files."""
    from dvc.repo import Repo

    from t2i.numerics import cpu_kind, same_kind
    from t2i.params import load_params

    root = Path(root).resolve()
    lock = committed_lock(root, rev)
    order = list((yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}))  # pipeline order
    lock = dict(sorted(lock.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    tol = load_tolerances(tolerances or root / TOLERANCES)  # bad input fails before the fingerprint's seconds
    recorded = git_show(root, rev, LOCK_CPU)
    lock_cpu = json.loads(recorded) if recorded else None
    this_cpu = cpu_kind()
    report = Report(rev, lock_cpu, this_cpu, lock_cpu is not None and same_kind(lock_cpu, this_cpu))
    at = Artifacts(Path("data"), load_params(root / "params.yaml").dataset)

    with Repo(str(root)) as repo:
        declared = {str(o): o for s in repo.index.stages for o in s.outs}
        report.extra = sorted({s.name for s in repo.index.stages} - lock.keys())
        for stage, entry in lock.items():
            strict = stage in EVERYWHERE or report.same_kind
            for out in entry.get("outs", []):
                path, committed = out["path"], out.get("md5")
                o = declared.get(path)
                now = o.get_hash().value if o is not None and (root / path).exists() else None
                row = Output(stage, path, committed, now, strict)
                if now is not None and not row.matches and committed and committed.endswith(".dir"):
                    row.detail = which_files(repo, root / path, committed)
                report.outputs.append(row)

    for stage in (s for s in lock if s in tol):
        entries = tol[stage]
        rel = metrics_file(at, stage).as_posix()
        then = git_show(root, rev, rel)
        then = flatten(json.loads(then)) if then else {}
        now = flatten(json.loads((root / rel).read_text())) if (root / rel).is_file() else {}
        report.metrics += [Metric(stage, k, then.get(k), now.get(k), t) for k, t in entries.items()]
    return report


def record(root: Path = Path(".")) -> dict:
    """Write ``dvc.lock.cpu.json``: this machine is the one that wrote ``dvc.lock``."""
    from t2i.io import write_json_atomic
    from t2i.numerics import cpu_kind

    fp = cpu_kind()
    write_json_atomic(Path(root) / LOCK_CPU, fp)
    return fp
