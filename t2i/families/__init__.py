"""The model families (``train.arch``): name -> family, a ``t2i.families.common.Family``.

A family is one module: its config, G, D, optimisers, random draws, forward passes and losses.
``t2i.gan`` trains any of them through that interface and ``t2i.checkpoint`` loads any one's
generator by the name its record stores. ``register_family`` adds one (a test's toy family).

This module stays light, importing no torch and no other t2i module (not even for type hints):
``t2i.params`` checks ``train.arch`` against it in every stage. The built-in families are named here by their module in this package, imported on first
``get_family``; as relative names, so that dvc.yaml's data stages, which import this file
through t2i.params, do not count the networks as their code (train and evaluate list the
whole folder).
"""

from __future__ import annotations

import importlib

BUILT_IN = {"gan-cls": "gan_cls:GanCls", "df-gan": "df_gan:DfGan"}  # name -> module:class in this package
FAMILIES: dict = dict(BUILT_IN)  # name -> Family; a built-in's module:class until its first get_family


def check_arch(arch: str) -> str:
    """``arch`` if a family has that name, else a ValueError naming it and the known ones."""
    if arch not in FAMILIES:
        raise ValueError(f"unknown model family {arch!r} (known: {', '.join(FAMILIES)})")
    return arch


def get_family(arch: str):
    """The ``Family`` named ``arch``; a built-in one's module is imported on first use."""
    entry = FAMILIES[check_arch(arch)]
    if isinstance(entry, str):
        module, name = entry.split(":")
        entry = FAMILIES[arch] = getattr(importlib.import_module(f"{__name__}.{module}"), name)()
    return entry


def register_family(family) -> None:
    """Add ``family`` under its ``name``; a name already taken is an error."""
    if family.name in FAMILIES:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    FAMILIES[family.name] = family


def arch_of(config: dict) -> str:
    """The family of a stored training config: its ``arch``, or gan-cls, whose records keep
    exactly the keys they had before families existed (so its files keep their bytes)."""
    return config.get("arch", "gan-cls")
