"""The ``t2i`` command: one subcommand per pipeline stage."""

from __future__ import annotations

import sys

import typer

from stages import bench, check, download, embed, evaluate, evaluator, generate, ground, serve, shard, train
from t2i import T2IError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="t2i: reproducible text-to-image GAN pipeline (GAN-CLS and DF-GAN).")
app.command("download")(download.main)
app.command("shard")(shard.main)
app.command("embed")(embed.main)
app.command("ground")(ground.main)
app.command("train")(train.main)
app.command("evaluator")(evaluator.main)
app.command("evaluate")(evaluate.main)
app.command("generate")(generate.main)
app.command("bench")(bench.main)
app.command("serve")(serve.main)
app.command("check")(check.main)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except T2IError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C: the stage said where it stopped; no traceback
        sys.exit(130)


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m stages.cli train
    main()
