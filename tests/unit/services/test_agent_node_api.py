"""The node API's decisions without libvirt: the domain's real state decides, with KubeVirt's 409 texts."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from virtops.agent.config import ConfigError, resolve
from virtops.agent.nodeapi import AgentNodeOps, power_op
from virtops.api.status import StatusError

RUNNING = SimpleNamespace(phase="Running", paused=False)
PAUSED = SimpleNamespace(phase="Running", paused=True)
OFF = SimpleNamespace(phase="Succeeded", paused=False)


def conflict(why: str) -> str:
    return f'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "v": {why}'


@pytest.mark.parametrize(("state", "op", "why"), [
    (PAUSED, "pause", "VMI is already paused"),
    (OFF, "pause", "VM is not running"),
    (None, "pause", "VM is not running"),
    (RUNNING, "unpause", "VMI is not paused"),
    (None, "unpause", "VMI is not running"),
])
def test_the_domain_says_no(state, op, why) -> None:
    acted = []
    with pytest.raises(StatusError) as caught:
        power_op(lambda: state, lambda: acted.append(op) or True, op, "v")
    assert (caught.value.code, caught.value.message) == (409, conflict(why))
    assert acted == []


def test_a_domain_that_changed_between_look_and_act_is_answered_as_it_is_now() -> None:
    states = iter([RUNNING, OFF])
    with pytest.raises(StatusError) as caught:
        power_op(lambda: next(states), lambda: False, "pause", "v")
    assert caught.value.message == conflict("VM is not running")


def test_pause_acts_once() -> None:
    acted = []
    power_op(lambda: RUNNING, lambda: acted.append("pause") or True, "pause", "v")
    assert acted == ["pause"]


class LibvirtdAway:
    """The agent as the node API sees it, while libvirtd is down (killed, restarting)."""

    node_name = "n"
    queue = SimpleNamespace(add=lambda key: None)
    hypervisor = SimpleNamespace()  # never reached: owns() asks libvirt first

    def cached(self, key):
        return {"metadata": {"namespace": key[0], "name": key[1], "uid": "u"}, "status": {"nodeName": "n"}}

    def owns(self, dname, uid):
        libvirt = pytest.importorskip("libvirt")
        raise libvirt.libvirtError("Failed to connect socket to '/var/run/libvirt/libvirt-sock': Connection refused")


def test_libvirtd_away_is_a_500_that_says_so_and_one_log_line(caplog) -> None:
    with pytest.raises(StatusError) as caught:
        AgentNodeOps(LibvirtdAway()).power("ns", "v", None, "pause")
    assert caught.value.code == 500
    assert "libvirt on node n: Failed to connect socket" in caught.value.message
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("ERROR", None)]


BASE = {"kubeconfig": "k", "node_name": "n"}


def test_the_node_api_needs_its_three_files() -> None:
    with pytest.raises(ConfigError, match="node_api_tls_cert_file: required with node_api_address"):
        resolve(dict(BASE, node_api_address="127.0.0.1:0"), {})
    full = dict(BASE, node_api_address="127.0.0.1:0", node_api_tls_cert_file="c", node_api_tls_key_file="k",
                node_api_client_ca_file="ca")
    assert resolve(full, {}).node_api_client_name == "virtops-subresource-api"


def test_the_node_api_listens_on_loopback_only() -> None:
    with pytest.raises(ConfigError, match="node_api_address: '0.0.0.0' is not a loopback address"):
        resolve(dict(BASE, node_api_address="0.0.0.0:8186", node_api_tls_cert_file="c", node_api_tls_key_file="k",
                     node_api_client_ca_file="ca"), {})


class GuestAgent:
    """The hypervisor's guest agent calls as a guest answers them (None: no answer)."""

    def __init__(self, state, users=None) -> None:
        self.current = state
        self.users = users

    def state(self, _name):
        return self.current

    def guest_users(self, _name):
        return self.users


def node_ops(hypervisor):
    from virtops.agent.nodeapi import AgentNodeOps

    vmi = {"metadata": {"uid": "u1"}, "status": {"nodeName": "n"}}
    agent = SimpleNamespace(node_name="n", hypervisor=hypervisor, cached=lambda _key: vmi,
                            owns=lambda _dom, _uid: True)
    return AgentNodeOps(agent)


def test_userlist_is_kubevirts_list_and_a_silent_or_frozen_guest_an_error() -> None:
    ops = node_ops(GuestAgent(RUNNING, users=[{"userName": "debian"}]))
    assert ops.guest_info("ns", "v", "u1", "userlist") == {"metadata": {}, "items": [{"userName": "debian"}]}
    for state, code, text in ((RUNNING, 500, "Internal error occurred: the guest agent of v did not answer"),
                              (PAUSED, 409, conflict("VMI is paused")), (OFF, 409, conflict("VMI is not running"))):
        with pytest.raises(StatusError) as caught:
            node_ops(GuestAgent(state)).guest_info("ns", "v", "u1", "userlist")
        assert (caught.value.code, caught.value.message) == (code, text)
