"""The agent's node API: what the subresource API asks this node to do (KubeVirt's virt-handler REST server).

HTTPS on a loopback address the node_agent role configures, with mutual TLS: the TLS layer requires a
client certificate signed by ``client_ca_file`` (any other certificate, or none, fails the handshake), and
the handler answers 403 unless its common name is ``client_name`` (the subresource API's identity). Users
never reach this server: they go through kube-apiserver and the subresource API, which authenticates them
and checks each verb with a SubjectAccessReview first.

Paths follow virt-handler's (``/v1/namespaces/{ns}/virtualmachineinstances/{name}/{op}``); answers are
Kubernetes Status objects with KubeVirt's codes and texts, computed from the domain itself: a pause of a
domain that libvirt already holds paused is 409 "VMI is already paused", even while the VMI's Paused
condition is not written yet. The agent publishes where it listens in its node Lease (annotation
``virtops.kubevirt.io/node-api``); the subresource API reads it there and checks that the server's
certificate names the VMI's node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from virtops.api.auth import peer_common_name
from virtops.api.status import (
    StatusError,
    bad_request,
    conflict,
    forbidden,
    internal,
    method_not_allowed,
    not_found,
    not_found_path,
)
from virtops.node.api import (
    DEFAULT_CLIENT_NAME,
    INFO_OPERATIONS,
    POWER_OPERATIONS,
    STREAM_OPERATIONS,
    STREAM_UPGRADE,
)
from virtops.node.stream import pump

log = logging.getLogger("virtops.agent.nodeapi")

KUBEVIRT = "kubevirt.io"
VMI_KIND = "virtualmachineinstance"

_PATH = re.compile(r"^/v1/namespaces/(?P<ns>[a-z0-9][-a-z0-9]*)/virtualmachineinstances/"
                   r"(?P<name>[a-z0-9][-a-z0-9.]*)/(?P<op>[a-z]+)$")


class NodeOps(Protocol):
    """What the node API needs from the agent (NodeAgent implements it)."""

    node_name: str

    def power(self, namespace: str, name: str, uid: str | None, op: str) -> None: ...
    def open_stream(self, namespace: str, name: str, uid: str | None, op: str,
                    port: int | None = None) -> socket.socket: ...

    def guest_info(self, namespace: str, name: str, uid: str | None, op: str) -> dict[str, Any]: ...


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _dispatch(self) -> None:
        path, _sep, query = self.path.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if 0 < length <= 1 << 16:
                self.rfile.read(length)  # the API sends no body; read one anyway to keep the connection usable
            elif length:
                self.close_connection = True
            peer = peer_common_name(self.connection)
            if peer != self.server.client_name:
                log.warning("node API: refused client %r (only %r may call)", peer, self.server.client_name)
                raise forbidden("", "nodes", self.server.ops.node_name,
                                f"client {peer!r} may not use the node API of {self.server.ops.node_name}")
            match = _PATH.match(path)
            if not match or match["op"] not in (*POWER_OPERATIONS, *STREAM_OPERATIONS, *INFO_OPERATIONS):
                raise not_found_path(path)
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            uid = params.get("uid") or None
            if match["op"] in STREAM_OPERATIONS:
                if self.command != "GET" or (self.headers.get("Upgrade") or "") != STREAM_UPGRADE:
                    raise method_not_allowed(self.command)
                port = None
                if match["op"] == "portforward":
                    port = int(params["port"]) if params.get("port", "").isdigit() else 0
                    if not 0 < port < 65536:
                        raise bad_request(f"port {params.get('port')!r} is not a TCP port")
                self._stream(match["ns"], match["name"], uid, match["op"], port)
                return
            if match["op"] in INFO_OPERATIONS:
                if self.command != "GET":
                    raise method_not_allowed(self.command)
                self._send(200, self.server.ops.guest_info(match["ns"], match["name"], uid, match["op"]))
                return
            if self.command != "PUT":
                raise method_not_allowed(self.command)
            self.server.ops.power(match["ns"], match["name"], uid, match["op"])
            self._send(200)
        except StatusError as exc:
            self._send(exc.code, exc.body())
        except Exception as exc:  # one bad request must not take the server down
            log.exception("node API %s %s failed", self.command, path)
            err = internal(str(exc))
            self._send(err.code, err.body())

    def _stream(self, namespace: str, name: str, uid: str | None, op: str, port: int | None) -> None:
        """101, then the domain's console or VNC socket (or a guest port), byte for byte, until either side closes."""
        target = self.server.ops.open_stream(namespace, name, uid, op, port)
        try:
            self.send_response(101)
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", STREAM_UPGRADE)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            log.info("VMI %s/%s: %s stream opened%s", namespace, name, op, f" to port {port}" if port else "")
            pump(self.connection, target)
        finally:
            target.close()
            log.info("VMI %s/%s: %s stream closed", namespace, name, op)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ops: NodeOps
    client_name: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Refused handshakes (a certificate of another CA, or none) are routine, not tracebacks.
        log.debug("node API connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class NodeApiServer:
    """The node API over mutual TLS; start() serves it in a background thread."""

    def __init__(self, ops: NodeOps, *, host: str, port: int, cert_file: str, key_file: str, client_ca_file: str,
                 client_name: str = DEFAULT_CLIENT_NAME) -> None:
        self.ops = ops
        self.host = host
        self.port = port
        self.client_name = client_name
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.verify_mode = ssl.CERT_REQUIRED  # no certificate of client_ca_file: no connection
        ctx.load_verify_locations(client_ca_file)
        self._context = ctx
        self._httpd: _Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self) -> None:
        httpd = (_Server6 if ":" in self.host else _Server)((self.host, self.port), _Handler)
        httpd.socket = self._context.wrap_socket(httpd.socket, server_side=True)
        httpd.ops = self.ops
        httpd.client_name = self.client_name
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="node-api", daemon=True).start()
        log.info("node API on %s (mutual TLS; client %s only)", self.url, self.client_name)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class KeyLocks:
    """One lock per key: two power operations on one domain run one after the other."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Any, threading.Lock] = {}

    def hold(self, key: Any) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def power_op(state: Callable[[], Any], act: Callable[[], bool], op: str, name: str) -> None:
    """Check the domain's real state, act, and raise KubeVirt's 409 where the domain does not allow it."""
    current = state()
    if op == "pause":
        if current is None or current.phase != "Running":
            raise conflict(KUBEVIRT, VMI_KIND, name, "VM is not running")
        if current.paused:
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is already paused")
    else:
        if current is None or current.phase != "Running":
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is not running")
        if not current.paused:
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is not paused")
    if not act():
        # It changed between the look and the act (the guest powered off): say what it is now.
        power_op(state, lambda: False, op, name)
        raise internal(f"the domain of {name} did not {op}")


def vmi_not_here(name: str) -> StatusError:
    return not_found(KUBEVIRT, VMI_KIND, name)


class AgentNodeOps:
    """The node API's operations (pause, unpause; console, VNC and port-forward streams) on the agent's own cache
    and hypervisor."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.node_name: str = agent.node_name
        self._locks = KeyLocks()

    def _domain(self, namespace: str, name: str, uid: str | None) -> tuple[str, dict[str, Any]]:
        """The domain name of a VMI of this node (and that uid, when given); 404 otherwise."""
        from virtops.agent.domain import domain_name

        vmi = self.agent.cached((namespace, name))
        meta = (vmi or {}).get("metadata") or {}
        if vmi is None or (vmi.get("status") or {}).get("nodeName") != self.node_name or (
                uid and meta.get("uid") != uid):
            raise vmi_not_here(name)  # not (or no longer) a VMI of this node
        return domain_name(namespace, name), meta

    @contextlib.contextmanager
    def _libvirt(self, what: str) -> Iterator[None]:
        """libvirtd away (restarting, killed): a 500 that says so and one line in the log, not a traceback."""
        import libvirt

        try:
            yield
        except libvirt.libvirtError as exc:
            log.error("node API: %s: libvirt: %s", what, exc)
            raise internal(f"libvirt on node {self.node_name}: {exc}") from exc

    def open_stream(self, namespace: str, name: str, uid: str | None, op: str,
                    port: int | None = None) -> socket.socket:
        dname, meta = self._domain(namespace, name, uid)
        with self._libvirt(f"{op} of {namespace}/{name}"):
            if op == "portforward" and port:
                return self._dial(namespace, name, dname, meta, port)
            owned = self.agent.owns(dname, meta.get("uid"))
            path = self.agent.hypervisor.stream_socket(dname, op) if owned else None
        if path is None:
            what = "serial console" if op == "console" else "VNC server"
            raise conflict(KUBEVIRT, VMI_KIND, name, f"the domain has no {what} socket (not running, or defined "
                                                     "before this agent version)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise internal(f"cannot connect to the {op} of {name}: {exc.strerror}") from exc
        return sock

    def _dial(self, namespace: str, name: str, dname: str, meta: dict[str, Any], port: int) -> socket.socket:
        """A TCP connection to the guest's port (hypervisor.dial_guest: a one-connection slirp host forward), after
        KubeVirt's checks on the domain itself: paused is 409 "VMI is paused", off is 400 "VMI is not running"."""
        from virtops.agent.hypervisor import GuestDialError

        hypervisor = self.agent.hypervisor
        current = hypervisor.state(dname) if self.agent.owns(dname, meta.get("uid")) else None
        if current is None or current.phase != "Running":
            raise bad_request("VMI is not running")
        if current.paused:
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is paused")
        # KubeVirt dials status.interfaces[0]'s address; here that is the guest's address on slirp's network.
        interfaces = ((self.agent.cached((namespace, name)) or {}).get("status") or {}).get("interfaces") or [{}]
        try:
            return hypervisor.dial_guest(dname, port, interfaces[0].get("ipAddress"))
        except GuestDialError as exc:
            raise internal(f"dialing VM: {exc}") from exc

    def guest_info(self, namespace: str, name: str, uid: str | None, op: str) -> dict[str, Any]:
        """guestosinfo, userlist or filesystemlist: the guest agent asked now, in KubeVirt's JSON (agent/guestinfo.py).
        A domain that is not running is 409 "VMI is not running"; a guest agent that does not answer, 500."""
        from virtops.agent import guestinfo

        dname, meta = self._domain(namespace, name, uid)
        hypervisor = self.agent.hypervisor
        current = hypervisor.state(dname) if self.agent.owns(dname, meta.get("uid")) else None
        if current is None or current.phase != "Running" or current.paused:
            # A frozen guest cannot answer; KubeVirt's virt-api checks the phase only (the agent's cache answers).
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is paused" if current and current.paused
                           else "VMI is not running")
        if op == "userlist":
            answer = hypervisor.guest_users(dname)
            result = None if answer is None else guestinfo.user_list(answer)
        elif op == "filesystemlist":
            answer = hypervisor.guest_filesystems(dname)
            result = None if answer is None else guestinfo.filesystem_list(answer)
        else:
            result = hypervisor.guest_agent_info(dname)
        if result is None:
            raise internal(f"the guest agent of {name} did not answer")
        return result

    def power(self, namespace: str, name: str, uid: str | None, op: str) -> None:
        key = (namespace, name)
        dname, meta = self._domain(namespace, name, uid)
        hypervisor = self.agent.hypervisor

        def state() -> Any:
            return hypervisor.state(dname) if self.agent.owns(dname, meta.get("uid")) else None

        with self._locks.hold(key), self._libvirt(f"{op} of {namespace}/{name}"):
            power_op(state, lambda: (hypervisor.pause if op == "pause" else hypervisor.resume)(dname), op, name)
        log.info("VMI %s/%s: %sd through the node API", namespace, name, op)
        # The libvirt event queues it too; this writes the Paused condition without waiting for the event.
        self.agent.queue.add(key)
