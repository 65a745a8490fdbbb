"""Copy bytes both ways between two connected sockets (TLS or not) until either side closes.

One thread and select(): an SSL socket must not be read and written from two threads at once. Written by hand
because it is a dozen lines of the standard library; the websocket side has its library (virtops.api.streams).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Callable

CHUNK = 64 * 1024


def _pending(sock: socket.socket) -> bool:
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def pump(a: socket.socket, b: socket.socket, *, on_a: Callable[[bytes], bytes | None] | None = None,
         on_b: Callable[[bytes], bytes | None] | None = None, idle: Callable[[], bool] | None = None) -> None:
    """Forward a -> b and b -> a. ``on_a``/``on_b`` may rewrite what was read (None: stop); ``idle`` is asked
    every second and stops the copy when it returns False."""
    peers = {a: (b, on_a), b: (a, on_b)}
    while True:
        ready = [s for s in (a, b) if _pending(s)]
        if not ready:
            ready, _w, _x = select.select([a, b], [], [], 1.0)
            if not ready:
                if idle is not None and not idle():
                    return
                continue
        for sock in ready:
            try:
                data = sock.recv(CHUNK)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:
                return
            if not data:
                return
            other, rewrite = peers[sock]
            if rewrite is not None:
                out = rewrite(data)
                if out is None:
                    return
                data = out
            if data:
                try:
                    other.sendall(data)
                except OSError:
                    return
