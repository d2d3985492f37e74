"""Verified, resumable downloads of source files and safe unpacking of their archives.

``fetch`` gets one file into ``root/<name>`` from the first location that delivers it: a mirror
first (``<mirror>/<name>``: an http(s) URL, a local folder or a ``file://`` URL), then the
official locations in order (``gdrive:<id>`` is a Google Drive file, fetched with gdown).

- ``root/<name>`` only ever appears complete and, when an md5 is known, verified: bytes arrive in
  ``root/<name>.part``, which is renamed into place after the check.
- An interrupted HTTP transfer resumes from the ``.part`` (``Range: bytes=N-``), within a call
  (``retries``, exponential backoff) and in the next call; a server that ignores ``Range``
  restarts the file cleanly. A partial left by a location that then failed is not resumed from
  another location (their copies may differ).
- A file with the wrong md5 is never used nor deleted: it is moved aside to ``<name>.bad``
  (``.bad1``, ...) for inspection.
- When every location fails the error is one line naming each location and why it failed.
- Nothing else in ``root`` is written or deleted, except that gdown keeps its own resumable
  partial (``<name>.part<8 characters>.part``) there while a Drive transfer is unfinished.

``extract`` unpacks a tar (any compression) in one streaming pass into a temporary folder that
replaces ``dest`` only on success, so a corrupt or truncated archive leaves nothing behind. Every
member, extracted or not, must pass Python's ``data`` filter (no absolute paths, no ``..``, no
links leading out, no device files).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import quote, unquote, urlparse

import requests
import urllib3
from tqdm import tqdm

from t2i import T2IError
from t2i.io import atomic_dir

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


@dataclass(frozen=True)
class RemoteFile:
    """A source file: its name under the download root (and on a mirror) and where to get it."""

    name: str  # e.g. "CUB_200_2011.tgz"
    urls: tuple[str, ...]  # official locations in order; "gdrive:<file id>" is a Google Drive file
    md5: str | None = None  # pinned checksum; None: unknown (the hashes are still recorded)


@dataclass(frozen=True)
class Fetched:
    path: Path  # root / name, verified
    md5: str
    sha256: str
    size: int
    source: str  # "cached" or the location it came from


class _Failed(Exception):
    """This location cannot deliver the file; the message says why."""


class _Retry(Exception):
    """A transient failure (server error, short body): try the same location again."""


def _line(e: BaseException) -> str:
    """The first line of an error's message (of its text, not of an args tuple like urllib3's)."""
    text = (e.args[0] if e.args and isinstance(e.args[0], str) else str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def file_hashes(path: str | os.PathLike) -> tuple[str, str]:
    """(md5, sha256) of a file, in one read pass."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def quarantine(path: Path) -> Path:
    """Rename ``path`` to ``<path>.bad`` (``.bad1``, ``.bad2``, ... if taken); return the new path."""
    path = Path(path)
    bad, i = path.with_name(f"{path.name}.bad"), 0
    while os.path.lexists(bad):
        i += 1
        bad = path.with_name(f"{path.name}.bad{i}")
    path.rename(bad)
    return bad


def fetch(file: RemoteFile, root: str | os.PathLike, *, mirror: str | None = None,
          md5: Mapping[str, str] | None = None, retries: int = 4, timeout: float = 60.0,
          backoff: float = 1.0, progress: bool = True) -> Fetched:
    """``root/<name>``: kept if already there and verified, else fetched from the mirror or
    ``file.urls``. ``md5`` (file name -> md5) overrides ``file.md5``, e.g. for a mirror's copy."""
    if file.name in ("", ".", "..") or Path(file.name).name != file.name:
        raise T2IError(f"bad source file name {file.name!r}: expected a plain file name")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target, part = root / file.name, root / f"{file.name}.part"
    expected = (md5 or {}).get(file.name, file.md5)
    expected = expected.lower() if expected else None
    if target.is_file():
        got, sha256 = file_hashes(target)
        if expected in (None, got):
            return Fetched(target, got, sha256, target.stat().st_size, "cached")
        quarantine(target)
    locations = ([_on_mirror(mirror, file.name)] if mirror else []) + list(file.urls)
    reasons: list[str] = []
    stale = False  # the .part holds bytes of a location that failed
    for location in locations:
        if stale:
            part.unlink(missing_ok=True)
        before = _stamp(part)
        try:
            _get(location, part, file.name, retries=retries, timeout=timeout, backoff=backoff,
                 progress=progress)
            got, sha256 = file_hashes(part)
            if expected and got != expected:
                raise _Failed(f"md5 mismatch: expected {expected}, got {got} (moved to {quarantine(part)})")
        except _Failed as e:
            reasons.append(f"{location}: {e}")
            stale = _stamp(part) != before
            continue
        size = part.stat().st_size
        os.replace(part, target)
        return Fetched(target, got, sha256, size, location)
    raise T2IError(f"cannot fetch {file.name}: {'; '.join(reasons) or 'no location to fetch it from'}")


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _on_mirror(mirror: str, name: str) -> str:
    if mirror.startswith(("http://", "https://", "file://")):
        return f"{mirror.rstrip('/')}/{quote(name)}"
    return str(Path(mirror) / name)


def _get(location: str, part: Path, name: str, *, retries: int, timeout: float, backoff: float,
         progress: bool) -> None:
    """Leave the complete bytes of ``location`` in ``part``, or raise _Failed."""
    if location.startswith("gdrive:"):
        _gdrive(location.removeprefix("gdrive:"), part, progress)
    elif location.startswith(("http://", "https://")):
        _http(location, part, name, retries=retries, timeout=timeout, backoff=backoff, progress=progress)
    elif location.startswith("file://") or "://" not in location:
        src = Path(unquote(urlparse(location).path)) if location.startswith("file://") else Path(location)
        if not src.is_file():
            raise _Failed("not found")
        try:
            shutil.copyfile(src, part)
        except OSError as e:
            raise _Failed(f"cannot copy: {_line(e)}") from None
    else:
        raise _Failed("unsupported location (expected http(s)://, file://, gdrive:<id> or a folder)")


def _gdrive(file_id: str, part: Path, progress: bool) -> None:
    # gdown takes an existing output for a finished download; it resumes from its own partial file
    part.unlink(missing_ok=True)
    try:
        import gdown

        out = gdown.download(id=file_id, output=str(part), quiet=not progress, resume=True)
    except Exception as e:  # gdown's own errors, requests errors, OSError, a missing gdown
        raise _Failed(f"gdown: {type(e).__name__}: {_line(e)}") from None
    if out is None or not part.is_file():
        raise _Failed("gdown returned no file")


def _http(url: str, part: Path, name: str, *, retries: int, timeout: float, backoff: float,
          progress: bool) -> None:
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        try:
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
            with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
                if r.status_code == 416 and have:
                    if _content_range(r)[1] == have:
                        return  # the .part is already complete
                    part.unlink()
                    continue
                if r.status_code >= 500:
                    raise _Retry(f"HTTP {r.status_code} {r.reason}")
                if r.status_code not in (200, 206):
                    raise _Failed(f"HTTP {r.status_code} {r.reason}")
                _receive(r, part, have, name, progress)
                return
        except (_Retry, requests.RequestException, urllib3.exceptions.HTTPError) as e:
            if (why := _unreachable(e)) is not None:
                raise _Failed(f"cannot connect: {why}") from None
            if attempt >= retries:
                raise _Failed(f"{_line(e)} (after {attempt} retries)") from None
        time.sleep(backoff * 2**attempt)
        attempt += 1


def _receive(r: requests.Response, part: Path, have: int, name: str, progress: bool) -> None:
    """Write the body of ``r`` to ``part``: appended for a 206, from byte 0 for a 200."""
    length = r.headers.get("Content-Length", "")
    length = int(length) if length.isdigit() else None
    if r.status_code == 206:
        start, total = _content_range(r)
        if start != have:
            raise _Failed(f"asked for bytes {have}-, got Content-Range {r.headers.get('Content-Range')!r}")
        if total is None and length is not None:
            total = have + length
    else:
        have, total = 0, length  # no Range sent, or the server ignored it: start over
    with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
            file=sys.stderr, disable=not progress) as bar:
        for block in r.raw.stream(CHUNK, decode_content=False):  # the bytes as stored, never decoded
            f.write(block)
            bar.update(len(block))
        done = f.tell()
    if total is not None and done != total:
        raise _Retry(f"transfer ended at byte {done} of {total}")


def _content_range(r: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from Content-Range; None where absent or unknown."""
    m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", "").strip())
    if not m:
        return None, None
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] != "*" else None)


def _unreachable(e: BaseException | None) -> str | None:
    """Why no connection could be opened (refused, unknown host), or None for other errors."""
    while e is not None:
        if isinstance(e, urllib3.exceptions.NewConnectionError):
            cause = e.__cause__ or e.__context__
            return getattr(cause, "strerror", None) or _line(e)
        e = e.__cause__ or e.__context__
    return None


def extract(archive: str | os.PathLike, dest: str | os.PathLike,
            select: Callable[[str], bool] | None = None, progress: bool = False) -> list[str]:
    """Unpack the tar ``archive`` into ``dest`` (replaced only on success), keeping the members whose
    name ``select`` accepts (all by default). Returns the names of the regular files written, in
    archive order."""
    if not hasattr(tarfile, "data_filter"):
        raise T2IError("extracting archives safely needs Python >= 3.10.12 or >= 3.11.4 (tarfile.data_filter)")
    archive = Path(archive)
    if not archive.is_file():
        raise T2IError(f"missing archive {archive}")
    names: list[str] = []
    try:
        with atomic_dir(dest) as tmp, tarfile.open(archive, "r:*") as tar:
            members = tqdm(tar, desc=archive.name, unit=" members", file=sys.stderr, disable=not progress)
            for member in members:
                _check_member(member, tmp, archive)
                if select is None or select(member.name):
                    tar.extract(member, tmp, filter="data")
                    if member.isfile():
                        names.append(member.name)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        raise T2IError(f"corrupt or truncated archive {archive}: {_line(e)}") from None
    return names


def _check_member(member: tarfile.TarInfo, tmp: Path, archive: Path) -> None:
    # the data filter would only strip a leading "/": an archive holding one is refused outright
    reason = "absolute path" if member.name.startswith(("/", os.sep)) else None
    try:
        tarfile.data_filter(member, str(tmp))
    except tarfile.FilterError as e:
        reason = reason or _line(e)
    if reason:
        raise T2IError(f"unsafe member {member.name!r} in {archive}: {reason}")
