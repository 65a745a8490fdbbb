"""The lab's per-agent identities (client certificates from its CA) and its restart of one component."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from virtops.lab import ControlPlane, pki
from virtops.lab.control_plane import LabError


def test_an_agent_certificate_names_the_node_and_its_group_and_is_signed_by_the_lab_ca(tmp_path):
    pki.write_pki(tmp_path)
    pki.issue_client(tmp_path, "agent-host-a", "system:virtops:node:host-a", org="virtops:nodes")
    cert = x509.load_pem_x509_certificate((tmp_path / "agent-host-a.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:virtops:node:host-a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "virtops:nodes"
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (tmp_path / "agent-host-a.key").stat().st_mode & 0o777 == 0o600


def test_restart_and_identities_need_a_running_lab(tmp_path):
    plane = ControlPlane("not-up", tmp_path / "lab")
    with pytest.raises(LabError, match="kube-apiserver is not running in lab 'not-up'"):
        plane.restart("kube-apiserver")
    with pytest.raises(LabError, match="lab 'not-up' is not up"):
        plane.agent_kubeconfig("host-a")
