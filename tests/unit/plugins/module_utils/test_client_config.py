"""module_utils.client: kubeconfig resolution with kubernetes.core's precedence."""

from __future__ import annotations

import base64

import pytest
import yaml
from ansible_collections.virtops.kubevirt.plugins.module_utils.client import resolve_settings, resource_path
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import DefinitionError


def kubeconfig(server="https://127.0.0.1:6443", namespace=None, **user):
    ctx = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    return {
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "certificate-authority-data": base64.b64encode(b"CA").decode()}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": ctx}, {"name": "other", "context": dict(ctx, namespace="o")}],
        "current-context": "ctx",
    }


def params(**kw):
    return dict(kw)


def test_kubeconfig_dict_with_certificate_data_keeps_it_in_memory():
    settings = resolve_settings(params(kubeconfig=kubeconfig(namespace="team",
                                                             **{"client-key-data": base64.b64encode(b"KEY").decode()})))
    assert settings.host == "https://127.0.0.1:6443"
    assert settings.namespace == "team"
    assert (settings.ca_data, settings.key_data) == (b"CA", b"KEY")
    assert (settings.ca_file, settings.key_file) == (None, None)


def test_context_option_selects_another_context():
    assert resolve_settings(params(kubeconfig=kubeconfig(), context="other")).namespace == "o"


def test_options_override_the_kubeconfig(tmp_path):
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig(token="from-file")))
    settings = resolve_settings(params(
        kubeconfig=str(path), host="https://api.example.test:6443", api_key="from-option",
        validate_certs=False, impersonate_groups=["a", "b"],
    ))
    assert (settings.host, settings.token, settings.verify) == ("https://api.example.test:6443", "from-option", False)
    assert settings.impersonate_groups == ["a", "b"]


def test_kubeconfig_env_list_is_merged_first_wins(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text(yaml.safe_dump({"current-context": "ctx", "contexts": [], "clusters": [], "users": []}))
    second.write_text(yaml.safe_dump(dict(kubeconfig(token="t"), **{"current-context": "other"})))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    settings = resolve_settings(params())
    assert settings.namespace is None  # current-context 'ctx' from the first file
    assert settings.token == "t"


def test_missing_kubeconfig_file_names_the_option():
    with pytest.raises(DefinitionError, match="kubeconfig: file /nope does not exist"):
        resolve_settings(params(kubeconfig="/nope"))


def test_unknown_context_is_named():
    with pytest.raises(DefinitionError, match="no context named 'missing'"):
        resolve_settings(params(kubeconfig=kubeconfig(), context="missing"))


def test_resource_paths():
    assert resource_path("kubevirt.io/v1", "virtualmachineinstances", "ns", "a") == (
        "/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstances/a"
    )
    assert resource_path("v1", "events", "ns") == "/api/v1/namespaces/ns/events"
    assert resource_path("subresources.kubevirt.io/v1", "virtualmachineinstances", "ns", "a", "pause").endswith(
        "/virtualmachineinstances/a/pause"
    )
