"""scripts/numerics_fingerprint.py: the hashes it prints to compare machines are this machine's
own, run after run, and each pinned row really runs under its setting."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # a fresh torch and text-model process per row


def fingerprint(*rows: str) -> dict:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "numerics_fingerprint.py"), "--json",
                        "--captions", "40", "--steps", "1", "--seconds", "0", "--rows", *rows],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def test_the_fingerprint_is_the_same_twice_on_one_machine():
    a, b = fingerprint("native", "ATEN_CPU_CAPABILITY"), fingerprint("native")
    native = [(x["rows"]["native"]["embed"], x["rows"]["native"]["train"]) for x in (a, b)]
    assert native[0] == native[1]
    assert a["cpu"] and all(re.fullmatch(r"[0-9a-f]{12}", r[k]) for r in a["rows"].values() for k in ("embed", "train"))
    assert a["rows"]["ATEN_CPU_CAPABILITY"]["aten"] == "AVX2"  # the pin reached the child process
