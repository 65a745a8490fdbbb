"""A small, thread-safe JSON client for the Kubernetes API, with list+watch.

The services (node agent, controller) use only this. It reads a kubeconfig with
client certificates or a bearer token (what the lab and the roles write), talks
JSON over urllib3, and raises typed errors so callers can tell "not found" from
"conflict" from "gone" without string matching.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml

Obj = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error status."""

    status = 0

    def __init__(self, status: int, body: Obj | str) -> None:
        if not isinstance(body, dict):
            body = {"message": str(body)}
        self.status = status
        self.reason = body.get("reason", "")
        self.message = body.get("message", "") or f"HTTP {status}"
        self.body = body
        super().__init__(self.message)


class ForbiddenError(ApiError):
    status = 403


class NotFoundError(ApiError):
    status = 404


class ConflictError(ApiError):
    status = 409


class GoneError(ApiError):
    status = 410


class InvalidError(ApiError):
    """422: the API server refused the object itself (schema, validation, an invalid patch). Not a race:
    writing the same again fails the same way."""

    status = 422


_ERRORS = {cls.status: cls for cls in (ForbiddenError, NotFoundError, ConflictError, GoneError, InvalidError)}


def api_error(status: int, body: Obj | str) -> ApiError:
    return _ERRORS.get(status, ApiError)(status, body)


def log_failure(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log a failed request: the API server's answer or its absence (killed, restarting, a dropped connection)
    is an expected fault and takes one line; anything else is a bug and keeps its traceback."""
    if isinstance(exc, (ApiError, urllib3.exceptions.HTTPError, ConnectionError)):
        logger.warning("%s: %s", what, str(exc).strip() or type(exc).__name__)
    else:
        logger.error("%s", what, exc_info=exc)


def path_for(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
    """REST path of a collection or object (core group under /api, others under /apis)."""
    parts = ["/api/" + api_version if "/" not in api_version else "/apis/" + api_version]
    if namespace:
        parts.append("namespaces/" + quote(namespace, safe=""))
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def unchanged_since(resource_version: str) -> Obj:
    """The first operation of a guarded JSON patch: the write applies only to the object as last read.

    Setting metadata.resourceVersion in a patch is the API server's precondition: when the object changed
    meanwhile it answers 409 Conflict (read again, retry). A JSON patch ``test`` of the same field would
    answer 422, the code of a real rejection, and the two could not be told apart.
    """
    return {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}


def _tls_context(*, ca_file: str | None, ca_data: str | None, cert_file: str | None, key_file: str | None,
                 cert_data: bytes | None, key_data: bytes | None) -> ssl.SSLContext:
    """Server verification and the client certificate, loaded once into memory.

    Embedded key material (``client-key-data``) has to pass through a file because ``ssl`` loads certificate
    chains only from paths; it lives in a private directory for the duration of one call, so no key file
    outlives this function, not even when the process is killed right after.
    """
    context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if cert_data is not None and key_data is not None:
        with tempfile.TemporaryDirectory(prefix="virtops-svc-") as private:  # mode 0700
            cert_path, key_path = os.path.join(private, "cert.pem"), os.path.join(private, "key.pem")
            for path, data in ((cert_path, cert_data), (key_path, key_data)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                    f.write(data)
            context.load_cert_chain(cert_path, key_path)
    elif cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class KubeClient:
    def __init__(self, server: str, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, token: str | None = None, user_agent: str = "virtops",
                 ca_data: str | None = None, cert_data: bytes | None = None, key_data: bytes | None = None) -> None:
        self.server = server.rstrip("/")
        self.headers = {"Accept": "application/json", "User-Agent": user_agent}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        tls = _tls_context(ca_file=ca_file, ca_data=ca_data, cert_file=cert_file, key_file=key_file,
                           cert_data=cert_data, key_data=key_data)
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=16, retries=False, ssl_context=tls)

    @classmethod
    def from_kubeconfig(cls, path: str, context: str | None = None, user_agent: str = "virtops") -> KubeClient:
        with open(os.path.expanduser(path)) as f:
            config = yaml.safe_load(f)
        ctx_name = context or config["current-context"]
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")), {})

        def data_of(key: str, section: Obj) -> bytes | None:
            return base64.b64decode(section[key]) if section.get(key) else None

        token = user.get("token")
        if not token and user.get("tokenFile"):
            with open(user["tokenFile"]) as f:
                token = f.read().strip()
        ca_data = data_of("certificate-authority-data", cluster)
        return cls(
            cluster["server"],
            ca_file=cluster.get("certificate-authority"),
            ca_data=ca_data.decode() if ca_data else None,
            cert_file=user.get("client-certificate"),
            key_file=user.get("client-key"),
            cert_data=data_of("client-certificate-data", user),
            key_data=data_of("client-key-data", user),
            token=token,
            user_agent=user_agent,
        )

    # --- transport ----------------------------------------------------------
    def request(self, method: str, path: str, query: Obj | None = None, body: Any = None,
                content_type: str = "application/json", timeout: float = 30.0, stream: bool = False) -> Any:
        query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        url = self.server + path + ("?" + urlencode(query) if query else "")
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self.pool.request(method, url, body=data, headers=headers, preload_content=not stream,
                                 timeout=urllib3.Timeout(connect=10.0, read=timeout), redirect=False)
        if resp.status >= 400:
            raw = resp.read() if stream else resp.data
            try:
                payload = json.loads(raw or b"{}")
            except ValueError:
                payload = raw.decode(errors="replace")
            if stream:
                resp.release_conn()
            raise api_error(resp.status, payload)
        if stream:
            return resp
        return json.loads(resp.data) if resp.data else {}

    # --- verbs --------------------------------------------------------------
    def get(self, path: str, query: Obj | None = None) -> Obj:
        return self.request("GET", path, query)

    def list(self, path: str, query: Obj | None = None) -> tuple[list[Obj], str]:
        """All items (paged) and the list's resourceVersion to watch from."""
        query = dict(query or {}, limit=500)
        items: list[Obj] = []
        while True:
            page = self.get(path, query)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return items, meta.get("resourceVersion", "")
            query["continue"] = meta["continue"]

    def create(self, path: str, body: Obj, dry_run: bool = False) -> Obj:
        return self.request("POST", path, {"dryRun": "All" if dry_run else None}, body)

    def update(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, None, body)

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return self.request("PATCH", path, None, patch, "application/merge-patch+json")

    def json_patch(self, path: str, ops: list[Obj]) -> Obj:
        return self.request("PATCH", path, None, ops, "application/json-patch+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, None, body)

    def watch(self, path: str, query: Obj | None = None, timeout_seconds: int = 300) -> Iterator[Obj]:
        """Watch events ({type, object}) until the server closes the stream; ERROR events raise."""
        query = dict(query or {}, watch="true", allowWatchBookmarks="true", timeoutSeconds=timeout_seconds)
        resp = self.request("GET", path, query, timeout=timeout_seconds + 15, stream=True)
        ended = False
        try:
            buf = b""
            for chunk in resp.stream(8192, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object") or {}
                        raise api_error(status.get("code") or 500, status)
                    yield event
            ended = True
        finally:
            # A stream left early (the caller stopped, an ERROR event, a failed handler) still has unread data on
            # its connection: back in the pool, the next request would read that instead of its own answer.
            if not ended:
                resp.close()
            resp.release_conn()
