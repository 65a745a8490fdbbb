# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""The one way the modules talk to the Kubernetes API.

Connection settings come from a kubeconfig (file, dict or ``KUBECONFIG``), the
in-cluster service account, or explicit options, with kubernetes.core's option
names. Requests go straight over urllib3 with JSON: no discovery round-trips and
no import of the generated ``kubernetes`` client, which keeps a no-op task fast.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import ssl
import subprocess
import tempfile

try:
    from urllib.parse import quote, urlencode, urlparse
except ImportError:  # pragma: no cover - Python 2 is not supported
    quote = urlencode = urlparse = None

try:
    import urllib3

    HAS_URLLIB3 = True
    URLLIB3_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the module
    urllib3 = None
    HAS_URLLIB3 = False
    URLLIB3_IMPORT_ERROR = exc

try:
    import yaml

    HAS_YAML = True
except ImportError:  # pragma: no cover - reported by the module
    yaml = None
    HAS_YAML = False

from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    DefinitionError,
    KubeVirtOpsError,
    UnreachableError,
    api_error,
)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TIMEOUT = 30.0


class ConnectionSettings:
    """Everything needed to reach and authenticate to one API server."""

    def __init__(self):
        self.host = None
        self.namespace = None  # the context's namespace, the default for modules
        self.ca_file = None
        self.cert_file = None
        self.key_file = None
        # Embedded credentials (kubeconfig *-data, an exec plugin's answer) stay in memory: PEM text / bytes.
        self.ca_data = None
        self.cert_data = None
        self.key_data = None
        self.token = None
        self.username = None
        self.password = None
        self.verify = True
        self.proxy = None
        self.no_proxy = None
        self.impersonate_user = None
        self.impersonate_groups = []
        self.tls_server_name = None


def _b64(data, field, source):
    try:
        return base64.b64decode(data)
    except (TypeError, ValueError) as exc:
        raise DefinitionError("kubeconfig {0}: {1} is not base64: {2}".format(source, field, exc))


def _named(items, name, what, source):
    for item in items or []:
        if item.get("name") == name:
            return item.get(what) or {}
    raise DefinitionError("kubeconfig {0}: no {1} named {2!r}".format(source, what, name))


def _read_kubeconfig_files(paths):
    """Merge kubeconfig files the way kubectl does: the first file to set a value wins."""
    merged = {"clusters": [], "users": [], "contexts": []}
    seen = {"clusters": set(), "users": set(), "contexts": set()}
    for path in paths:
        path = os.path.expanduser(path)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            # The C loader when PyYAML has it: every task reads the kubeconfig, about 25 times faster.
            doc = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        base = os.path.dirname(os.path.abspath(path))
        for section in ("clusters", "users", "contexts"):
            for entry in doc.get(section) or []:
                if entry.get("name") in seen[section]:
                    continue
                seen[section].add(entry.get("name"))
                entry = dict(entry)
                body = dict(entry.get(section[:-1]) or {})
                # Relative file references are relative to the kubeconfig file itself.
                for key in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
                    if body.get(key) and not os.path.isabs(body[key]):
                        body[key] = os.path.join(base, body[key])
                entry[section[:-1]] = body
                merged[section].append(entry)
        if "current-context" not in merged and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
    return merged


def _exec_credential(spec, source):
    """Run a kubeconfig exec plugin (client.authentication.k8s.io) and return its status."""
    env = dict(os.environ)
    for item in spec.get("env") or []:
        env[item["name"]] = item["value"]
    cmd = [spec["command"]] + list(spec.get("args") or [])
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DefinitionError("kubeconfig {0}: exec plugin {1!r} failed: {2}".format(source, spec["command"], exc))
    return (json.loads(out) or {}).get("status") or {}


def settings_from_kubeconfig(config, context=None, source="kubeconfig"):
    """ConnectionSettings from a parsed kubeconfig dict."""
    settings = ConnectionSettings()
    context_name = context or config.get("current-context")
    if not context_name:
        raise DefinitionError("kubeconfig {0} has no current-context; set the context option".format(source))
    ctx = _named(config.get("contexts"), context_name, "context", source)
    cluster = _named(config.get("clusters"), ctx.get("cluster"), "cluster", source)
    user = _named(config.get("users"), ctx.get("user"), "user", source) if ctx.get("user") else {}

    settings.host = cluster.get("server")
    settings.namespace = ctx.get("namespace")
    settings.verify = not cluster.get("insecure-skip-tls-verify", False)
    settings.tls_server_name = cluster.get("tls-server-name")
    settings.proxy = cluster.get("proxy-url")
    if cluster.get("certificate-authority-data"):
        settings.ca_data = _b64(cluster["certificate-authority-data"], "certificate-authority-data", source)
    elif cluster.get("certificate-authority"):
        settings.ca_file = cluster["certificate-authority"]

    if user.get("client-certificate-data"):
        settings.cert_data = _b64(user["client-certificate-data"], "client-certificate-data", source)
    elif user.get("client-certificate"):
        settings.cert_file = user["client-certificate"]
    if user.get("client-key-data"):
        settings.key_data = _b64(user["client-key-data"], "client-key-data", source)
    elif user.get("client-key"):
        settings.key_file = user["client-key"]
    if user.get("token"):
        settings.token = user["token"]
    elif user.get("tokenFile"):
        with open(user["tokenFile"]) as f:
            settings.token = f.read().strip()
    settings.username = user.get("username")
    settings.password = user.get("password")
    if user.get("exec"):
        status = _exec_credential(user["exec"], source)
        settings.token = status.get("token") or settings.token
        if status.get("clientCertificateData"):
            settings.cert_data, settings.cert_file = status["clientCertificateData"].encode(), None
            settings.key_data, settings.key_file = (status.get("clientKeyData") or "").encode(), None
    if user.get("auth-provider"):
        raise DefinitionError(
            "kubeconfig {0}: user {1!r} uses a legacy auth-provider, which is not supported; "
            "use an exec plugin or a token".format(source, ctx.get("user"))
        )
    return settings


def _in_cluster_settings():
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token_path = os.path.join(SERVICE_ACCOUNT_DIR, "token")
    if not (host and port and os.path.exists(token_path)):
        return None
    settings = ConnectionSettings()
    settings.host = "https://{0}:{1}".format("[" + host + "]" if ":" in host else host, port)
    with open(token_path) as f:
        settings.token = f.read().strip()
    settings.ca_file = os.path.join(SERVICE_ACCOUNT_DIR, "ca.crt")
    ns_path = os.path.join(SERVICE_ACCOUNT_DIR, "namespace")
    if os.path.exists(ns_path):
        with open(ns_path) as f:
            settings.namespace = f.read().strip()
    return settings


def resolve_settings(params):
    """ConnectionSettings from module params (kubernetes.core's names and precedence)."""
    if not HAS_YAML:
        raise KubeVirtOpsError("PyYAML is required to read kubeconfig files")
    kubeconfig = params.get("kubeconfig")
    settings = None
    if isinstance(kubeconfig, dict):
        settings = settings_from_kubeconfig(kubeconfig, params.get("context"), "(dict)")
    elif kubeconfig:
        paths = [kubeconfig]
        if not os.path.exists(os.path.expanduser(kubeconfig)):
            raise DefinitionError("kubeconfig: file {0} does not exist".format(kubeconfig))
        settings = settings_from_kubeconfig(_read_kubeconfig_files(paths), params.get("context"), kubeconfig)
    elif not params.get("host"):
        env_paths = [p for p in (os.environ.get("KUBECONFIG") or "").split(os.pathsep) if p]
        paths = env_paths or ["~/.kube/config"]
        if any(os.path.exists(os.path.expanduser(p)) for p in paths):
            settings = settings_from_kubeconfig(
                _read_kubeconfig_files(paths), params.get("context"), os.pathsep.join(paths)
            )
        else:
            settings = _in_cluster_settings()
        if settings is None:
            raise DefinitionError(
                "No Kubernetes connection: set kubeconfig or host (or K8S_AUTH_KUBECONFIG / K8S_AUTH_HOST), "
                "or run where ~/.kube/config or an in-cluster service account exists"
            )
    if settings is None:
        settings = ConnectionSettings()
    # Explicit options win over the kubeconfig, as in kubernetes.core.
    overrides = {
        "host": "host",
        "api_key": "token",
        "username": "username",
        "password": "password",
        "ca_cert": "ca_file",
        "client_cert": "cert_file",
        "client_key": "key_file",
        "proxy": "proxy",
        "no_proxy": "no_proxy",
        "impersonate_user": "impersonate_user",
    }
    for option, attr in overrides.items():
        if params.get(option) not in (None, ""):
            setattr(settings, attr, params[option])
    for option, attr in (("ca_cert", "ca_data"), ("client_cert", "cert_data"), ("client_key", "key_data")):
        if params.get(option) not in (None, ""):
            setattr(settings, attr, None)  # the option's file wins over the kubeconfig's embedded data
    if params.get("validate_certs") is not None:
        settings.verify = params["validate_certs"]
    if params.get("impersonate_groups"):
        settings.impersonate_groups = list(params["impersonate_groups"])
    if not settings.host:
        raise DefinitionError("host: no API server address in the kubeconfig or options")
    return settings


def _ssl_context(settings):
    """Server verification and the client certificate, loaded once into memory.

    ``ssl`` loads a certificate chain only from paths, so embedded key material passes through a private
    directory (0700) for the duration of this call alone: no key file outlives it, not even when Ansible kills
    the module later (the services' client does the same).
    """
    try:
        if settings.ca_data is not None:
            data = settings.ca_data
            context = ssl.create_default_context(cadata=data.decode("ascii") if b"-----BEGIN" in data else data)
        else:
            context = ssl.create_default_context(cafile=settings.ca_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise DefinitionError("ca_cert: cannot load the certificate authority: {0}".format(exc))
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.cert_data is None and settings.key_data is None and not settings.cert_file:
        return context
    try:
        if settings.cert_data is None and settings.key_data is None:
            context.load_cert_chain(settings.cert_file, settings.key_file)
            return context
        with tempfile.TemporaryDirectory(prefix="virtops-kube-") as private:
            paths = []
            for name, data, path in (("cert.pem", settings.cert_data, settings.cert_file),
                                     ("key.pem", settings.key_data, settings.key_file)):
                if data is not None:
                    path = os.path.join(private, name)
                    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                        f.write(data)
                paths.append(path)
            context.load_cert_chain(paths[0], paths[1])
    except (ssl.SSLError, OSError) as exc:
        raise DefinitionError("client_cert/client_key: cannot load the client certificate and key: {0}".format(exc))
    return context


def _bypass_proxy(host, no_proxy):
    hostname = urlparse(host).hostname or ""
    for entry in (no_proxy or "").split(","):
        entry = entry.strip().lstrip(".")
        if entry and (hostname == entry or hostname.endswith("." + entry) or entry == "*"):
            return True
    return False


class KubeClient:
    """Minimal JSON client for the Kubernetes REST API."""

    def __init__(self, settings, timeout=DEFAULT_TIMEOUT, user_agent="virtops.kubevirt", max_connections=4):
        if not HAS_URLLIB3:
            raise KubeVirtOpsError("urllib3 is required: {0}".format(URLLIB3_IMPORT_ERROR))
        self.settings = settings
        self.host = settings.host.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json", "User-Agent": user_agent}
        if settings.token:
            self.headers["Authorization"] = "Bearer " + settings.token
        elif settings.username and settings.password:
            self.headers.update(urllib3.make_headers(basic_auth=settings.username + ":" + settings.password))
        if settings.impersonate_user:
            self.headers["Impersonate-User"] = settings.impersonate_user
        pool_args = dict(num_pools=2, maxsize=max_connections, retries=False)
        if self.host.startswith("https"):
            pool_args.update(
                cert_reqs="CERT_REQUIRED" if settings.verify else "CERT_NONE",
                ssl_context=_ssl_context(settings),
            )
            if settings.tls_server_name:
                pool_args["server_hostname"] = settings.tls_server_name
            if not settings.verify:
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if settings.proxy and not _bypass_proxy(self.host, settings.no_proxy):
            self.pool = urllib3.ProxyManager(settings.proxy, **pool_args)
        else:
            self.pool = urllib3.PoolManager(**pool_args)

    # --- transport ------------------------------------------------------------
    def _headers(self):
        headers = urllib3.HTTPHeaderDict(self.headers)
        for group in self.settings.impersonate_groups:
            headers.add("Impersonate-Group", group)  # one header line per group, as Kubernetes wants
        return headers

    def url(self, path, query=None):
        query = dict((k, v) for k, v in (query or {}).items() if v not in (None, "", []))
        return self.host + path + ("?" + urlencode(query, doseq=True) if query else "")

    def request(self, method, path, query=None, body=None, content_type="application/json", timeout=None,
                stream=False):
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            resp = self.pool.request(
                method,
                self.url(path, query),
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=10.0, read=timeout or self.timeout),
                preload_content=not stream,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise UnreachableError(self.host, _reason(exc))
        if resp.status >= 400:
            raw = resp.data if not stream else resp.read()
            try:
                payload = json.loads(raw.decode() or "{}")
            except ValueError:
                payload = raw.decode(errors="replace")
            raise api_error(resp.status, payload)
        if stream:
            return resp
        if not resp.data:
            return {}
        return json.loads(resp.data.decode())

    # --- verbs ------------------------------------------------------------------
    def get(self, path, query=None):
        return self.request("GET", path, query)

    def list_all(self, path, query=None, page_size=500):
        """All items of a collection, following ``continue`` tokens; returns (items, resourceVersion)."""
        query = dict(query or {}, limit=page_size)
        items = []
        while True:
            page = self.request("GET", path, query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, (page.get("metadata") or {}).get("resourceVersion")
            query["continue"] = token

    def create(self, path, body, dry_run=False):
        return self.request("POST", path, {"dryRun": "All" if dry_run else None}, body)

    def merge_patch(self, path, patch, dry_run=False):
        return self.request(
            "PATCH", path, {"dryRun": "All" if dry_run else None}, patch, "application/merge-patch+json"
        )

    def delete(self, path, options=None, dry_run=False):
        body = dict(options or {}, kind="DeleteOptions", apiVersion="v1")
        if dry_run:
            body["dryRun"] = ["All"]
        return self.request("DELETE", path, None, body)

    def watch(self, path, query, timeout_seconds):
        """Yield watch events (dicts with type/object) until the server ends the stream."""
        query = dict(query, watch="true", allowWatchBookmarks="true", timeoutSeconds=max(1, int(timeout_seconds)))
        resp = self.request("GET", path, query, timeout=timeout_seconds + 10, stream=True)
        ended = False
        try:
            buf = b""
            for chunk in resp.stream(4096, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line.decode())
                        if event.get("type") == "ERROR":
                            status = event.get("object") or {}
                            raise api_error(status.get("code") or 500, status)
                        yield event
            ended = True
        except urllib3.exceptions.ReadTimeoutError:
            return
        except urllib3.exceptions.HTTPError as exc:
            raise UnreachableError(self.host, _reason(exc))
        finally:
            # A stream the caller left (it saw what it waited for) still has unread data on its connection: back in
            # the pool, the next request would read that instead of its own answer. Close it; the pool reconnects.
            if not ended:
                resp.close()
            resp.release_conn()


def _reason(exc):
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "Connection refused" in text:
        return "connection refused"
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "TLS certificate verification failed ({0}); set ca_cert or validate_certs".format(text)
    return text


def resource_path(group_version, plural, namespace=None, name=None, subresource=None):
    """/apis/<group>/<version>[/namespaces/<ns>]/<plural>[/<name>[/<sub>]] (core group: /api/v1)."""
    prefix = "/api/" + group_version if "/" not in group_version else "/apis/" + group_version
    parts = [prefix]
    if namespace:
        parts.append("namespaces/" + quote(namespace, safe=""))
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)
