"""Register the server with kube-apiserver's aggregation layer: Namespace, Service, APIService.

The Service is `type: ExternalName` pointing at `localhost`: kube-apiserver resolves an
ExternalName service to `https://<externalName>:<port>` when aggregator routing is off, which
reaches a server on the API server's own loopback without any cluster networking. With several
API servers, each dials its own host: a server (controller replica) runs on every one of them, on the
same port with a certificate from the same CA (docs/subresource-api.md, "Several API servers").
kube-apiserver checks the serving certificate against the APIService's caBundle for the name
`<service>.<namespace>.svc`, so the certificate must carry that name.
"""

from __future__ import annotations

import base64
import time

from virtops.kube import ConflictError, KubeClient, NotFoundError, path_for
from virtops.pki import CertificateAuthority

GROUP = "subresources.kubevirt.io"
VERSION = "v1"
APISERVICE_NAME = f"{VERSION}.{GROUP}"
APISERVICE_PATH = path_for("apiregistration.k8s.io/v1", "apiservices", None, APISERVICE_NAME)
LABELS = {"app.kubernetes.io/managed-by": "virtops.kubevirt", "app.kubernetes.io/component": "subresource-api"}


def serving_certificate(ca: CertificateAuthority, service: str = "virtops-subresources",
                        namespace: str = "kubevirt") -> tuple[bytes, bytes]:
    """A serving certificate (PEM cert, PEM key) valid for the service's DNS names and loopback."""
    return ca.issue(f"{service}.{namespace}.svc", server=True,
                    dns_names=(f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local",
                               "localhost"),
                    ips=("127.0.0.1", "::1"))


def _apply(client: KubeClient, path: str, body: dict) -> None:
    """Create, or replace the fields we own on the existing object (idempotent)."""
    for _attempt in range(5):
        try:
            current = client.get(path)
        except NotFoundError:
            try:
                client.create(path.rsplit("/", 1)[0], body)
                return
            except ConflictError:
                continue  # created meanwhile: update it
        desired = dict(current, spec=dict(current.get("spec") or {}, **body["spec"]))
        desired["metadata"] = dict(current["metadata"],
                                   labels=dict(current["metadata"].get("labels") or {}, **LABELS))
        if desired == current:
            return
        try:
            client.update(path, desired)
            return
        except ConflictError:
            continue
    raise RuntimeError(f"could not apply {path}: it kept changing")


def register(client: KubeClient, *, port: int, ca_pem: bytes | str, namespace: str = "kubevirt",
             service: str = "virtops-subresources", timeout: float = 60.0) -> dict:
    """Create or update the Namespace, Service and APIService; wait until the APIService is Available.

    Returns the APIService. Raises TimeoutError (with the Available condition's message) otherwise.
    """
    if isinstance(ca_pem, str):
        ca_pem = ca_pem.encode()
    try:
        client.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": namespace, "labels": LABELS}})
    except ConflictError:
        pass
    svc_path = path_for("v1", "services", namespace, service)
    _apply(client, svc_path, {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service, "namespace": namespace, "labels": LABELS},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": port, "protocol": "TCP", "targetPort": port}]},
    })
    _apply(client, APISERVICE_PATH, {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": APISERVICE_NAME, "labels": LABELS},
        "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "caBundle": base64.b64encode(ca_pem).decode(),
                 "service": {"namespace": namespace, "name": service, "port": port}},
    })
    return wait_available(client, timeout)


def wait_available(client: KubeClient, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    message = "no Available condition yet"
    while True:
        apiservice = client.get(APISERVICE_PATH)
        for cond in (apiservice.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Available":
                if cond.get("status") == "True":
                    return apiservice
                message = f"{cond.get('reason')}: {cond.get('message')}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"APIService {APISERVICE_NAME} is not Available: {message}")
        time.sleep(0.5)


def unregister(client: KubeClient, *, namespace: str = "kubevirt", service: str = "virtops-subresources") -> None:
    """Delete the APIService and the Service (the namespace may hold other things and stays)."""
    for path in (APISERVICE_PATH, path_for("v1", "services", namespace, service)):
        try:
            client.delete(path)
        except NotFoundError:
            pass
