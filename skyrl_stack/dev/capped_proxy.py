"""A TCP proxy on 127.0.0.1 that caps the bytes it sends back to clients at a fixed rate, all connections together.

The cold start benchmark (skyrl_stack/dev/coldstart.py) puts one in front of a registry and one in front
of a wheel index, so an image pull and a `setup:` install see the same link: one node's downlink, shared
by its parallel layer or wheel streams, as a real node's NIC is. Byte-level, so it speaks any protocol
(the registry's HTTP API, the index's file listing) and changes nothing in it. Loopback only.
"""
from __future__ import annotations

import socket
import threading
import time

CHUNK = 64 * 1024


class TokenBucket:
    """A shared rate: each chunk waits until the link would have sent the chunks before it (no burst)."""

    def __init__(self, bytes_per_s: float):
        self.rate = bytes_per_s
        self.sent = 0  # bytes let through
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + size / self.rate
            self.sent += size
        if start > now:
            time.sleep(start - now)


class CappedProxy:
    """`with CappedProxy(upstream_port, mb_per_s) as proxy:` clients connect to 127.0.0.1:proxy.port."""

    def __init__(self, upstream_port: int, mb_per_s: float):
        self.upstream = ("127.0.0.1", upstream_port)
        self.bucket = TokenBucket(mb_per_s * 1e6)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stopping = threading.Event()

    def __enter__(self) -> "CappedProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.bucket), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, bucket: TokenBucket | None) -> None:
        try:
            while data := source.recv(CHUNK):
                if bucket:
                    bucket.take(len(data))
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
