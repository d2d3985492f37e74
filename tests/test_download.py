"""Source downloads: verified, resumable fetch over a local HTTP server, mirrors, Google Drive
(gdown mocked), quarantine of bad bytes, and safe atomic unpacking of tars. No network."""

import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import gdown
import gdown.exceptions
import pytest
import requests
import urllib3
from tests.httpserver import Request, serve

from t2i import T2IError
from t2i.data.download import Fetched, RemoteFile, extract, fetch, file_hashes, quarantine

NAME = "source.tgz"
DATA = bytes(range(256)) * 1200  # 300 KiB
MD5 = hashlib.md5(DATA).hexdigest()
SHA = hashlib.sha256(DATA).hexdigest()
HALF = len(DATA) // 2
FAST = {"backoff": 0, "timeout": 5, "progress": False}


@pytest.fixture
def site(tmp_path) -> Path:
    """A folder served over HTTP holding ``NAME``."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / NAME).write_bytes(DATA)
    return folder


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_of(call) -> str:
    with pytest.raises(T2IError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- fetch over HTTP


def test_fetch_verifies_then_second_call_is_cached(site, tmp_path):
    root = tmp_path / "downloads"
    (root / "keep").mkdir(parents=True)
    with serve(site) as server:
        url = f"{server.url}/{NAME}"
        got = fetch(RemoteFile(NAME, (url,), MD5), root, **FAST)
        assert got == Fetched(root / NAME, MD5, SHA, len(DATA), url)
        assert (root / NAME).read_bytes() == DATA
        assert sorted(os.listdir(root)) == ["keep", NAME]  # no .part left, nothing else touched
        assert server.requests == [Request(f"/{NAME}", None, 200)]

        again = fetch(RemoteFile(NAME, (url,), MD5.upper()), root, **FAST)  # md5 case does not matter
        assert again == Fetched(root / NAME, MD5, SHA, len(DATA), "cached")
        assert len(server.requests) == 1  # no network access


def test_present_file_without_known_md5_is_kept(tmp_path):
    (tmp_path / NAME).write_bytes(b"whatever")
    got = fetch(RemoteFile(NAME, (f"http://127.0.0.1:{closed_port()}/x",)), tmp_path, **FAST)
    assert (got.source, got.md5, got.size) == ("cached", hashlib.md5(b"whatever").hexdigest(), 8)


def test_dropped_connection_resumes_with_range(site, tmp_path):
    with serve(site, drop_after=HALF) as server:
        got = fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path, **FAST)
    assert server.requests == [Request(f"/{NAME}", None, 200), Request(f"/{NAME}", f"bytes={HALF}-", 206)]
    assert (tmp_path / NAME).read_bytes() == DATA and got.md5 == MD5
    assert not (tmp_path / f"{NAME}.part").exists()


def test_short_body_without_protocol_error_is_resumed(site, tmp_path, monkeypatch):
    # urllib3 1.x (or enforce_content_length=False) ends a cut body quietly: the size check catches it
    monkeypatch.setattr(urllib3.response.HTTPResponse, "enforce_content_length",
                        property(lambda self: False, lambda self, value: None), raising=False)
    with serve(site, drop_after=HALF) as server:
        fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path, **FAST)
    assert server.requests == [Request(f"/{NAME}", None, 200), Request(f"/{NAME}", f"bytes={HALF}-", 206)]
    assert (tmp_path / NAME).read_bytes() == DATA


def test_cut_transfer_without_retries_left_fails_in_one_line(site, tmp_path):
    with serve(site, drop_after=HALF) as server:
        url = f"{server.url}/{NAME}"
        message = error_of(lambda: fetch(RemoteFile(NAME, (url,), MD5), tmp_path, retries=0, **FAST))
    assert message == (f"cannot fetch {NAME}: {url}: Connection broken: IncompleteRead({HALF} bytes read, "
                       f"{len(DATA) - HALF} more expected) (after 0 retries)")
    assert (tmp_path / f"{NAME}.part").stat().st_size == HALF  # kept for the next call to resume


def test_server_without_range_support_restarts_cleanly(site, tmp_path):
    with serve(site, ranges=False, drop_after=HALF) as server:
        fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path, **FAST)
    assert server.requests == [Request(f"/{NAME}", None, 200), Request(f"/{NAME}", f"bytes={HALF}-", 200)]
    assert (tmp_path / NAME).read_bytes() == DATA  # not the first half twice


def test_partial_from_an_earlier_run_is_resumed(site, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(DATA[:1000])
    with serve(site) as server:
        got = fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path, **FAST)
    assert server.requests == [Request(f"/{NAME}", "bytes=1000-", 206)]
    assert (tmp_path / NAME).read_bytes() == DATA and got.size == len(DATA)


def test_oversized_partial_gets_416_and_is_restarted(site, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(DATA + b"junk")
    with serve(site) as server:
        fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path, **FAST)
    n = len(DATA) + 4
    assert server.requests == [Request(f"/{NAME}", f"bytes={n}-", 416), Request(f"/{NAME}", None, 200)]
    assert (tmp_path / NAME).read_bytes() == DATA


def test_complete_partial_is_not_downloaded_again(site, tmp_path):
    (tmp_path / f"{NAME}.part").write_bytes(DATA)
    with serve(site) as server:
        got = fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path, **FAST)
    assert server.requests == [Request(f"/{NAME}", f"bytes={len(DATA)}-", 416)]
    assert got.md5 == MD5 and (tmp_path / NAME).read_bytes() == DATA


def test_server_errors_are_retried_then_given_up(site, tmp_path):
    with serve(site, fail_first=2) as server:
        fetch(RemoteFile(NAME, (f"{server.url}/{NAME}",), MD5), tmp_path / "a", retries=2, **FAST)
    assert server.statuses() == [503, 503, 200]

    with serve(site, fail_first=3) as server:
        url = f"{server.url}/{NAME}"
        message = error_of(lambda: fetch(RemoteFile(NAME, (url,), MD5), tmp_path / "b", retries=2, **FAST))
    assert message == f"cannot fetch {NAME}: {url}: HTTP 503 Service Unavailable (after 2 retries)"
    assert server.statuses() == [503, 503, 503]


def test_mirror_404_falls_through_to_next_location(site, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as mirror, serve(site) as official:
        url = f"{official.url}/{NAME}"
        got = fetch(RemoteFile(NAME, (url,), MD5), tmp_path / "dl", mirror=mirror.url + "/", **FAST)
    assert got.source == url and (tmp_path / "dl" / NAME).read_bytes() == DATA
    assert mirror.requests == [Request(f"/{NAME}", None, 404)]  # one try: a 404 is not retried
    assert official.requests == [Request(f"/{NAME}", None, 200)]


def test_partial_of_a_failed_location_is_not_resumed_elsewhere(site, tmp_path):
    with serve(site, drop_after=HALF) as mirror, serve(site) as official:
        url = f"{official.url}/{NAME}"
        got = fetch(RemoteFile(NAME, (url,), MD5), tmp_path / "dl", mirror=mirror.url, retries=0, **FAST)
    assert got.source == url and (tmp_path / "dl" / NAME).read_bytes() == DATA
    assert mirror.requests == [Request(f"/{NAME}", None, 200)]  # cut, and no retry left
    assert official.requests == [Request(f"/{NAME}", None, 200)]  # from byte 0: copies may differ


def test_every_location_failing_is_one_line_naming_each(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    port = closed_port()
    with serve(empty) as server:
        urls = (f"http://127.0.0.1:{port}/{NAME}", f"{server.url}/{NAME}")
        file = RemoteFile(NAME, urls, MD5)
        message = error_of(lambda: fetch(file, tmp_path / "dl", mirror=str(empty), **FAST))
    assert message == (f"cannot fetch {NAME}: {empty / NAME}: not found; "
                       f"{urls[0]}: cannot connect: Connection refused; {urls[1]}: HTTP 404 Not Found")
    assert os.listdir(tmp_path / "dl") == []


def test_wrong_checksum_is_quarantined_never_installed(site, tmp_path):
    wrong = "0" * 32
    with serve(site) as server:
        url = f"{server.url}/{NAME}"
        message = error_of(lambda: fetch(RemoteFile(NAME, (url,), wrong), tmp_path, **FAST))
    bad = tmp_path / f"{NAME}.part.bad"
    assert message == f"cannot fetch {NAME}: {url}: md5 mismatch: expected {wrong}, got {MD5} (moved to {bad})"
    assert bad.read_bytes() == DATA
    assert sorted(os.listdir(tmp_path)) == ["site", bad.name]  # neither NAME nor NAME.part


def test_md5_override_pins_the_mirror_copy(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    copy = DATA[::-1]  # the mirror's own repack: other bytes than the official file
    (mirror / NAME).write_bytes(copy)
    copy_md5 = hashlib.md5(copy).hexdigest()
    file = RemoteFile(NAME, (f"http://127.0.0.1:{closed_port()}/{NAME}",), MD5)

    message = error_of(lambda: fetch(file, tmp_path / "a", mirror=str(mirror), **FAST))
    assert f"{mirror / NAME}: md5 mismatch: expected {MD5}, got {copy_md5}" in message

    got = fetch(file, tmp_path / "b", mirror=str(mirror), md5={NAME: copy_md5.upper()}, **FAST)
    assert (got.md5, got.source) == (copy_md5, str(mirror / NAME))
    assert (tmp_path / "b" / NAME).read_bytes() == copy


@pytest.mark.parametrize("as_url", [False, True], ids=["folder", "file-url"])
def test_local_mirror(site, tmp_path, as_url):
    mirror = site.as_uri() if as_url else str(site)
    got = fetch(RemoteFile(NAME, ("gdrive:never-tried",), MD5), tmp_path / "dl", mirror=mirror, **FAST)
    assert got.source == (f"{mirror}/{NAME}" if as_url else str(site / NAME))
    assert (tmp_path / "dl" / NAME).read_bytes() == DATA
    assert (site / NAME).read_bytes() == DATA  # the mirror's copy is left alone


def test_present_file_with_wrong_md5_is_quarantined_and_fetched_again(site, tmp_path):
    (tmp_path / NAME).write_bytes(b"truncated")
    got = fetch(RemoteFile(NAME, (), MD5), tmp_path, mirror=str(site), **FAST)
    assert got.md5 == MD5 and (tmp_path / NAME).read_bytes() == DATA
    assert (tmp_path / f"{NAME}.bad").read_bytes() == b"truncated"


def test_progress_bar_goes_to_stderr_only_when_asked(site, tmp_path, capsys):
    with serve(site) as server:
        url = f"{server.url}/{NAME}"
        fetch(RemoteFile(NAME, (url,), MD5), tmp_path / "quiet", **FAST)
        assert capsys.readouterr() == ("", "")
        fetch(RemoteFile(NAME, (url,), MD5), tmp_path / "shown", **{**FAST, "progress": True})
    out, err = capsys.readouterr()
    assert out == "" and NAME in err and "100%" in err and "300k/300k" in err


def test_the_test_server(site):
    with serve(site) as server:
        head = requests.head(f"{server.url}/{NAME}", timeout=5)
        tail = requests.get(f"{server.url}/{NAME}", headers={"Range": "bytes=300-"}, timeout=5)
        past = requests.get(f"{server.url}/{NAME}", headers={"Range": f"bytes={len(DATA)}-"}, timeout=5)
        missing = requests.get(f"{server.url}/nope", timeout=5)
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, str(len(DATA)), b"")
    assert (tail.status_code, tail.headers["Content-Range"], tail.content) == (
        206, f"bytes 300-{len(DATA) - 1}/{len(DATA)}", DATA[300:])
    assert (past.status_code, past.headers["Content-Range"]) == (416, f"bytes */{len(DATA)}")
    assert server.statuses() == [200, 206, 416, 404] and missing.status_code == 404


# --------------------------------------------------------------------------- Google Drive


def test_gdrive_location_uses_gdown_with_resume(tmp_path, monkeypatch):
    calls = []

    def download(**kw):
        calls.append(kw)
        assert not Path(kw["output"]).exists()  # a stale .part would make gdown skip the download
        Path(kw["output"]).write_bytes(DATA)
        return kw["output"]

    monkeypatch.setattr(gdown, "download", download)
    (tmp_path / f"{NAME}.part").write_bytes(b"stale")
    got = fetch(RemoteFile(NAME, ("gdrive:1AbC-xyz",), MD5), tmp_path, **FAST)
    part = str(tmp_path / f"{NAME}.part")
    assert calls == [{"id": "1AbC-xyz", "output": part, "quiet": True, "resume": True}]
    assert (got.source, got.md5) == ("gdrive:1AbC-xyz", MD5)
    assert os.listdir(tmp_path) == [NAME]


def test_gdown_errors_fall_through(site, tmp_path, monkeypatch):
    def refuse(**kw):
        raise gdown.exceptions.FileURLRetrievalError("Too many users have viewed this file.\nDetails")

    monkeypatch.setattr(gdown, "download", refuse)
    got = fetch(RemoteFile(NAME, ("gdrive:abc", str(site / NAME)), MD5), tmp_path / "a", **FAST)
    assert got.source == str(site / NAME)

    monkeypatch.setattr(gdown, "download", lambda **kw: None)
    message = error_of(lambda: fetch(RemoteFile(NAME, ("gdrive:abc",), MD5), tmp_path / "b", **FAST))
    assert message == f"cannot fetch {NAME}: gdrive:abc: gdown returned no file"

    monkeypatch.setattr(gdown, "download", refuse)
    message = error_of(lambda: fetch(RemoteFile(NAME, ("gdrive:abc",), MD5), tmp_path / "c", **FAST))
    assert message == (f"cannot fetch {NAME}: gdrive:abc: gdown: FileURLRetrievalError: "
                       "Too many users have viewed this file.")


# --------------------------------------------------------------------------- small helpers


def test_quarantine_never_overwrites(tmp_path):
    for i, text in enumerate(["first", "second", "third"]):
        (tmp_path / "f").write_text(text)
        assert quarantine(tmp_path / "f") == tmp_path / ("f.bad" + (str(i) if i else ""))
    assert [(tmp_path / n).read_text() for n in ("f.bad", "f.bad1", "f.bad2")] == ["first", "second", "third"]


def test_file_hashes(tmp_path):
    (tmp_path / "f").write_bytes(DATA)
    assert file_hashes(tmp_path / "f") == (MD5, SHA)


def test_bad_names_are_refused(tmp_path):
    assert "plain file name" in error_of(lambda: fetch(RemoteFile("../x", ()), tmp_path, **FAST))


# --------------------------------------------------------------------------- extract


def make_tar(path: Path, members: list, mode: str = "w:gz") -> Path:
    """``members``: (name, bytes) for files, or ready TarInfo objects (links, folders)."""
    with tarfile.open(path, mode) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return path


def link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


GOOD = [("root/a.txt", b"a"), ("root/images/1.jpg", b"jpg1"), ("root/b.txt", b"bb"), ("root/images/2.jpg", b"jpg2")]


def test_extract_selected_members_in_archive_order(tmp_path, leftovers):
    archive = make_tar(tmp_path / "x.tar.gz", GOOD)
    names = extract(archive, tmp_path / "out", select=lambda n: n.endswith(".jpg"))
    assert names == ["root/images/1.jpg", "root/images/2.jpg"]
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == names and (tmp_path / "out/root/images/2.jpg").read_bytes() == b"jpg2"
    assert leftovers(tmp_path) == []


def test_extract_all_replaces_dest(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/old.txt").write_text("old")
    assert extract(make_tar(tmp_path / "x.tar", GOOD, "w"), tmp_path / "out") == [n for n, _ in GOOD]
    assert not (tmp_path / "out/old.txt").exists() and (tmp_path / "out/root/b.txt").read_bytes() == b"bb"


def test_truncated_archive_leaves_nothing(tmp_path, leftovers):
    payload = os.urandom(200_000)  # incompressible: the cut lands inside the data
    archive = make_tar(tmp_path / "x.tar.gz", [("a.bin", payload), ("b.bin", payload[::-1])])
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    message = error_of(lambda: extract(archive, tmp_path / "out"))
    assert message.startswith(f"corrupt or truncated archive {archive}: ")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_failure_keeps_the_previous_dest(tmp_path, leftovers):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/old.txt").write_text("old")
    archive = make_tar(tmp_path / "x.tar.gz", [*GOOD, ("../evil.txt", b"evil")])
    error_of(lambda: extract(archive, tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["old.txt"] and leftovers(tmp_path) == []


@pytest.mark.parametrize("member, reason", [
    (("../evil.txt", b"evil"), "outside the destination"),
    (("/tmp/evil.txt", b"evil"), "absolute path"),
    (link("passwd", "/etc/passwd"), "absolute"),
    (link("up", "../../outside"), "outside the destination"),
], ids=["dotdot", "absolute", "symlink-absolute", "symlink-up"])
def test_unsafe_members_are_refused(tmp_path, leftovers, member, reason):
    archive = make_tar(tmp_path / "x.tar.gz", [("ok.txt", b"ok"), member])
    name = member.name if isinstance(member, tarfile.TarInfo) else member[0]
    for select in (None, lambda n: n == "ok.txt"):  # checked even when not selected
        message = error_of(lambda: extract(archive, tmp_path / "out", select=select))
        assert message.startswith(f"unsafe member {name!r} in {archive}: ") and reason in message
        assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["x.tar.gz"]


def test_symlink_to_a_sibling_is_allowed(tmp_path):
    archive = make_tar(tmp_path / "x.tar.gz", [("d/a.txt", b"a"), link("d/alias.txt", "a.txt")])
    assert extract(archive, tmp_path / "out") == ["d/a.txt"]  # files only
    alias = tmp_path / "out/d/alias.txt"
    assert alias.is_symlink() and os.readlink(alias) == "a.txt" and alias.read_bytes() == b"a"


def test_missing_archive(tmp_path):
    message = error_of(lambda: extract(tmp_path / "nope.tgz", tmp_path / "out"))
    assert message == f"missing archive {tmp_path / 'nope.tgz'}"
