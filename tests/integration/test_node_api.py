"""The agent's node API: mutual TLS with only the subresource API's identity, and what happens when it is away."""

from __future__ import annotations

import json
import ssl
import urllib.parse

import pytest
from agent_process import AgentLab, wait_long
from virtops.api.nodes import NodeApiClient, NodeApiCredentials
from virtops.api.status import StatusError


@pytest.fixture
def node(lab, kubevirt_api, namespace):
    harness = AgentLab(lab, kubevirt_api, namespace)
    yield harness
    harness.close()


def published_url(node: AgentLab) -> str:
    return wait_long(lambda: node.node_api.address(node.node) if _has_address(node) else None)


def _has_address(node: AgentLab) -> bool:
    try:
        node.node_api.address(node.node)
        return True
    except StatusError:
        return False


def call(url: str, context: ssl.SSLContext, path: str = "/v1/namespaces/x/virtualmachineinstances/y/pause"):
    import http.client

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=30)
    try:
        conn.request("PUT", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def client_context(node: AgentLab, cert: str | None, key: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(node.plane.state_dir / "pki" / "ca.crt"))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def test_only_the_subresource_apis_identity_is_served(node) -> None:
    node.start_agent()
    url = published_url(node)
    assert url.startswith("https://127.0.0.1:")
    pki = node.plane.state_dir / "pki"
    # The subresource API's own certificate: served (this VMI is not on the node: KubeVirt's 404).
    api = node.plane.node_api_client_files()
    code, status = call(url, client_context(node, api["cert"], api["key"]))
    assert (code, status["reason"]) == (404, "NotFound")
    # A certificate of the same CA with another name (the lab admin's, system:masters): refused.
    code, status = call(url, client_context(node, str(pki / "admin.crt"), str(pki / "admin.key")))
    assert (code, status["reason"]) == (403, "Forbidden")
    assert "virtops-lab-admin" in status["message"]
    # No certificate, or one of another CA (the front proxy's): no TLS connection at all.
    for cert, key in ((None, None), (str(pki / "front-proxy-client.crt"), str(pki / "front-proxy-client.key"))):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            call(url, client_context(node, cert, key))


def test_the_api_refuses_a_node_api_whose_certificate_names_another_node(node, lab) -> None:
    node.start_agent()
    wait_long(lambda: _has_address(node))
    node.create_vmis("wrongnode")
    wait_long(lambda: node.phase("wrongnode") == "Running")
    vmi = node.vmi("wrongnode")
    vmi["status"]["nodeName"] = "impostor"  # this agent's address would answer for a node it is not
    files = node.plane.node_api_client_files()
    client = NodeApiClient(node.admin, NodeApiCredentials(files["cert"], files["key"], files["ca"]))
    client.address = lambda _node: node.node_api.address(node.node)  # type: ignore[method-assign]
    with pytest.raises(StatusError) as caught:
        client.put(vmi, "pause")
    assert caught.value.code == 500
    assert "is not node impostor's" in caught.value.message
    assert node.libvirt_state("wrongnode") == "running"


def test_pause_with_the_agent_down_is_an_error_and_changes_nothing(node) -> None:
    agent = node.start_agent()
    node.create_vmis("lonely")
    wait_long(lambda: node.phase("lonely") == "Running")
    # A pause and an unpause first: the client now holds the agent's address and an idle keep-alive connection.
    node.set_power("lonely", "paused")
    node.set_power("lonely", "running")
    assert node.libvirt_state("lonely") == "running"
    agent.kill()  # its Lease still names its address: the node is not yet known to be dead
    with pytest.raises(StatusError) as caught:
        node.set_power("lonely", "paused")
    assert caught.value.code == 500
    assert caught.value.reason == "InternalError"
    assert f"the node agent of {node.node} did not answer" in caught.value.message
    assert node.libvirt_state("lonely") == "running"
    assert node.condition("lonely", "Paused") is None
    # Back again on a new port: the client's kept address and connection are dead, it reads the Lease again and
    # the pause happens for real.
    node.start_agent()
    node.set_power("lonely", "paused")
    assert node.libvirt_state("lonely") == "paused"
    wait_long(lambda: node.condition("lonely", "Paused"))
