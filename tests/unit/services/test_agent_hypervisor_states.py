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
