"""Module modes, changed for a while and put back exactly: every submodule's train/eval flag and
every parameter's ``requires_grad`` as they were, even when the body raises. A frozen text head
inside a model in train mode stays in eval mode afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Inside, ``modules`` are in eval mode; afterwards each submodule is in the mode it was in."""
    kept = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in kept:
            m.training = training


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Inside, no parameter of ``module`` asks for a gradient; afterwards each asks as it did."""
    kept = [(p, p.requires_grad) for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, wanted in kept:
            p.requires_grad_(wanted)
