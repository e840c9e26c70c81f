"""uvicorn's HTTP/1.1 protocol with a deadline for the request line and headers.

uvicorn closes a connection that stays idle between requests (``timeout_keep_alive``), but a
connection that sends nothing, or sends its headers a byte at a time, is kept forever: enough of
them exhaust the server (slowloris). Here every request's head must be complete within
``head_timeout_s`` of its first byte (of the connection, for the first request), or the
connection is closed. The body has its own deadline in :class:`imgfeat_cli.serve.http.Guard`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEAD_TIMEOUT_S = 10.0


class GuardedH11Protocol(H11Protocol):
    """:class:`H11Protocol` plus the head deadline (``config.head_timeout_s``)."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.head_timeout_s = float(getattr(config, "head_timeout_s", DEFAULT_HEAD_TIMEOUT_S))
        self._head_timer: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_head():
            if self._head_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._awaiting_head() and not self.transport.is_closing():
            self.logger.info("closed a connection whose request headers did not arrive within %.0f s",
                             self.head_timeout_s)
            self.transport.close()
