"""Front-proxy authentication and SubjectAccessReview authorization, as aggregated API servers do them.

kube-apiserver authenticates the user, then proxies the request with its front-proxy client
certificate and the user in X-Remote-* headers. We trust those headers only when the TLS peer
presented a certificate signed by the front-proxy CA with an allowed CN; both come from the
ConfigMap kube-system/extension-apiserver-authentication, never from the lab's files.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import unquote

from virtops.api.status import StatusError, forbidden, internal
from virtops.kube import KubeClient

AUTH_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


@dataclass(frozen=True)
class FrontProxyConfig:
    ca_pem: str
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)

    @classmethod
    def from_configmap(cls, data: dict[str, str]) -> FrontProxyConfig:
        ca = data.get("requestheader-client-ca-file", "")
        if not ca.strip():
            raise ValueError("extension-apiserver-authentication has no requestheader-client-ca-file: "
                             "kube-apiserver runs without --requestheader-client-ca-file")

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            raw = data.get(key)
            return tuple(json.loads(raw)) if raw else default  # kube-apiserver stores JSON lists

        return cls(ca, names("requestheader-allowed-names", ()),
                   names("requestheader-username-headers", cls.username_headers),
                   names("requestheader-group-headers", cls.group_headers),
                   names("requestheader-extra-headers-prefix", cls.extra_prefixes))

    @classmethod
    def load(cls, client: KubeClient) -> FrontProxyConfig:
        return cls.from_configmap(client.get(AUTH_CONFIGMAP).get("data") or {})

    def cn_allowed(self, cn: str | None) -> bool:
        # An empty list means "any CN signed by the CA", like kube-apiserver.
        return cn is not None and (not self.allowed_names or cn in self.allowed_names)


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


def user_from_headers(config: FrontProxyConfig, headers: Message) -> User | None:
    """The proxied user, or None when no username header is present."""
    name = next((v for h in config.username_headers if (v := headers.get(h))), None)
    if not name:
        return None
    groups = tuple(v for h in config.group_headers for v in headers.get_all(h) or [])
    extra: dict[str, list[str]] = {}
    for key, value in headers.items():
        for prefix in config.extra_prefixes:
            if key.lower().startswith(prefix.lower()):
                # Extra keys travel percent-encoded and are case-insensitive: lower-case like Kubernetes.
                extra.setdefault(unquote(key[len(prefix):]).lower(), []).append(value)
    return User(name, groups, extra)


def authorize(client: KubeClient, user: User, *, namespace: str, resource: str, subresource: str, name: str,
              verb: str = "update", group: str = "subresources.kubevirt.io", version: str = "v1") -> None:
    """Raise a 403 Status in kube-apiserver's words unless a SubjectAccessReview allows the request."""
    spec: dict[str, Any] = {
        "user": user.name,
        "groups": list(user.groups),
        "resourceAttributes": {"namespace": namespace, "verb": verb, "group": group, "version": version,
                               "resource": resource, "subresource": subresource, "name": name},
    }
    if user.extra:
        spec["extra"] = user.extra
    try:
        review = client.create(SAR_PATH, {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                                          "spec": spec})
    except Exception as exc:  # failing to ask means "no"
        raise internal(f"authorization check failed: {exc}") from exc
    status = review.get("status") or {}
    if status.get("allowed") and not status.get("denied"):
        return
    why = (f'User "{user.name}" cannot {verb} resource "{resource}/{subresource}" in API group "{group}" '
           f'in the namespace "{namespace}"')
    if status.get("reason"):
        why += ": " + status["reason"]
    raise forbidden(group, resource, name, why)


def peer_common_name(sock: object) -> str | None:
    """The CN of the client certificate a TLS peer presented (None: not TLS, or no certificate)."""
    cert = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def check_identity(config: FrontProxyConfig, peer_cn: str | None, headers: Message) -> User:
    """The proxied user, or 401 when the peer is not the front proxy or names no user."""
    if not config.cn_allowed(peer_cn):
        raise StatusError(401, "Unauthorized", "Unauthorized")
    user = user_from_headers(config, headers)
    if user is None:
        raise StatusError(401, "Unauthorized", "Unauthorized")
    return user
