"""Connection hygiene for uvicorn: a deadline on every request head.

uvicorn's h11 protocol closes a connection that idles between requests (``timeout_keep_alive``) and one
whose head grows past ``h11_max_incomplete_event_size``, but a client that opens a connection and sends
nothing, or one header line every few seconds, holds it for ever; a few hundred of them fill the
connection limit and every real request gets 503 (slowloris). This protocol closes a connection whose
request line and headers are not complete within ``header_timeout_s`` of the first byte of the request, or
of the connection being opened.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline on each request head. Subclass it with ``header_timeout_s`` set."""

    header_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
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

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_with_head_deadline(header_timeout_s: float) -> type[HeadDeadlineH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` whose heads must arrive within ``header_timeout_s``."""
    return type("HeadDeadlineH11", (HeadDeadlineH11Protocol,), {"header_timeout_s": float(header_timeout_s)})
