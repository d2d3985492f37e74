"""embed.precision: in fp64 the embed stage writes the same bytes whatever kernels the CPU math
libraries pick (another CPU kind, stood in for by pinning them to AVX2 in a subprocess)."""

from __future__ import annotations

import json
import shutil

import pytest

from t2i.device import PINNED_ISA as PINS
from tests.test_cli_errors import DATASET, t2i

pytestmark = pytest.mark.slow  # the text model, twice, in fresh processes


def test_fp64_embeddings_have_the_same_bytes_with_the_cpu_kernels_pinned(tmp_path, build_shards, tree_hashes,
                                                                          monkeypatch):
    native, pinned = tmp_path / "native", tmp_path / "pinned"
    build_shards(native / "data" / "shards" / DATASET, n=24, samples_per_shard=8)
    shutil.copytree(native, pinned)
    for name in PINS:
        monkeypatch.delenv(name, raising=False)
    assert t2i(native, "embed", "--data", "data", timeout=300).returncode == 0
    for name, value in PINS.items():
        monkeypatch.setenv(name, value)
    r = t2i(pinned, "embed", "--data", "data", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = [d / "data" / "embeddings" / DATASET for d in (native, pinned)]
    assert tree_hashes(out[0]) == tree_hashes(out[1])
    assert json.loads((out[0] / "manifest.json").read_text())["text_precision"] == "fp64"
