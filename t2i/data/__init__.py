"""Where samples come from (``raw``, ``synth``, ``download``, ``sources``) and how they are stored (``shards``, ``embed``)."""

from pathlib import Path


def raw_dir(data: Path, dataset: str) -> Path:
    return Path(data) / "raw" / dataset


def shard_dir(data: Path, dataset: str) -> Path:
    return Path(data) / "shards" / dataset


def embedding_dir(data: Path, dataset: str) -> Path:
    return Path(data) / "embeddings" / dataset
