"""Thin Typer commands, one module per DVC stage; the logic lives in the ``t2i`` library."""
