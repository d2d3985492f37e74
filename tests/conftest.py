"""Shared fixtures for the data-pipeline tests.

The Hugging Face offline switches are set here, at import time, before any test module (or
anything they import) touches ``huggingface_hub`` / ``datasets`` / ``sentence_transformers``.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hashlib  # noqa: E402
import io  # noqa: E402
import tarfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATASET = "synthetic-flowers"


# --------------------------------------------------------------------------- text encoders


@pytest.fixture(scope="session")
def text_encoder():
    """The real bundled all-MiniLM-L6-v2, loaded once per session."""
    from t2i.text import TextEncoder

    return TextEncoder()


def fake_vector(text: str, dim: int = 8) -> np.ndarray:
    """A deterministic float32 vector for ``text`` (hash based, no model)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return np.frombuffer(digest[: 2 * dim], dtype="<u2").astype(np.float32) / 65535.0 - 0.5


class FakeEncoder:
    """Cheap stand-in for ``TextEncoder.encode`` that records every batch it is given."""

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        texts = list(texts)
        self.calls.append(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([fake_vector(t, self.dim) for t in texts])

    @property
    def texts(self) -> list[str]:
        return [t for call in self.calls for t in call]


@pytest.fixture
def fake_encoder():
    return FakeEncoder()


@pytest.fixture
def fake_vec():
    return fake_vector


# --------------------------------------------------------------------------- shards


def _build_shards(folder, n=24, render_size=32, image_size=16, samples_per_shard=5, seed=0,
                  test_fraction=0.3, **kw) -> dict:
    from t2i.data import synth
    from t2i.data.shards import write_shards

    samples = synth.flowers(n, render_size, seed, test_fraction)
    return write_shards(samples, Path(folder), dataset=DATASET, image_size=image_size,
                        samples_per_shard=samples_per_shard, **kw)


@pytest.fixture
def build_shards():
    """``build_shards(folder, n=..., ...) -> manifest``: tiny synthetic shards in ``folder``."""
    return _build_shards


def bow_encode(texts, dim: int = 16) -> np.ndarray:
    """Bag of words: a fixed random vector per word, summed; captions sharing words are close."""
    def word(w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(dim)
    return np.stack([sum(word(w) for w in t.split()) for t in texts]).astype(np.float32)


def _make_embedded(folder, n: int, *, image_size: int = 32, dim: int = 16, samples_per_shard: int = 16,
                   test_fraction: float = 0.2, encode=None) -> Path:
    """Tiny synthetic flowers, sharded and embedded (bag-of-words by default): the embedded folder."""
    from t2i.data.embed import embed_shards

    folder = Path(folder)
    _build_shards(folder / "shards", n=n, render_size=32, image_size=image_size,
                  samples_per_shard=samples_per_shard, test_fraction=test_fraction)
    encode = encode or (lambda texts: bow_encode(texts, dim))
    embed_shards(folder / "shards", folder / "emb", encode, model="fake", dim=dim)
    return folder / "emb"


@pytest.fixture(scope="session")
def make_embedded():
    """``make_embedded(folder, n, image_size=32, dim=16, ...) -> Path`` of embedded shards."""
    return _make_embedded


@pytest.fixture(scope="session")
def train_urls(tmp_path_factory) -> list[str]:
    """The train shards of 40 tiny embedded flowers (32x32, 16-d embeddings)."""
    from t2i.data.loader import embedded_urls

    return embedded_urls(_make_embedded(tmp_path_factory.mktemp("train"), 40, samples_per_shard=12), "train")


def read_tar(path) -> dict[str, dict[str, bytes]]:
    """``{key: {ext: bytes}}`` of a tar, in member order (keys split at the first dot)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


@pytest.fixture
def tar_contents():
    return read_tar


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@pytest.fixture
def load_npy():
    return npy


def truncate_half(path) -> None:
    """Cut a file in half (a crash mid-upload, a partial copy)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def drop_last_sample(path) -> int:
    """Rewrite a tar without its last sample (a valid tar, short by one); return samples left."""
    path = Path(path)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    keys = list(dict.fromkeys(m.name.partition(".")[0] for m, _ in members))
    keep = [(m, d) for m, d in members if m.name.partition(".")[0] != keys[-1]]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, d in keep:
            out.addfile(m, io.BytesIO(d))
    path.write_bytes(buf.getvalue())
    return len(keys) - 1


@pytest.fixture
def damage():
    """Ways to break a shard file: ``damage.truncate_half(p)``, ``damage.drop_last_sample(p)``."""

    class Damage:
        pass

    d = Damage()
    d.truncate_half = truncate_half
    d.drop_last_sample = drop_last_sample
    return d


def sha256_tree(folder) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder``."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def tree_hashes():
    return sha256_tree


def hidden_entries(folder) -> list[str]:
    """Names starting with '.' anywhere under ``folder`` (leftover temp files or folders)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return [str(p.relative_to(folder)) for p in folder.rglob(".*")]


@pytest.fixture
def leftovers():
    return hidden_entries


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous and the served page)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
