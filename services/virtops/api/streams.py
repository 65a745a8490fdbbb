"""Streaming subresources (console, vnc): a websocket toward the user, a plain stream toward the node's agent.

KubeVirt serves ``GET .../virtualmachineinstances/NAME/console`` (and ``/vnc``) as a websocket with the
subprotocol ``plain.kubevirt.io``: binary messages carry the raw bytes both ways (the serial console's
characters, VNC's RFB protocol). kube-apiserver authorizes the user's ``get`` on the subresource and proxies
the upgrade to us; we check it again with a SubjectAccessReview, dial the agent's node API (nodes.py), and
only then accept the websocket. The websocket framing is the ``websockets`` library's (its sans-I/O
ServerProtocol, over the connection http.server already parsed); the byte copy is virtops.node.stream.
"""

from __future__ import annotations

import logging
import socket
from email.message import Message
from typing import Any

from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from virtops.node.stream import pump

log = logging.getLogger(__name__)

PLAIN = Subprotocol("plain.kubevirt.io")


def is_websocket(headers: Message) -> bool:
    return (headers.get("Upgrade") or "").lower() == "websocket"


def bridge(user: socket.socket, path: str, headers: Message, agent: socket.socket) -> None:
    """Accept the user's websocket on ``user`` (its HTTP request already read) and copy bytes to and from
    ``agent`` until either side ends. Returns when the stream is over; closes nothing."""
    protocol = ServerProtocol(subprotocols=[PLAIN], max_size=None)
    # http.server has parsed the request already; the protocol's parser wants to see it first, so it gets the
    # same request again, as bytes.
    head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    protocol.receive_data(head.encode("latin-1"))
    requests = [e for e in protocol.events_received() if isinstance(e, Request)]
    if not requests:
        raise ValueError("not a websocket request")
    response = protocol.accept(requests[0])
    if response.status_code == 101 and response.headers.get("Sec-WebSocket-Protocol") != PLAIN:
        response = protocol.reject(400, "the websocket subprotocol must be plain.kubevirt.io\n")
    protocol.send_response(response)
    _flush(protocol, user)
    if response.status_code != 101:
        return

    def from_user(data: bytes) -> bytes | None:
        protocol.receive_data(data)
        out = b"".join(f.data for f in protocol.events_received()
                       if f.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT))
        _flush(protocol, user)  # pongs and the close handshake
        return None if protocol.close_expected() or protocol.state.name in ("CLOSING", "CLOSED") else out

    def from_agent(data: bytes) -> bytes:
        protocol.send_binary(data)
        _flush(protocol, user)
        return b""  # already written, framed, to the user

    try:
        pump(user, agent, on_a=from_user, on_b=from_agent)
    finally:
        if protocol.state.name == "OPEN":
            protocol.send_close(1000, "stream ended")
            _flush(protocol, user)


def _flush(protocol: ServerProtocol, sock: Any) -> None:
    for chunk in protocol.data_to_send():
        if chunk:
            sock.sendall(chunk)
