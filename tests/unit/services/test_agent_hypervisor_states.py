"""libvirt domain states -> VMI phases, with a fake domain at the libvirt boundary (no guest can crash on cue)."""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from virtops.agent.hypervisor import LibvirtHypervisor  # noqa: E402


class FakeDomain:
    def __init__(self, state: int, reason: int = 0) -> None:
        self._state = (state, reason)

    def state(self) -> list[int]:
        return list(self._state)


@pytest.mark.parametrize("state, reason, phase, paused", [
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED, "Running", False),
    (libvirt.VIR_DOMAIN_BLOCKED, 0, "Running", False),
    (libvirt.VIR_DOMAIN_PMSUSPENDED, 0, "Running", False),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, "Running", True),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN, "Succeeded", False),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED, "Failed", False),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED, "Failed", False),
    (libvirt.VIR_DOMAIN_CRASHED, 0, "Failed", False),
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN, None, False),
])
def test_domain_states_map_to_vmi_phases(monkeypatch, state, reason, phase, paused):
    hv = LibvirtHypervisor()
    monkeypatch.setattr(hv, "_lookup", lambda name: FakeDomain(state, reason))
    result = hv.state("ns_vm")
    assert (result.phase, result.paused) == (phase, paused)


def test_missing_domain_has_no_state(monkeypatch):
    hv = LibvirtHypervisor()
    monkeypatch.setattr(hv, "_lookup", lambda name: None)
    assert hv.state("ns_vm") is None
    assert hv.pause("ns_vm") is False
    assert hv.resume("ns_vm") is False
    assert hv.stop("ns_vm", 1) is False


class AgentDomain(FakeDomain):
    """A running domain whose guest agent answers (or not) libvirt's interfaceAddresses."""

    def __init__(self, answer, state: int = libvirt.VIR_DOMAIN_RUNNING) -> None:
        super().__init__(state)
        self.answer = answer
        self.asked = 0

    def ID(self) -> int:  # noqa: N802 - libvirt's name
        return 7

    def agentSetResponseTimeout(self, seconds: int) -> int:  # noqa: N802 - libvirt's name
        return 0

    def interfaceAddresses(self, source: int) -> dict:  # noqa: N802 - libvirt's name
        assert source == libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


ANSWER = {"eth0": {"hwaddr": "52:54:00:AB:CD:EF", "addrs": [
    {"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": "10.0.2.15", "prefix": 24},
    {"type": libvirt.VIR_IP_ADDR_TYPE_IPV6, "addr": "fec0::1", "prefix": 64}]},
    "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"type": libvirt.VIR_IP_ADDR_TYPE_IPV4, "addr": "127.0.0.1",
                                                     "prefix": 8}]}}


def test_guest_interfaces_come_from_the_guest_agent_and_are_reused_briefly(monkeypatch):
    hv = LibvirtHypervisor()
    dom = AgentDomain(ANSWER)
    monkeypatch.setattr(hv, "_lookup", lambda name: dom)
    first = hv.guest_interfaces("ns_vm")
    eth0 = next(i for i in first if i.name == "eth0")
    assert (eth0.mac, eth0.ipv4, eth0.ipv6) == ("52:54:00:ab:cd:ef", ("10.0.2.15",), ("fec0::1",))
    assert hv.guest_interfaces("ns_vm") == first and dom.asked == 1


def test_no_guest_agent_answer_is_none_and_is_asked_again(monkeypatch):
    hv = LibvirtHypervisor()
    dom = AgentDomain(libvirt.libvirtError("QEMU guest agent is not connected"))
    monkeypatch.setattr(hv, "_lookup", lambda name: dom)
    assert hv.guest_interfaces("ns_vm") is None
    assert hv.guest_interfaces("ns_vm") is None and dom.asked == 2
    paused = AgentDomain(ANSWER, state=libvirt.VIR_DOMAIN_PAUSED)
    monkeypatch.setattr(hv, "_lookup", lambda name: paused)
    assert hv.guest_interfaces("ns_vm") is None and paused.asked == 0  # a frozen guest is not asked


class XmlDomain(FakeDomain):
    def __init__(self, xml: str) -> None:
        super().__init__(libvirt.VIR_DOMAIN_RUNNING)
        self.xml = xml

    def XMLDesc(self, flags: int) -> str:  # noqa: N802 - libvirt's name
        return self.xml


@pytest.mark.parametrize("state, connected", [("connected", True), ("disconnected", False)])
def test_guest_agent_connected_follows_the_channel_state(monkeypatch, state, connected):
    hv = LibvirtHypervisor()
    xml = (f"<domain><devices><channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' "
           f"state='{state}'/></channel></devices></domain>")
    monkeypatch.setattr(hv, "_lookup", lambda name: XmlDomain(xml))
    assert hv.guest_agent_connected("ns_vm") is connected
