"""A tiny local HTTP file server for tests (127.0.0.1 only, nothing leaves the machine).

    with serve(folder, ranges=False, drop_after=100) as server:
        fetch(..., mirror=server.url)
        assert server.requests == [Request("/f.tgz", None, 200), Request("/f.tgz", "bytes=100-", 200)]

It serves the files of ``folder`` by name (GET and HEAD; 404 for anything else) and records
every request as ``Request(path, range, status)`` in ``server.requests``, in arrival order.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote


@dataclass(frozen=True)
class Request:
    path: str  # as sent, e.g. "/CUB_200_2011.tgz"
    range: str | None  # the Range header, e.g. "bytes=100-"
    status: int


@dataclass
class Server:
    url: str  # "http://127.0.0.1:<port>", no trailing slash
    requests: list[Request] = field(default_factory=list)

    def statuses(self) -> list[int]:
        return [r.status for r in self.requests]


@contextlib.contextmanager
def serve(folder, *, ranges: bool = True, drop_after: int | None = None,
          fail_first: int | None = None) -> Iterator[Server]:
    """Serve ``folder`` on a free port while the block runs.

    ranges: honour ``Range: bytes=N-`` (206 with ``Content-Range: bytes N-M/total``, 416 when
        N >= total); False ignores Range and always sends the whole file with 200.
    drop_after: on the first GET of each file, announce the full Content-Length but send only
        this many body bytes, then close the connection (a dropped transfer).
    fail_first: answer the first this-many requests for each file with 503 Service Unavailable.
    """
    folder = Path(folder)
    seen: dict[str, int] = {}  # path -> requests so far
    dropped: set[str] = set()  # paths whose first transfer was cut
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.reply(body=False)

        def do_GET(self) -> None:
            self.reply(body=True)

        def reply(self, body: bool) -> None:
            name = unquote(self.path.lstrip("/"))
            file = folder / name
            with lock:
                n = seen[self.path] = seen.get(self.path, 0) + 1
            if "/" in name or not name or not file.is_file():
                return self.send_error(404)
            if fail_first and n <= fail_first:
                return self.send_error(503)
            data = file.read_bytes()
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
            if ranges and m:
                start = int(m[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            chunk = data[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if not body:
                return
            if drop_after is not None and self.path not in dropped:
                dropped.add(self.path)
                self.wfile.write(chunk[:drop_after])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(chunk)

        def log_request(self, code="-", size="-") -> None:
            server.requests.append(Request(self.path, self.headers.get("Range"), int(code)))

        def log_message(self, *args) -> None:  # silence the request log
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
