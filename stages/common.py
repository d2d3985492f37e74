"""Options every stage shares, and the one-line summary each prints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from t2i.params import Params, load_params

ParamsFile = Annotated[Path, typer.Option("--params", help="params.yaml to read.")]
Overrides = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-S", help="Override a param, e.g. -S shard.image_size=32 (repeatable)."),
]
DataDir = Annotated[Path, typer.Option("--data", help="Root folder of pipeline artifacts.")]


def params(path: Path, overrides: Optional[list[str]]) -> Params:
    return load_params(path, overrides or [])


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def done(stage: str, seconds: float, what: str) -> None:
    typer.echo(f"{stage}: {what} in {seconds:.1f}s")
