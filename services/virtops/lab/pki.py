"""The lab's own certificates: a cluster CA, a front-proxy CA and their leaves.

ECDSA P-256 keys keep generation instant; the service-account key is RSA
because every Kubernetes client and verifier accepts RS256.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


class CertificateAuthority:
    def __init__(self, cn: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(_name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        cn: str,
        *,
        org: str | None = None,
        server: bool = False,
        client: bool = False,
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and key, both PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn, org))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    @classmethod
    def load(cls, crt: Path, key: Path) -> CertificateAuthority:
        """The CA that write_pki left in files, to issue more leaves later."""
        ca = cls.__new__(cls)
        ca.cert = x509.load_pem_x509_certificate(crt.read_bytes())
        ca.key = serialization.load_pem_private_key(key.read_bytes(), password=None)
        return ca

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def write_pki(pki: Path) -> None:
    """Write every certificate and key the lab's control plane needs."""
    pki.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = CertificateAuthority("virtops-lab-ca")
    front = CertificateAuthority("virtops-lab-front-proxy-ca")
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    _write_private(pki / "ca.key", _key_pem(ca.key))
    (pki / "front-proxy-ca.crt").write_bytes(front.cert_pem)
    _write_private(pki / "front-proxy-ca.key", _key_pem(front.key))

    crt, key = ca.issue(
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
    )
    (pki / "apiserver.crt").write_bytes(crt)
    _write_private(pki / "apiserver.key", key)

    crt, key = ca.issue("virtops-lab-admin", org="system:masters", client=True)
    (pki / "admin.crt").write_bytes(crt)
    _write_private(pki / "admin.key", key)

    # The bootstrap RBAC policy already binds this user to the controllers' roles.
    crt, key = ca.issue("system:kube-controller-manager", client=True)
    (pki / "controller-manager.crt").write_bytes(crt)
    _write_private(pki / "controller-manager.key", key)

    # kube-apiserver presents this to aggregated API servers (--requestheader-allowed-names).
    crt, key = front.issue("front-proxy-client", client=True)
    (pki / "front-proxy-client.crt").write_bytes(crt)
    _write_private(pki / "front-proxy-client.key", key)

    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(pki / "sa.key", _key_pem(sa))
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def issue_client(pki: Path, stem: str, cn: str, org: str | None = None) -> None:
    """A client certificate from the lab's cluster CA, written as ``<stem>.crt`` and ``<stem>.key``."""
    ca = CertificateAuthority.load(pki / "ca.crt", pki / "ca.key")
    crt, key = ca.issue(cn, org=org, client=True)
    (pki / f"{stem}.crt").write_bytes(crt)
    _write_private(pki / f"{stem}.key", key)
