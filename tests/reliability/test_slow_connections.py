"""Slow and hostile connections against the server on 127.0.0.1 (slowloris): hundreds of connections that send
a request head one line at a time do not keep real requests from being answered, and the server closes them
once their head is late; a body that stalls gets 408; a head larger than the limit gets 400."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np

from distil.serve.runs import ServedModel
from distil.serve.server import create_app
from distil.spec.models import ServeSpec
from tests.serve.conftest import LABELS, running_server

SLOW_CONNECTIONS = 300


class FixedStudent:
    labels = LABELS

    def label_distribution(self, inputs):
        return np.tile([[0.6, 0.3, 0.1]], (len(inputs), 1))


def _app(**limits):
    return create_app(ServedModel("m", "classify", LABELS, FixedStudent(), None, 0.0, limits=ServeSpec(**limits)))


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class SlowClients:
    """``n`` connections that send a request line, then one header line every ``every_s`` until stopped."""

    def __init__(self, port: int, n: int, every_s: float = 0.5):
        self.sockets = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
            self.sockets.append(s)
        self.closed_by_server: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, args=(every_s,), daemon=True)
        self._thread.start()

    def _drip(self, every_s: float) -> None:
        line = 0
        while not self._stop.wait(every_s):
            line += 1
            for i, s in enumerate(self.sockets):
                if i in self.closed_by_server:
                    continue
                try:
                    s.sendall(f"X-Slow-{line}: {'a' * 10}\r\n".encode())
                except OSError:  # the server closed it
                    self.closed_by_server.add(i)

    def wait_all_closed(self, limit_s: float = 30.0) -> int:
        """How many were closed by the server (EOF on read) within ``limit_s`` in all (a bound, not a measurement)."""
        closed = 0
        deadline = time.monotonic() + limit_s
        for s in self.sockets:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                closed += s.recv(1024) == b""
            except OSError:
                closed += 1  # reset by the server
        return closed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.sockets:
            s.close()


def test_real_requests_are_answered_while_300_connections_trickle_their_headers():
    with running_server(_app(header_timeout_s=120)) as (url, _):
        slow = SlowClients(_port(url), SLOW_CONNECTIONS)
        try:
            with httpx.Client(base_url=url, timeout=30) as c:
                statuses = [c.post("/v1/classify", json={"input": f"real {i}"}).status_code for i in range(10)]
                statuses.append(c.get("/healthz").status_code)
            assert not slow.closed_by_server  # they were all still open while the real requests were answered
        finally:
            slow.stop()
    assert statuses == [200] * 11


def test_connections_whose_head_is_late_are_closed_and_the_server_keeps_answering():
    with running_server(_app(header_timeout_s=1.0)) as (url, _):
        slow = SlowClients(_port(url), SLOW_CONNECTIONS)
        silent = socket.create_connection(("127.0.0.1", _port(url)))  # connects and sends nothing at all
        try:
            assert slow.wait_all_closed() == SLOW_CONNECTIONS
            silent.settimeout(60)
            assert silent.recv(1024) == b""
            assert httpx.post(f"{url}/v1/classify", json={"input": "after"}, timeout=30).status_code == 200
        finally:
            slow.stop()
            silent.close()


def test_a_stalled_body_gets_408_and_its_connection_is_closed():
    with running_server(_app(body_timeout_s=0.5)) as (url, _):
        s = socket.create_connection(("127.0.0.1", _port(url)))
        s.settimeout(60)
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"in'
        )
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        s.close()
        assert reply.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in reply
        assert httpx.post(f"{url}/v1/classify", json={"input": "after"}, timeout=30).status_code == 200


def test_a_head_over_the_size_limit_gets_400():
    with running_server(_app(max_header_bytes=4096)) as (url, _):
        s = socket.create_connection(("127.0.0.1", _port(url)))
        s.settimeout(60)
        # a head still growing past the limit (a complete one that arrives in one piece is parsed as it is)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000)
        reply = s.recv(4096)
        s.close()
        assert reply.startswith(b"HTTP/1.1 400 ")
