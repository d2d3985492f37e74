"""scripts/real_vs_generated.py: real test flowers beside generated ones, for the same captions."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from t2i.data.loader import batches, embedded_urls
from t2i.params import TrainParams
from t2i.train import DataSpec, training_loop

from tests.conftest import REPO
from tests.test_train import TINY


def test_it_draws_real_and_generated_flowers_for_the_same_captions(make_embedded, tmp_path):
    emb = make_embedded(tmp_path / "made", 40)
    data = tmp_path / "data"
    (data / "embeddings").mkdir(parents=True)
    (data / "embeddings" / "synthetic-flowers").symlink_to(emb)
    train = [m for b in batches(embedded_urls(emb, "train"), 64, drop_last=False) for m in b["meta"]]
    training_loop(embedded_urls(emb, "train"), data / "models" / "synthetic-flowers",
                  TrainParams(**{**TINY, "epochs": 1}), progress=False,
                  data=DataSpec(emb_dim=16, image_size=32, text_model="fake", num_samples=len(train)))
    out = tmp_path / "rvg.png"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "real_vs_generated.py"), "--data", str(data),
                        "--params", str(REPO / "params.yaml"), "--out", str(out), "--rows", "2", "--cols", "3"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    image = Image.open(out)
    assert image.width > 6 * 32 and image.height > 2 * 32 and "2 captions" in r.stdout
