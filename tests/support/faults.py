"""A fault injector: an HTTP proxy on 127.0.0.1 in front of a registry process.

The Docker daemon pushes over plain HTTP to 127.0.0.1 (insecure by default),
so the proxy sees every request of a push: the `/v2/` ping, the blob upload
(POST .../blobs/uploads/, PATCH/PUT .../blobs/uploads/<uuid>) and the
manifest PUT. It passes requests through to the registry unchanged (the Host
header included, so the registry's Location headers name the proxy), except
for the first `count` requests that match `fault.matches`, which it answers
with a fault instead:

- "reset": closes the client's connection with an RST (SO_LINGER 0), as a
  load balancer or a flaky network does; nothing is answered.
- an HTTP status (500, 401, ...): answered with the registry's own JSON error
  body shape (distribution spec, "Error codes": {"errors": [{"code": ...}]}).
- "digest": passed through, but the answer's Docker-Content-Digest header names
  `fault.digest`, another manifest, as a proxy or a registry that swapped the
  content would (what a push's read-back must catch).

The fault is bounded: after `count` faults it passes everything through, so a
retry can succeed. `faults_injected` and `requests` record what happened.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.registry import TEMPORARY_HOSTS, free_port, remove_local_tags

# Blob upload requests of the distribution API: POST to start, PATCH for chunks, PUT to finish.
BLOB_UPLOAD = re.compile(r"^/v2/.+/blobs/uploads/")
# Error codes from the distribution spec (docs/spec/api.md, "Errors") for the statuses we inject.
_ERROR_CODES = {401: "UNAUTHORIZED", 403: "DENIED", 429: "TOOMANYREQUESTS", 500: "UNKNOWN", 503: "UNAVAILABLE"}
# Manifest requests (push PUT, read-back HEAD/GET) of the distribution API.
MANIFEST = re.compile(r"^/v2/.+/manifests/")


@dataclass
class Fault:
    kind: str | int  # "reset" or an HTTP status code
    count: int = 1  # how many matching requests get the fault before the proxy recovers
    methods: tuple[str, ...] = ("PATCH", "PUT")
    path: re.Pattern = BLOB_UPLOAD
    digest: str = ""  # for kind "digest": what the answer names instead

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and bool(self.path.match(path))


@dataclass
class FaultProxy:
    upstream: str  # host:port of the registry
    fault: Fault | None = None
    port: int = field(default_factory=free_port)
    faults_injected: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultProxy":
        proxy = self
        TEMPORARY_HOSTS.add(self.host)
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: the test asserts on `requests` instead
                pass

            def handle(self):
                # The daemon (containerd's resolver) tries TLS first and falls back to plain HTTP
                # only when the answer's first bytes are "HTTP/" (containerd remotes/docker/
                # resolver.go, httpFallback.RoundTrip), as Go's http server answers a handshake.
                if self.connection.recv(1, socket.MSG_PEEK) == b"\x16":
                    self.connection.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                    return
                super().handle()

            def _handle(self):
                line = f"{self.command} {self.path.split('?')[0]}"
                with proxy._lock:
                    proxy.requests.append(line)
                    fault = proxy.fault
                    inject = fault is not None and len(proxy.faults_injected) < fault.count and fault.matches(
                        self.command, self.path)
                    if inject:
                        proxy.faults_injected.append(f"{fault.kind} {line}")
                body = self._read_body()
                if inject and fault.kind == "reset":
                    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if inject and fault.kind == "digest":
                    self._forward(body, digest=fault.digest)
                    return
                if inject:
                    status = int(fault.kind)
                    payload = json.dumps({"errors": [{"code": _ERROR_CODES.get(status, "UNKNOWN"),
                                                      "message": f"injected fault {status}", "detail": None}]}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self._forward(body)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self, body: bytes, digest: str | None = None):
                upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers: dict[str, str] = {}
                for key, value in self.headers.items():  # repeated headers (Go sends one Accept per type) joined
                    if key.lower() not in ("transfer-encoding", "connection"):
                        headers[key] = f"{headers[key]}, {value}" if key in headers else value
                headers["Content-Length"] = str(len(body))
                try:
                    upstream.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST", "PATCH") else None,
                                     headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, digest if digest and key.lower() == "docker-content-digest" else value)
                # A HEAD answer keeps the registry's Content-Length (the blob's size), with no body.
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that hangs up is no news here
                pass

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        """Stop it and remove the local tags a push through it left under its host."""
        self.server.shutdown()
        self.server.server_close()
        remove_local_tags(self.host)
