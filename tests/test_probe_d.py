"""scripts/probe_d.py: D's trunk trained on one attribute, supervised, read on the test images."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def probe(data, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "probe_d.py"), "--data", str(data),
                           "--params", str(REPO / "params.yaml"), "-S", "train.ndf=8", "-S", "train.batch_size=16",
                           "-S", "train.threads=1", *args], capture_output=True, text=True)


def test_it_learns_an_easy_attribute_and_names_an_unknown_one(make_embedded, tmp_path):
    emb = make_embedded(tmp_path / "made", 60, samples_per_shard=20)
    data = tmp_path / "data"
    (data / "embeddings").mkdir(parents=True)
    (data / "embeddings" / "synthetic-flowers").symlink_to(emb)
    r = probe(data, "--attribute", "petal_colour", "--steps", "60", "--every", "30", "--lr", "0.002",
              "--augment", "translation,turn")
    assert r.returncode == 0, r.stderr
    acc = [float(a) for a in re.findall(r"test accuracy (\S+)", r.stdout)]
    assert len(acc) == 2 and acc[-1] >= 0.5, r.stdout  # the petal colour is read from a few pixels
    r = probe(data, "--attribute", "petal_colours", "--steps", "1")
    assert r.returncode != 0 and "unknown attribute 'petal_colours'" in r.stderr
