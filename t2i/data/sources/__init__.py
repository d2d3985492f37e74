"""Dataset adapters: each brings one dataset into the raw layout of ``t2i/data/raw.py``.

An adapter is a function ``prepare_<x>(folder, params, progress) -> info`` in its own module
(``ADAPTERS`` names it as ``module:function``). It writes samples
with a ``RawWriter`` into ``folder``, a temporary folder that replaces ``data/raw/<dataset>``
only if the adapter succeeds, and returns the summary saved beside them as ``info.json``
(counts, classes, the hashes of every source file, captions found missing). Adapters are
imported only when used, so the synthetic default never imports scipy or ``datasets``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from t2i.io import atomic_dir, write_json_atomic
from t2i.params import DATASETS, Params

ADAPTERS = {
    "synthetic-flowers": "t2i.data.sources.synthetic:prepare_synthetic",
    "cub": "t2i.data.sources.cub:prepare_cub",
    "oxford-102": "t2i.data.sources.oxford:prepare_oxford",
    "hf": "t2i.data.sources.hf:prepare_hf",
    "folder": "t2i.data.sources.folder:prepare_folder",
}
assert tuple(ADAPTERS) == DATASETS, "every dataset in params.DATASETS needs an adapter"


def prepare_raw(out: Path, params: Params, progress: bool = True) -> dict:
    """Fetch (where needed) and write ``params.dataset`` into the raw folder ``out``, atomically."""
    module, function = ADAPTERS[params.dataset].split(":")
    adapter = getattr(importlib.import_module(module), function)
    with atomic_dir(out) as tmp:
        info = adapter(tmp, params, progress)
        write_json_atomic(tmp / "info.json", info)
    return info
