"""Connection hygiene for uvicorn: a deadline on every request head, and probes answered by the connection.

uvicorn's h11 protocol closes a connection that idles between requests (``timeout_keep_alive``) and one
whose head grows past ``h11_max_incomplete_event_size``, but a client that opens a connection and sends
nothing, or one header line every few seconds, holds it for ever; a few hundred of them fill the
connection limit and every real request gets 503 (slowloris). This protocol closes a connection whose
request line and headers are not complete within ``header_timeout_s`` of the first byte of the request, or
of the connection being opened.

Probes (``GET /healthz``, ``GET /readyz``) are answered here, in the callback that receives their bytes: no
ASGI task is created, so they skip the queue of tasks waiting for the event loop (hundreds under load), the
routing, the middleware and the connection cap, and a load balancer sees the server alive while it is busy
refusing or answering model requests. Anything else, and any probe not sent as one whole head on an idle
connection, goes through uvicorn as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

ProbeAnswer = Callable[[str], tuple[int, bytes] | None]
"""A path's (status, JSON body) when the path is a probe the connection answers itself; None otherwise."""


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline on each request head. Subclass it with ``header_timeout_s`` set."""

    header_timeout_s: float = 10.0
    answer_probe: ProbeAnswer | None = None
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self.answer_probe is not None and self._answered_probe(data):
            self._unset_keepalive_if_required()
            self._disarm_head_deadline()  # idle again: the next head has a deadline of its own
            self._arm_head_deadline()
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a head has begun (or nothing yet): its deadline runs
            self._arm_head_deadline()
        else:
            self._disarm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _answered_probe(self, data: bytes) -> bool:
        """Answer ``data`` here when it is one whole probe request on an idle connection; False: uvicorn answers."""
        idle = self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE and not self.conn.trailing_data[0]
        if not (idle and data.startswith(b"GET /") and data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1):
            return False
        request = probe_request(data)
        answer = self.answer_probe(request[0]) if request is not None else None
        if answer is None:
            return False
        status, body = answer
        close = request[1]
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
        self.transport.write(head.encode("latin-1") + body)
        if close:
            self.transport.close()
        return True

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def probe_request(head: bytes) -> tuple[str, bool] | None:
    """(path, close the connection after the answer) of a bodiless ``GET`` head; None for anything else."""
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        return None
    headers = {name.strip().lower(): value.strip().lower() for name, _, value in (x.partition(":") for x in lines[1:])}
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        return None
    connection = headers.get("connection", "")
    close = "close" in connection or (parts[2] == "HTTP/1.0" and "keep-alive" not in connection)
    return parts[1].split("?", 1)[0], close


def protocol_with_head_deadline(
    header_timeout_s: float, answer_probe: ProbeAnswer | None = None
) -> type[HeadDeadlineH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` whose heads must arrive within ``header_timeout_s``, and
    which answers the probes ``answer_probe`` knows itself (None: every request goes to the app)."""
    probe = staticmethod(answer_probe) if answer_probe is not None else None  # a plain function would bind as a method
    return type(
        "HeadDeadlineH11",
        (HeadDeadlineH11Protocol,),
        {"header_timeout_s": float(header_timeout_s), "answer_probe": probe},
    )
