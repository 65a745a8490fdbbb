"""The services' client loads kubeconfig credentials into memory and leaves no key file behind."""

from __future__ import annotations

import base64
import ssl
import tempfile

import pytest
import yaml
from virtops.kube import KubeClient
from virtops.lab import pki


def _kubeconfig(tmp_path, *, embedded: bool, key: str = "admin.key") -> str:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir(exist_ok=True)
    pki.write_pki(pki_dir)
    if embedded:
        def data(name):
            return base64.b64encode((pki_dir / name).read_bytes()).decode()
        cluster = {"server": "https://127.0.0.1:6443", "certificate-authority-data": data("ca.crt")}
        user = {"client-certificate-data": data("admin.crt"), "client-key-data": data(key)}
    else:
        cluster = {"server": "https://127.0.0.1:6443", "certificate-authority": str(pki_dir / "ca.crt")}
        user = {"client-certificate": str(pki_dir / "admin.crt"), "client-key": str(pki_dir / key)}
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "admin"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _ca_names(client: KubeClient) -> list[str]:
    context = client.pool.connection_pool_kw["ssl_context"]
    return [dict(rdn[0] for rdn in cert["subject"])["commonName"] for cert in context.get_ca_certs()]


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temp directory, watched: a SIGKILLed agent used to leave its decoded key here."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_embedded_key_material_is_loaded_and_no_file_of_it_remains(tmp_path, scratch):
    client = KubeClient.from_kubeconfig(_kubeconfig(tmp_path, embedded=True))
    assert _ca_names(client) == ["virtops-lab-ca"]
    assert list(scratch.iterdir()) == []


def test_an_embedded_key_that_does_not_match_the_certificate_fails_and_leaves_nothing(tmp_path, scratch):
    with pytest.raises(ssl.SSLError):
        KubeClient.from_kubeconfig(_kubeconfig(tmp_path, embedded=True, key="controller-manager.key"))
    assert list(scratch.iterdir()) == []


def test_credentials_given_as_paths_are_read_from_their_files(tmp_path):
    assert _ca_names(KubeClient.from_kubeconfig(_kubeconfig(tmp_path, embedded=False))) == ["virtops-lab-ca"]
    with pytest.raises(ssl.SSLError):
        KubeClient.from_kubeconfig(_kubeconfig(tmp_path, embedded=False, key="controller-manager.key"))
