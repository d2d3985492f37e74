"""``t2i serve``: a local page to try a trained generator (not a DVC stage; needs the demo extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from stages.common import DataDir, Overrides, ParamsFile, params
from t2i.paths import Artifacts


def main(
    checkpoint: Annotated[Optional[Path], typer.Option(help="generator.pt (default: that of params.yaml's dataset).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    params_file: ParamsFile = Path("params.yaml"),
    overrides: Overrides = None,
    data: DataDir = Path("data"),
) -> None:
    """Serve a page to type captions into and see the generator's images (Ctrl-C stops it); the
    generator, evaluator and metrics are those of params.yaml's dataset (-S dataset=cub for another)."""
    at = Artifacts(data, params(params_file, overrides).dataset)
    from t2i import T2IError

    try:
        import uvicorn
    except ImportError:
        raise T2IError("t2i serve needs the demo extra: pip install -e '.[demo]'") from None
    from t2i.serve import Demo, create_app

    demo = Demo(checkpoint or at.generator, device=device, evaluator=at.evaluator, metrics=at.metrics,
                name=at.dataset if checkpoint is None else None)
    typer.echo(f"serve: http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(create_app(demo), host=host, port=port, log_level="warning")
