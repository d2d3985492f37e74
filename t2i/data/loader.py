"""Training stream: embedded shards -> batches of tensors, with WebDataset.

Deterministic per (seed, epoch): the shard order and the shuffle buffer are seeded, so a run
that resumes mid-epoch can replay the same order and skip the batches it already used.
"""

from __future__ import annotations

import io
import itertools
import json
import random
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from t2i import T2IError
from t2i.data.shards import READ_ERRORS, read_manifest, shard_error, shard_paths


def embedded_urls(folder: Path, split: str) -> list[str]:
    """Local shard paths of ``split``, from the embedded folder's manifest."""
    manifest = read_manifest(folder)
    if "emb_dim" not in manifest:
        raise T2IError(f"{folder} holds no embeddings: run the embed stage first")
    return [str(p) for p in shard_paths(folder, split, manifest, verify=True)]


def image_tensor(data: bytes, where: str) -> torch.Tensor:
    """PNG or JPEG bytes -> uint8 (3, H, W); bad bytes are an error naming ``where``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()
    except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for bad image bytes
        raise T2IError(f"{where}: corrupt image ({str(e).split(' <')[0] or type(e).__name__})") from None


def parse_captions(txt: bytes) -> list[str]:
    """A sample's ``.txt`` entry -> its captions, one per line."""
    return txt.decode("utf-8").rstrip("\n").split("\n")


def decode(sample: dict) -> dict:
    """Raw tar entries -> image uint8 (3, H, W), emb float32 (captions, D), captions, meta."""
    key = sample["__key__"]
    where = f"shard {sample.get('__url__', '?')}: sample {key}"
    data = sample.get("png") or sample.get("jpg")
    if data is None or "emb.npy" not in sample:
        raise T2IError(f"{where} lacks an image or emb.npy: is this an embedded shard?")
    image = image_tensor(data, where)
    try:
        emb = torch.from_numpy(np.load(io.BytesIO(sample["emb.npy"]), allow_pickle=False).astype(np.float32))
        meta = json.loads(sample["json"])
        captions = parse_captions(sample["txt"])
    except (OSError, ValueError, KeyError) as e:
        raise T2IError(f"{where}: corrupt {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return {"key": key, "image": image, "emb": emb, "captions": captions, "meta": meta,
            "class_id": int(meta.get("class_id", -1))}


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the inverse of ``to_uint8``)."""
    return images.float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 [0, 255] on the CPU (uint8 images pass through)."""
    if images.dtype == torch.uint8:
        return images
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def collate(samples: list[dict]) -> dict:
    return {
        "key": [s["key"] for s in samples],
        "image": torch.stack([s["image"] for s in samples]),  # (B, 3, H, W) uint8
        "emb": torch.stack([s["emb"] for s in samples]),  # (B, captions, D)
        "class_id": torch.tensor([s["class_id"] for s in samples]),  # (B,)
        "captions": [s["captions"] for s in samples],
        "meta": [s["meta"] for s in samples],
    }


def stream(urls: list[str], *, shuffle: int = 0, seed: int = 0, epoch: int = 0,
           rank: int = 0, world: int = 1, workers: int = 0, repeat: bool = False) -> wds.WebDataset:
    """Decoded samples; with ``shuffle`` > 0, shard order and a buffer shuffled per (seed, epoch);
    with ``repeat``, the same order again and again, without end (the caller cuts the epoch).

    Under DDP (``world`` > 1) every rank shuffles the shard list the same way, then:
    - with at least one shard per rank and worker, rank r reads shards r, r + world, ... (and
      each DataLoader worker a share of those);
    - with fewer shards (tiny datasets), every rank reads them all and keeps every
      ``world``-th sample from ``rank`` on: disjoint slices that differ in size by at most one.
    """
    urls = list(urls)
    if shuffle:
        random.Random(f"{seed}-{epoch}").shuffle(urls)
    by_shard = world > 1 and len(urls) >= world * max(workers, 1)
    if by_shard:
        urls = urls[rank::world]  # WebDataset's split_by_node, with rank and world passed in
    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None,
                        workersplitter=wds.split_by_worker, empty_check=False)
    if world > 1 and not by_shard:
        ds = ds.slice(rank, None, world)
    if shuffle:
        ds = ds.shuffle(shuffle, initial=shuffle, seed=f"{seed}-{epoch}-{rank}-buffer")
    if repeat:
        ds = ds.repeat()  # WebDataset repeats the whole pipeline, the stages added later too
    return ds.map(decode)


class EpochBatches(torch.utils.data.IterableDataset):
    """The batches of one epoch per iteration (see ``Loader``). The epoch sits in shared memory
    and is read when an iteration starts, so DataLoader workers kept across epochs follow
    ``set_epoch`` made in the main process."""

    def __init__(self, urls: list[str], batch_size: int, drop_last: bool, **stream_kw) -> None:
        self.urls, self.batch_size, self.drop_last, self.stream_kw = urls, batch_size, drop_last, stream_kw
        self.epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch.fill_(epoch)

    def __iter__(self):
        ds = stream(self.urls, epoch=int(self.epoch), **self.stream_kw)
        return iter(ds.batched(self.batch_size, collation_fn=collate, partial=not self.drop_last))


class Loader:
    """Batches of embedded shards, epoch after epoch, from one loader built once: with
    ``workers`` > 0 its DataLoader processes stay alive across epochs (persistent, prefetching,
    batches in pinned memory with ``pin_memory``). Epoch ``e`` is deterministic per (seed, e),
    whatever came before it, so a run resumed mid-epoch replays the same order.

    ``steps`` fixes the batches per epoch: the stream repeats and is cut there, so every rank
    takes exactly that many, even where its share splits unevenly across its workers (each
    worker drops its own partial batch). Without ``steps``, an epoch is one pass over the data.
    """

    def __init__(self, urls: list[str], batch_size: int, *, shuffle: int = 0, seed: int = 0, workers: int = 0,
                 drop_last: bool = True, rank: int = 0, world: int = 1, steps: int | None = None,
                 pin_memory: bool = False) -> None:
        self.urls, self.steps = list(urls), steps
        workers = min(workers, len(self.urls))  # a worker without a shard has nothing to read
        self.dataset = EpochBatches(self.urls, batch_size, drop_last, shuffle=shuffle, seed=seed, rank=rank,
                                    world=world, workers=workers, repeat=steps is not None)
        self.dataloader = None if workers == 0 else torch.utils.data.DataLoader(
            self.dataset, batch_size=None, num_workers=workers, persistent_workers=True, prefetch_factor=4,
            pin_memory=pin_memory, generator=torch.Generator())  # its own generator: the global RNG is left alone

    def epoch(self, epoch: int):
        """Iterate the batches of ``epoch`` (see ``collate``); a shard that cannot be read is a T2IError."""
        self.dataset.set_epoch(epoch)
        it = iter(self.dataloader if self.dataloader is not None else self.dataset)
        return _named_errors(itertools.islice(it, self.steps), self.urls)


def batches(urls: list[str], batch_size: int, *, shuffle: int = 0, seed: int = 0, epoch: int = 0,
            workers: int = 0, drop_last: bool = True):
    """One pass over ``urls`` in batches (see ``collate``); ``workers`` > 0 decodes in DataLoader processes."""
    return Loader(urls, batch_size, shuffle=shuffle, seed=seed, workers=workers, drop_last=drop_last).epoch(epoch)


def _named_errors(batches_, urls: list[str]):
    """Pass batches through; a shard that cannot be read becomes one line naming it (also when
    the error comes from a DataLoader worker, wrapped in its traceback)."""
    try:
        yield from batches_
    except T2IError as e:
        raise T2IError(str(e).strip().splitlines()[-1].split("T2IError: ", 1)[-1]) from None
    except READ_ERRORS as e:
        text = " ".join(str(a) for a in e.args)
        shard = next((u for u in urls if u in text), None) or (urls[0] if len(urls) == 1 else f"among {len(urls)} shards")
        raise shard_error(shard, e) from None
