"""Atomic writes and small file helpers shared by every stage.

Every output is built under a temporary sibling path and renamed into place, so an
interrupted or failed stage never leaves a half-written file or folder behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from t2i import T2IError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _clean_stale(path: Path) -> None:
    """Remove ``path``'s temporaries left by killed processes (``.<name>.<pid>.*.tmp`` whose
    process is gone), and finish a folder swap that a kill interrupted: ``.<name>.old`` is put
    back when ``path`` is missing, deleted when ``path`` is there."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(path)


def _tmp_sibling(path: Path, kind: str) -> Path:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise T2IError(f"cannot create output folder {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise T2IError(f"output folder {parent} is not writable")
    _clean_stale(path)
    umask = os.umask(0)
    os.umask(umask)
    prefix = f".{path.name}.{os.getpid()}."  # the pid tells a later run whether its writer is gone
    if kind == "dir":  # mkdtemp/mkstemp make private entries: give them the usual permissions
        made = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
        made.chmod(0o777 & ~umask)
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
        os.close(fd)
        made = Path(name)
        made.chmod(0o666 & ~umask)
    return made


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block succeeds.

    The old folder is moved aside to ``.<name>.old`` and deleted only after the new one is in
    place; a kill between the two renames is repaired by the next write (``_clean_stale``)."""
    path = Path(path)
    tmp = _tmp_sibling(path, "dir")
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = _tmp_sibling(path, "file")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def save_torch(obj, path: str | os.PathLike) -> None:
    """torch.save, atomically and byte-reproducibly: saving to a file would name the zip's
    records after the temporary file, so the bytes would differ from run to run."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def load_model(path: str | os.PathLike, build, what: str, hint: str, device: str = "cpu"):
    """A model saved as {"config", "state_dict"} (``save_torch``): ``build(**config)`` with those
    weights, in eval mode on ``device``. A missing file or one that does not load is a one-line
    T2IError naming ``what`` and ``path``; ``hint`` says how to make the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise T2IError(f"missing {what} {path}: {hint}")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        model = build(**blob["config"])
        model.load_state_dict(blob["state_dict"])
    except T2IError:
        raise
    except Exception as e:  # unpickling, missing keys, shape mismatches
        raise T2IError(f"corrupt {what} {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    return model.to(device).eval()


def dump_json(obj) -> bytes:
    """Canonical JSON bytes: sorted keys, so equal objects give equal bytes."""
    return (json.dumps(obj, sort_keys=True, indent=1) + "\n").encode()


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_bytes_atomic(path, dump_json(obj))


def read_json(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise T2IError(f"corrupt JSON in {path}: {e}") from None


@contextlib.contextmanager
def sole_writer(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (a ``.<name>.lock`` file beside it, outside what DVC
    tracks) for the block; a second holder gets a one-line error naming the first."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock_path = folder.with_name(f".{folder.name}.lock")
    owner = lock_path.with_name(lock_path.name + ".owner")
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = owner.read_text().strip() if owner.is_file() else "another process"
        raise T2IError(f"{folder} is in use by {holder}; wait for it or stop it") from None
    try:
        owner.write_text(f"{what} (pid {os.getpid()})\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
