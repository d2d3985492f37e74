"""``t2i generate``: a grid from captions, repeatable by seed; clear errors for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from t2i import T2IError
from t2i.generate import generate
from t2i.models import Generator, ModelConfig
from t2i.checkpoint import save_generator


def tiny_generator(path: Path, emb_dim: int) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(emb_dim=emb_dim, z_dim=8, proj_dim=8, ngf=8, ndf=8, image_size=32)
    save_generator(path, Generator(cfg), {"model": vars(cfg), "text_model": "all-MiniLM-L6-v2"})
    return path


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", "from stages.cli import main; main()", "generate", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_generate_grid_repeatable_by_seed(tmp_path):
    ckpt = tiny_generator(tmp_path / "g.pt", 384)
    r = cli("this flower has five pink petals and a yellow center", "a red flower", "-n", "3",
            "--checkpoint", str(ckpt), "--out", "grid.png", "--each", "single", "--seed", "7", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    grid = Image.open(tmp_path / "grid.png")
    assert grid.height >= 2 * 32 and len(list((tmp_path / "single").glob("*.png"))) == 6
    a = generate(ckpt, ["a red flower"], n=2, seed=7)
    b = generate(ckpt, ["a red flower"], n=2, seed=7)
    c = generate(ckpt, ["a red flower"], n=2, seed=8)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("caption", ["", "   "])
def test_empty_caption_is_an_error(tmp_path, caption):
    r = cli(caption, "--checkpoint", str(tiny_generator(tmp_path / "g.pt", 384)), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: t2i generate: caption 0 is empty")
    assert not (tmp_path / "grid.png").exists()


def test_missing_checkpoint_is_an_error(tmp_path):
    r = cli("a red flower", "--checkpoint", "nowhere/generator.pt", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["error: missing generator checkpoint nowhere/generator.pt: run the train stage first"]


def test_embedding_size_mismatch_is_an_error(tmp_path):
    ckpt = tiny_generator(tmp_path / "g.pt", 16)  # trained on 16-d embeddings, the text model gives 384
    with pytest.raises(T2IError, match=r"gives 384-d embeddings but .*g.pt was trained on 16-d"):
        generate(ckpt, ["a red flower"])
