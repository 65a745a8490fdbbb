"""The subresource API's client of the agents' node APIs (KubeVirt: virt-api's connection to virt-handler).

Where: the agent of node N publishes ``https://HOST:PORT`` in the annotation ``virtops.kubevirt.io/node-api`` of
its Lease N in the lease namespace (kube-node-lease). How: mutual TLS with the API's own client certificate;
the agent's serving certificate must be signed by ``ca_file`` and carry N as a DNS name, so an address
published for N cannot be answered by another node's agent. Errors, in KubeVirt's words where it has them: no
address (no agent ever ran there, or one without a node API) is 400 "No virt-handler on node N found"; an
agent that does not answer is 500 with the address and the reason; the agent's own refusals (409 "VMI is
already paused") come back as it gave them.

Kept between calls, as virt-api keeps its virt-handler connections: each node's address (read from its Lease
again when a connection to it fails: an agent that restarted publishes a new port) and a few idle keep-alive
connections per node for PUT/GET (a stream takes its connection for good). A request that fails on a reused
connection the agent had closed meanwhile is sent once more on a new one; a failed new one is the error.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from virtops.api.status import StatusError, bad_request, internal
from virtops.kube import ApiError, KubeClient, NotFoundError, path_for
from virtops.node.api import NODE_API_ANNOTATION, STREAM_UPGRADE, operation_path

TIMEOUT_SECONDS = 30.0
IDLE_CONNECTIONS_PER_NODE = 4
# What a keep-alive connection the other side has closed looks like when it is used again.
_CLOSED_MEANWHILE = (ConnectionError, ssl.SSLEOFError, http.client.RemoteDisconnected)


@dataclass(frozen=True)
class NodeApiCredentials:
    cert_file: str
    key_file: str
    ca_file: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.load_verify_locations(self.ca_file)
        # The address is loopback (or any host's); the node's identity is checked on the certificate below.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def _names(cert: dict[str, Any]) -> set[str]:
    return {value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}


class NodeApiClient:
    """Calls the node API of a VMI's node; each call raises StatusError unless the agent answered 2xx."""

    def __init__(self, client: KubeClient, credentials: NodeApiCredentials | None, *,
                 lease_namespace: str = "kube-node-lease") -> None:
        self.client = client
        self.credentials = credentials
        self.lease_namespace = lease_namespace
        self._context = credentials.context() if credentials else None
        self._lock = threading.Lock()
        self._addresses: dict[str, str] = {}
        self._idle: dict[tuple[str, str], list[http.client.HTTPSConnection]] = {}

    def address(self, node: str) -> str:
        """The node API's URL as the node's Lease names it now (one GET)."""
        try:
            lease = self.client.get(path_for("coordination.k8s.io/v1", "leases", self.lease_namespace, node))
        except NotFoundError:
            lease = {}
        except ApiError as exc:
            raise internal(f"cannot read the Lease of node {node}: {exc.message}") from exc
        url = ((lease.get("metadata") or {}).get("annotations") or {}).get(NODE_API_ANNOTATION)
        if not node or not url:
            raise bad_request(f"No virt-handler on node {node} found")
        return url

    def _target(self, vmi: dict[str, Any], op: str, query: str = "") -> tuple[str, str]:
        """(node, path) of an operation on the VMI's node."""
        meta = vmi["metadata"]
        node = (vmi.get("status") or {}).get("nodeName") or ""
        if self._context is None:
            raise internal("the subresource API has no node API client certificate (--node-api-client-cert-file)")
        path = operation_path(meta["namespace"], meta["name"], op) + f"?uid={quote(meta.get('uid') or '')}{query}"
        return node, path

    def _open(self, node: str, what_of: Callable[[str], str], *, pooled: bool) -> tuple[str, Any, bool]:
        """(url, connection, reused): an idle one of the node when ``pooled``, else a new one to the address
        known for the node; when that fails and the Lease names another address now, a new one there."""
        with self._lock:
            url = self._addresses.get(node)
            idle = self._idle.get((node, url or "")) if pooled else None
            if idle:
                return url or "", idle.pop(), True
        if url is None:
            url = self.address(node)
            with self._lock:
                self._addresses[node] = url
            return url, self._connect(node, url, what_of(url)), False
        try:
            return url, self._connect(node, url, what_of(url)), False
        except StatusError:
            fresh = self.address(node)
            with self._lock:
                self._addresses[node] = fresh
            if fresh == url:
                raise
            return fresh, self._connect(node, fresh, what_of(fresh)), False

    def _keep(self, node: str, url: str, conn: http.client.HTTPSConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault((node, url), [])
            if len(idle) < IDLE_CONNECTIONS_PER_NODE and self._addresses.get(node) == url:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, node: str, url: str, what: str) -> http.client.HTTPSConnection:
        parts = urlsplit(url)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, context=self._context,
                                           timeout=TIMEOUT_SECONDS)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise internal(f"{what}: the node agent of {node} did not answer: {exc}") from exc
        cert = conn.sock.getpeercert() if isinstance(conn.sock, ssl.SSLSocket) else None
        if node not in _names(cert or {}):
            conn.close()
            raise internal(f"{what}: the certificate there is not node {node}'s")
        return conn

    def put(self, vmi: dict[str, Any], op: str) -> None:
        self._call("PUT", vmi, op)

    def get(self, vmi: dict[str, Any], op: str) -> dict[str, Any]:
        """A guest agent query (guestosinfo, userlist, filesystemlist): the agent's JSON answer."""
        body = self._call("GET", vmi, op)
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise internal(f"the node agent's answer to {op} is not JSON: {exc}") from exc
        if not isinstance(answer, dict):
            raise internal(f"the node agent's answer to {op} is not a JSON object")
        return answer

    def _call(self, method: str, vmi: dict[str, Any], op: str) -> bytes:
        node, path = self._target(vmi, op)

        def what_of(url: str) -> str:
            return f'{method.capitalize()} "{url}{path}"'

        for attempt in (1, 2):
            url, conn, reused = self._open(node, what_of, pooled=attempt == 1)
            try:
                conn.request(method, path, headers={"Content-Length": "0"})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and isinstance(exc, _CLOSED_MEANWHILE):
                    continue  # the agent closed it while it was idle (it restarted): once more, on a new one
                raise internal(f"{what_of(url)}: the node agent of {node} did not answer: {exc}") from exc
            if resp.will_close:
                conn.close()
            else:
                self._keep(node, url, conn)
            break
        if not 200 <= resp.status < 300:
            raise _agent_error(node, resp.status, resp.reason, body)
        return body

    def stream(self, vmi: dict[str, Any], op: str, port: int | None = None) -> socket.socket:
        """A connected plain byte stream to the VMI's ``op`` (console, vnc; portforward to the guest's ``port``) on
        its node's agent."""
        node, path = self._target(vmi, op, f"&port={port}" if port else "")

        def what_of(url: str) -> str:
            return f'Get "{url}{path}"'

        url, conn, _reused = self._open(node, what_of, pooled=False)
        what = what_of(url)
        sock = conn.sock
        try:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {node}\r\nConnection: Upgrade\r\n"
                         f"Upgrade: {STREAM_UPGRADE}\r\nContent-Length: 0\r\n\r\n".encode())
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # byte by byte: what follows the head is the stream's
                byte = sock.recv(1)
                if not byte or len(head) > 16384:
                    raise OSError("the answer ended early")
                head += byte
            status_line, _sep, rest = head.decode("latin-1").partition("\r\n")
            code = int(status_line.split()[1])
            if code == 101:
                sock.settimeout(None)
                conn.sock = None  # the socket is the caller's now
                return sock
            length = next((int(v) for k, _s, v in (h.partition(":") for h in rest.split("\r\n"))
                           if k.lower() == "content-length"), 0)
            body = b""
            while len(body) < length:
                chunk = sock.recv(length - len(body))
                if not chunk:
                    break
                body += chunk
        except (OSError, ValueError, IndexError) as exc:
            raise internal(f"{what}: the node agent of {node} did not answer: {exc}") from exc
        finally:
            conn.close()
        raise _agent_error(node, code, status_line, body)


def _agent_error(node: str, code: int, reason: str, body: bytes) -> StatusError:
    """The agent's Status as it gave it, or an internal error naming what came back."""
    try:
        status = json.loads(body)
        return StatusError(int(status["code"]), status["reason"], status["message"], status.get("details"))
    except (ValueError, KeyError, TypeError):
        return internal(f"unexpected return code {code} ({reason}) from the node agent of {node}")
