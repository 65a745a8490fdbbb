"""The lab's own certificates: a cluster CA, a front-proxy CA and their leaves, laid out in one directory.

The certificate authority itself is production code (virtops.pki); this module only knows which files the
lab's control plane needs. The service-account key is RSA because every Kubernetes client and verifier
accepts RS256.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from virtops.pki import CertificateAuthority, key_pem, write_pair, write_private


def write_pki(pki: Path) -> None:
    """Write every certificate and key the lab's control plane needs."""
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = CertificateAuthority("virtops-lab-ca")
    front = CertificateAuthority("virtops-lab-front-proxy-ca")
    write_pair(pki, "ca", ca.cert_pem, ca.key_pem)
    write_pair(pki, "front-proxy-ca", front.cert_pem, front.key_pem)

    write_pair(pki, "apiserver", *ca.issue(
        "kube-apiserver",
        server=True,
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", "::1"),
    ))
    write_pair(pki, "admin", *ca.issue("virtops-lab-admin", org="system:masters", client=True))
    # The bootstrap RBAC policy already binds this user to the controllers' roles.
    write_pair(pki, "controller-manager", *ca.issue("system:kube-controller-manager", client=True))
    # kube-apiserver presents this to aggregated API servers (--requestheader-allowed-names).
    write_pair(pki, "front-proxy-client", *front.issue("front-proxy-client", client=True))

    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private(pki / "sa.key", key_pem(sa))
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def issue_client(pki: Path, stem: str, cn: str, org: str | None = None) -> None:
    """A client certificate from the lab's cluster CA, written as ``<stem>.crt`` and ``<stem>.key``."""
    ca = CertificateAuthority.load(pki / "ca.crt", pki / "ca.key")
    write_pair(pki, stem, *ca.issue(cn, org=org, client=True))


def issue_server(pki: Path, stem: str, cn: str, *, dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> None:
    """A server certificate from the lab's cluster CA, written as ``<stem>.crt`` and ``<stem>.key``."""
    ca = CertificateAuthority.load(pki / "ca.crt", pki / "ca.key")
    write_pair(pki, stem, *ca.issue(cn, server=True, dns_names=dns_names, ips=ips))


def issue_node_api_server(pki: Path, node: str) -> tuple[Path, Path]:
    """The serving certificate of a node agent's node API, from the cluster CA: DNS name = the node's name
    (the subresource API checks it), valid on loopback. Written as ``node-api-<node>.crt``/``.key``."""
    ca = CertificateAuthority.load(pki / "ca.crt", pki / "ca.key")
    serving = ca.issue(node, server=True, dns_names=(node,), ips=("127.0.0.1", "::1"))
    return write_pair(pki, f"node-api-{node}", *serving)
