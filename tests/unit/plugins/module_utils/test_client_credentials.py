"""The modules' client and its credentials: key material from a kubeconfig is loaded into memory and never left in
a file (a module Ansible kills used to leave the decoded key in the temp directory, removed only at a clean exit);
the kubeconfig and proxy options are never logged, and in the task result only the kubeconfig's secrets are hidden."""

from __future__ import annotations

import base64
import io
import json
import ssl
import tempfile
from contextlib import redirect_stdout

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_spec
from ansible_collections.virtops.kubevirt.plugins.module_utils.client import KubeClient, resolve_settings
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import run
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import DefinitionError
from virtops.pki import CertificateAuthority


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def embedded_kubeconfig(*, mismatched_key: bool = False, token: str | None = None) -> dict:
    ca = CertificateAuthority("module-test-ca")
    cert, key = ca.issue("module-user", client=True)
    if mismatched_key:
        key = ca.issue("someone-else", client=True)[1]
    user = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
    if token:
        user = {"token": token}
    return {"apiVersion": "v1", "kind": "Config", "current-context": "lab",
            "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:6443",
                                                     "certificate-authority-data": b64(ca.cert_pem)}}],
            "users": [{"name": "admin", "user": user}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "admin"}}]}


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temp directory, watched."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_embedded_key_material_is_loaded_into_memory_and_no_file_of_it_exists(scratch):
    client = KubeClient(resolve_settings({"kubeconfig": embedded_kubeconfig()}))
    context = client.pool.connection_pool_kw["ssl_context"]
    subjects = [dict(rdn[0] for rdn in cert["subject"])["commonName"] for cert in context.get_ca_certs()]
    assert subjects == ["module-test-ca"]
    assert list(scratch.iterdir()) == []  # while the module still runs: nothing a SIGKILL could leave behind


def test_an_embedded_key_that_does_not_match_fails_naming_the_options_and_leaves_nothing(scratch):
    with pytest.raises(DefinitionError, match="client_cert/client_key: cannot load"):
        KubeClient(resolve_settings({"kubeconfig": embedded_kubeconfig(mismatched_key=True)}))
    assert list(scratch.iterdir()) == []


def test_a_client_key_option_wins_over_the_kubeconfigs_embedded_key(tmp_path):
    ca = CertificateAuthority("other-ca")
    cert, key = ca.issue("file-user", client=True)
    (tmp_path / "u.crt").write_bytes(cert)
    (tmp_path / "u.key").write_bytes(key)
    settings = resolve_settings({"kubeconfig": embedded_kubeconfig(), "client_cert": str(tmp_path / "u.crt"),
                                 "client_key": str(tmp_path / "u.key")})
    assert (settings.cert_data, settings.key_data) == (None, None)
    assert isinstance(KubeClient(settings).pool.connection_pool_kw["ssl_context"], ssl.SSLContext)


def result_of(params: dict, returned: dict) -> dict:
    """A module's whole output through run(), as Ansible would receive it (the action makes no request)."""
    out = io.StringIO()
    with patch_module_args(params), redirect_stdout(out), pytest.raises(SystemExit):
        run(AnsibleModule(argument_spec=auth_spec()), lambda client: dict(returned, changed=False))
    return json.loads(out.getvalue())


def test_kubeconfig_and_proxy_are_no_log_and_only_the_secrets_are_hidden_in_the_result():
    spec = auth_spec()
    assert spec["kubeconfig"]["no_log"] is True and spec["proxy"]["no_log"] is True
    config = embedded_kubeconfig()
    key_data = config["users"][0]["user"]["client-key-data"]
    result = result_of({"kubeconfig": config, "proxy": "http://user:s3cret@proxy.example.test:3128"},
                       {"vmi": {"apiVersion": "kubevirt.io/v1", "metadata": {"name": "lab-admin"}}})
    text = json.dumps(result)
    assert key_data not in text and "s3cret" not in text
    # Ansible masks every string of a no_log dict wherever it appears; these are no secrets and stay.
    assert result["vmi"] == {"apiVersion": "kubevirt.io/v1", "metadata": {"name": "lab-admin"}}
    shown = result["invocation"]["module_args"]["kubeconfig"]
    assert shown["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert shown["users"][0]["user"]["client-key-data"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert result["invocation"]["module_args"]["proxy"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_a_token_in_the_kubeconfig_stays_hidden_even_where_another_option_repeats_it():
    config = embedded_kubeconfig(token="t0ken-value")
    result = result_of({"kubeconfig": config, "api_key": "t0ken-value"}, {"note": "uses t0ken-value"})
    assert "t0ken-value" not in json.dumps(result)
