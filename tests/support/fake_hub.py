# SPDX-License-Identifier: Apache-2.0
"""A Hugging Face Hub stand-in on 127.0.0.1 with the routes huggingface_hub 2.4.0 calls for ``model_info`` and
``hf_hub_download`` (no Xet headers, so it downloads over plain HTTP):

- ``GET /api/models/{org}/{repo}[/revision/{rev}]``: the model info, with each file's size, git object id and
  LFS sha256 (``?blobs=true``);
- ``GET /api/models/{org}/{repo}/tree/{rev}``: the recursive file listing ``snapshot_download`` reads;
- ``HEAD /{org}/{repo}/resolve/{rev}/{file}``: ETag, X-Repo-Commit, X-Linked-Etag, X-Linked-Size;
- ``GET`` of the same: the bytes, with Range (206 and Content-Range).

Errors carry the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), which
huggingface_hub turns into its exceptions. Faults for the tests: ``cut`` (the first whole-file GET of a file
sends half its bytes, then closes the connection), ``corrupt`` (the bytes served differ from the sha256
listed), ``gated`` (401 for every route of a repository).

    with FakeHub({"acme/minilm": {"minilm.F16.gguf": data}}) as hub:   # hub.endpoint -> HF_ENDPOINT
        ...
        hub.requests   # [(method, path, range header or None), ...]
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "c0ffee" + "0" * 34


def git_blob_id(data: bytes) -> str:
    """git's object id of a file's content."""
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub:
    """The server, in a daemon thread; a context manager."""

    def __init__(
        self,
        repos: Mapping[str, Mapping[str, bytes]],
        *,
        commit: str = COMMIT,
        cut: frozenset[str] | set[str] = frozenset(),
        corrupt: frozenset[str] | set[str] = frozenset(),
        gated: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        self.repos = {repo: dict(files) for repo, files in repos.items()}
        self.commit = commit
        self.cut = set(cut)
        self.corrupt = set(corrupt)
        self.gated = set(gated)
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The base URL (for ``HF_ENDPOINT``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def gets(self, filename: str) -> list[str | None]:
        """The Range header of each GET of ``filename`` (None: the whole file)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + filename) and "/resolve/" in p]

    # -- the routes ------------------------------------------------------------------------------------------

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, head: bool) -> None:
        body = json.dumps({"error": code}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(0 if head else len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _revision_ok(self, rev: str) -> bool:
        return rev in ("main", self.commit)

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            self._tree(h, "/".join(parts[2:4]), parts[5], head)
        elif parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = "/".join(parts[2:4])
            rev = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
            self._info(h, repo, rev, head)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            self._file(h, repo, rev, filename, head)
        else:
            self._error(h, 404, "RepoNotFound", head)

    def _check(self, h: BaseHTTPRequestHandler, repo: str, rev: str, head: bool) -> bool:
        if repo in self.gated:
            self._error(h, 401, "GatedRepo", head)
            return False
        if repo not in self.repos:
            self._error(h, 404, "RepoNotFound", head)
            return False
        if not self._revision_ok(rev):
            self._error(h, 404, "RevisionNotFound", head)
            return False
        return True

    def _info(self, h: BaseHTTPRequestHandler, repo: str, rev: str, head: bool) -> None:
        if not self._check(h, repo, rev, head):
            return
        siblings = [
            {
                "rfilename": name,
                "size": len(data),
                "blobId": git_blob_id(data),
                "lfs": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134},
            }
            for name, data in sorted(self.repos[repo].items())
        ]
        body = json.dumps({"id": repo, "modelId": repo, "sha": self.commit, "private": False, "siblings": siblings})
        data = body.encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def _json(self, h: BaseHTTPRequestHandler, value: object, head: bool) -> None:
        data = json.dumps(value).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def _tree(self, h: BaseHTTPRequestHandler, repo: str, rev: str, head: bool) -> None:
        """The recursive file listing (``list_repo_tree``, which ``snapshot_download`` calls), in one page."""
        if not self._check(h, repo, rev, head):
            return
        entries = [
            {
                "type": "file",
                "path": name,
                "size": len(data),
                "oid": git_blob_id(data),
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134},
            }
            for name, data in sorted(self.repos[repo].items())
        ]
        self._json(h, entries, head)

    def _file(self, h: BaseHTTPRequestHandler, repo: str, rev: str, filename: str, head: bool) -> None:
        if not self._check(h, repo, rev, head):
            return
        data = self.repos[repo].get(filename)
        if data is None:
            self._error(h, 404, "EntryNotFound", head)
            return
        sha = hashlib.sha256(data).hexdigest()
        served = bytes([data[0] ^ 0xFF]) + data[1:] if filename in self.corrupt else data
        start, status = 0, 200
        wanted = h.headers.get("Range")
        if wanted and not head:
            start = int(wanted.split("=", 1)[1].split("-", 1)[0])
            status = 206
        h.send_response(status)
        h.send_header("ETag", f'"{git_blob_id(data)}"')
        h.send_header("X-Repo-Commit", self.commit)
        h.send_header("X-Linked-Etag", f'"{sha}"')
        h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        if filename in self.cut and start == 0:
            self.cut.discard(filename)  # once
            h.wfile.write(served[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(served[start:])
