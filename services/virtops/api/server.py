"""The HTTPS server behind the APIService `v1.subresources.kubevirt.io`.

ThreadingHTTPServer wrapped in TLS (and the websockets library for the console and VNC streams,
streams.py). The TLS layer asks for a client certificate and verifies it against the front-proxy CA (so a
certificate from any other CA fails the handshake); a request without one, with a CN outside
requestheader-allowed-names, or without a user header gets 401. /healthz, /livez and /readyz answer
without authentication, like kube-apiserver's always-allowed health paths. Discovery, OpenAPI and
version need any front-proxied user; every subresource is authorized with a SubjectAccessReview on its
own verb (update for pause/unpause/start/stop/restart, get for console, vnc, portforward, guestosinfo, userlist
and filesystemlist).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from virtops.api.auth import FrontProxyConfig, User, authorize, check_identity, peer_common_name
from virtops.api.nodes import NodeApiClient, NodeApiCredentials
from virtops.api.status import StatusError, bad_request, internal, method_not_allowed, not_found_path
from virtops.api.streams import bridge, is_websocket
from virtops.api.subresources import Subresources, parse_dry_run
from virtops.kube import KubeClient, log_failure
from virtops.node.api import INFO_OPERATIONS

log = logging.getLogger(__name__)

GROUP = "subresources.kubevirt.io"
VERSION = "v1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
MAX_BODY = 1 << 20

# (resource, subresource) -> (Subresources method name, success code)
OPERATIONS: dict[tuple[str, str], tuple[str, int]] = {
    ("virtualmachineinstances", "pause"): ("pause", 200),
    ("virtualmachineinstances", "unpause"): ("unpause", 200),
    ("virtualmachines", "start"): ("start", 202),
    ("virtualmachines", "stop"): ("stop", 202),
    ("virtualmachines", "restart"): ("restart", 202),
}
# Websocket streams (streams.py), GET with the verb get; portforward has its own path (port, protocol).
STREAMS = {("virtualmachineinstances", "console"), ("virtualmachineinstances", "vnc")}
# Guest agent queries, GET with the verb get, answered with JSON from the node's agent.
GUEST_INFO = {("virtualmachineinstances", op) for op in INFO_OPERATIONS}
PORTFORWARD = ("virtualmachineinstances", "virtualmachines")
KINDS = {"virtualmachineinstances": "VirtualMachineInstance", "virtualmachines": "VirtualMachine"}

_SUBRESOURCE_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP_VERSION)}/namespaces/(?P<ns>[^/]+)/(?P<res>[^/]+)/(?P<name>[^/]+)/(?P<sub>[^/]+)$")

_PORTFORWARD_PATH = re.compile(
    rf"^/apis/{re.escape(GROUP_VERSION)}/namespaces/(?P<ns>[^/]+)/(?P<res>virtualmachineinstances|virtualmachines)/"
    r"(?P<name>[^/]+)/portforward/(?P<port>[^/]+)(?:/(?P<protocol>[^/]+))?$")

GROUP_DOC = {"name": GROUP, "versions": [{"groupVersion": GROUP_VERSION, "version": VERSION}],
             "preferredVersion": {"groupVersion": GROUP_VERSION, "version": VERSION}}


def resource_list() -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
            "resources": [{"name": f"{res}/{sub}", "singularName": "", "namespaced": True,
                           "kind": KINDS[res], "verbs": ["update"]} for res, sub in OPERATIONS]
            + [{"name": f"{res}/{sub}", "singularName": "", "namespaced": True, "kind": KINDS[res], "verbs": ["get"]}
               for res, sub in sorted(STREAMS | GUEST_INFO | {(r, "portforward") for r in PORTFORWARD})]}


def server_version() -> dict[str, str]:
    """`GET .../v1/version`, KubeVirt's version.Info (what `virtctl version` prints as the server's)."""
    try:
        version = importlib.metadata.version("virtops-services")
    except importlib.metadata.PackageNotFoundError:
        version = "0.0.0"
    return {"gitVersion": f"v{version}+virtops", "gitCommit": "", "gitTreeState": "", "buildDate": "",
            "goVersion": "", "compiler": f"{platform.python_implementation()} {platform.python_version()}",
            "platform": f"{sys.platform}/{platform.machine()}"}


# Minimal documents: kube-apiserver's OpenAPI aggregation downloads these and merges them.
OPENAPI_V2 = {"swagger": "2.0", "info": {"title": "KubeVirt subresources (virtops)", "version": VERSION},
              "paths": {}, "definitions": {}}
OPENAPI_V3_GV = {"openapi": "3.0.0", "info": {"title": "KubeVirt subresources (virtops)", "version": VERSION},
                 "paths": {}, "components": {"schemas": {}}}
OPENAPI_V3 = {"paths": {f"apis/{GROUP_VERSION}": {"serverRelativeURL": f"/openapi/v3/apis/{GROUP_VERSION}"}}}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    # --- plumbing -------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: Any = None, content_type: str = "application/json") -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(code)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _read_raw_body(self) -> bytes:
        # Read every body before answering, or a keep-alive connection would parse it as the next request.
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()  # kube-apiserver's proxy sends this for HTTP/2 requests of unknown length
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise bad_request("request body must be at most 1 MiB")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            try:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                size = -1
            if size < 0 or len(data) + size > MAX_BODY:
                self.close_connection = True
                raise bad_request("request body must be at most 1 MiB")
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return data
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    @staticmethod
    def _json(raw: bytes) -> Any:
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"Can not unmarshal Request body to struct, error: {exc}") from exc

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        try:
            raw = self._read_raw_body()
            if self.command not in ("GET", "HEAD", "PUT"):
                raise method_not_allowed(self.command)
            if url.path in ("/healthz", "/livez", "/readyz"):
                self._send(200, b"ok", "text/plain; charset=utf-8")
                return
            user = check_identity(self.server.front_proxy, peer_common_name(self.connection), self.headers)
            stream = _SUBRESOURCE_PATH.match(url.path)
            forward = _PORTFORWARD_PATH.match(url.path)
            if self.command == "GET" and stream and (stream["res"], stream["sub"]) in STREAMS:
                self._stream(stream, user)
            elif self.command == "GET" and forward:
                self._stream(forward, user, "portforward")
            elif self.command in ("GET", "HEAD") and stream and (stream["res"], stream["sub"]) in GUEST_INFO:
                self._guest_info(stream, user)
            elif self.command == "PUT":
                self._put(url.path, parse_qs(url.query), user, raw)
            else:
                self._get(url.path)
        except StatusError as exc:
            self._send(exc.code, exc.body())
        except Exception as exc:  # one bad request must not take the server down
            log_failure(log, f"{self.command} {url.path} failed", exc)
            err = internal(str(exc))
            self._send(err.code, err.body())

    def _get(self, path: str) -> None:
        path = path.rstrip("/") or "/"
        docs: dict[str, Any] = {
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [GROUP_DOC]},
            f"/apis/{GROUP}": dict({"kind": "APIGroup", "apiVersion": "v1"}, **GROUP_DOC),
            f"/apis/{GROUP_VERSION}": resource_list(),
            f"/apis/{GROUP_VERSION}/version": server_version(),
            "/openapi/v2": OPENAPI_V2,
            "/openapi/v3": OPENAPI_V3,
            f"/openapi/v3/apis/{GROUP_VERSION}": OPENAPI_V3_GV,
        }
        if path not in docs:
            raise not_found_path(path)
        self._send(200, docs[path])

    def _put(self, path: str, query: dict[str, list[str]], user: User, raw: bytes) -> None:
        match = _SUBRESOURCE_PATH.match(path)
        body = self._json(raw)
        if not match or (match["res"], match["sub"]) not in OPERATIONS:
            raise not_found_path(path)
        method, code = OPERATIONS[(match["res"], match["sub"])]
        authorize(self.server.client, user, namespace=match["ns"], resource=match["res"],
                  subresource=match["sub"], name=match["name"])
        dry_run = parse_dry_run(body, query)
        getattr(self.server.subresources, method)(match["ns"], match["name"], dry_run=dry_run)
        self._send(code)

    def _guest_info(self, match: re.Match[str], user: User) -> None:
        """guestosinfo, userlist, filesystemlist. KubeVirt's virt-api answers every failure of these with
        response.WriteError(500, err): a 500 whose plain-text body is the error's message, so a VMI without a
        guest agent is 500 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "NAME": VMI does not
        have guest agent connected'. Only authorization keeps its 403 (kube-apiserver's own answer there)."""
        authorize(self.server.client, user, namespace=match["ns"], resource=match["res"], subresource=match["sub"],
                  name=match["name"], verb="get")
        try:
            answer = self.server.subresources.guest_info(match["ns"], match["name"], match["sub"])
        except StatusError as exc:
            self._send(500, exc.message.encode(), "text/plain; charset=utf-8")
            return
        self._send(200, answer)

    def _stream(self, match: re.Match[str], user: User, sub: str = "") -> None:
        """console, vnc and portforward: KubeVirt's roles grant them with the verb get."""
        sub = sub or match["sub"]
        authorize(self.server.client, user, namespace=match["ns"], resource=match["res"], subresource=sub,
                  name=match["name"], verb="get")
        if not is_websocket(self.headers):
            raise bad_request(f"{sub} is a websocket (subprotocol plain.kubevirt.io)")
        if sub == "portforward":
            agent = self.server.subresources.portforward(match["ns"], match["name"], match["res"], match["port"],
                                                         match["protocol"] or "tcp")
        else:
            agent = self.server.subresources.stream(match["ns"], match["name"], sub)
        self.close_connection = True  # after the stream, the connection is done
        try:
            bridge(self.connection, self.path, self.headers, agent)
        finally:
            agent.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed TLS handshakes (no front-proxy CA) and dropped connections are routine, not tracebacks.
        log.debug("connection from %s failed", client_address, exc_info=True)
    client: KubeClient
    subresources: Subresources
    front_proxy: FrontProxyConfig


class SubresourceServer:
    """`subresources.kubevirt.io/v1` over TLS on loopback; start() runs it in a background thread."""

    def __init__(self, client: KubeClient, *, host: str = "127.0.0.1", port: int = 0, cert_file: str,
                 key_file: str, node_api: NodeApiCredentials | None = None,
                 lease_namespace: str = "kube-node-lease", reuse_port: bool = False) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"host: {host!r} is not a loopback address; the server listens on loopback only")
        self.client = client
        self.host = host
        self.port = port
        self.cert_file = cert_file
        self.key_file = key_file
        # The client certificate for the agents' node APIs; without it pause/unpause answer 500 saying so.
        self.node_api = node_api
        self.lease_namespace = lease_namespace
        # SO_REUSEPORT: several replicas on one host share the port, and the kernel spreads connections over the
        # listeners that are open; when one replica stops, the others get them all.
        self.reuse_port = reuse_port
        self.front_proxy: FrontProxyConfig | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def _tls(self, front_proxy: FrontProxyConfig) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # ask for a cert; no cert -> 401 at the HTTP layer
        ctx.load_verify_locations(cadata=front_proxy.ca_pem)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("SubresourceServer already started")
        self.front_proxy = FrontProxyConfig.load(self.client)
        httpd = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        httpd.allow_reuse_port = self.reuse_port
        try:
            httpd.server_bind()
            httpd.server_activate()
        except BaseException:
            httpd.server_close()
            raise
        context = self._tls(self.front_proxy)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        httpd.client = self.client
        httpd.subresources = Subresources(
            self.client, NodeApiClient(self.client, self.node_api, lease_namespace=self.lease_namespace))
        httpd.front_proxy = self.front_proxy
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="subresource-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None
