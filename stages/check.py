"""``t2i check``: this workspace's outputs against the committed dvc.lock, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from t2i import T2IError


def main(
    rev: Annotated[str, typer.Option("--rev", help="The commit whose dvc.lock and metrics to compare with.")] = "HEAD",
    tolerances: Annotated[Optional[Path], typer.Option("--tolerances", help="Tolerances file (default: tolerances.yaml).")] = None,
    record: Annotated[bool, typer.Option("--record", help="Write dvc.lock.cpu.json: this machine wrote dvc.lock.")] = False,
) -> None:
    """Say per stage whether the outputs reproduce dvc.lock: download, shard and embed to the byte;
    ground, train, evaluator and evaluate to the byte on the CPU kind that wrote the lock, else
    their metrics within tolerances.yaml. Exits 1 naming what failed."""
    from t2i.check import LOCK_CPU, check
    from t2i.check import record as record_cpu
    from t2i.numerics import describe

    if record:
        fp = record_cpu(Path("."))
        typer.echo(f"check: {LOCK_CPU} <- {describe(fp)}; commit it with dvc.lock")
        return
    r = check(Path("."), rev, tolerances)
    wrote = describe(r.lock_cpu) if r.lock_cpu else f"an unrecorded machine (no {LOCK_CPU})"
    here = describe(r.this_cpu)
    typer.echo(f"dvc.lock of {r.rev} was written on {wrote}\nthis machine: {here}: "
               f"{'the same kind: every stage must match to the byte' if r.same_kind else 'another kind: the trained stages are judged by their metrics'}\n")
    width = max(len(o.path) for o in r.outputs) if r.outputs else 4
    typer.echo(f"{'stage':<10} {'output':<{width}} {'rule':<8} {'dvc.lock':<10} {'now':<10} ok")
    for o in r.outputs:
        ok = "ok" if o.matches else ("FAIL" if o.strict or o.now is None else "differs (metrics decide)")
        now = (o.now or "missing")[:8]
        typer.echo(f"{o.stage:<10} {o.path:<{width}} {'bytes' if o.strict else 'metrics':<8} {o.committed[:8]:<10} {now:<10} {ok}"
                   + (f": {o.detail}" if o.detail else ""))
    if r.metrics:
        width = max(len(m.key) for m in r.metrics)
        typer.echo(f"\n{'stage':<10} {'metric':<{width}} {'committed':>10} {'now':>10} {'tolerance':>10} ok")
        for m in r.metrics:
            num = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
            typer.echo(f"{m.stage:<10} {m.key:<{width}} {num(m.committed):>10} {num(m.now):>10} {m.tolerance:>10g} "
                       f"{'ok' if m.ok else 'FAIL'}")
    failures = r.failures()
    if failures:
        raise T2IError(f"check failed ({len(failures)}): " + "; ".join(failures[:3]) + (" ..." if len(failures) > 3 else ""))
    typer.echo(f"\ncheck: {len(r.outputs)} outputs and {len(r.metrics)} metrics reproduce {r.rev}'s dvc.lock")
