"""Faults under a real node agent process: SIGKILL mid-start, a VMI deleted while it is down,
kube-apiserver restarted under it, libvirtd restarted under it.

The agents run with a resync period of an hour: whatever they notice here, they notice through the
VMI watch and libvirt's lifecycle events (the periodic resync is only a safety net). Every wait is a
bounded count of tries. The libvirtd test comes last: libvirtd is shared with whatever else runs on this
host, and its restart is kept short.
"""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from agent_process import AgentLab, metric, restart_libvirtd, wait_long  # noqa: E402

NO_RESYNC = "--resync-seconds=3600"


@pytest.fixture
def node(lab, kubevirt_api, namespace):
    agent_lab = AgentLab(lab, kubevirt_api, namespace)
    yield agent_lab
    agent_lab.close()


def running_transitions(node: AgentLab, name: str) -> list[str]:
    stamps = ((node.vmi(name) or {}).get("status") or {}).get("phaseTransitionTimestamps") or []
    return [t["phase"] for t in stamps]


def test_agent_killed_while_ten_vmis_start_runs_each_exactly_once(node):
    names = [f"vm{i}" for i in range(10)]
    agent = node.start_agent(NO_RESYNC)
    node.create_vmis(*names)
    # SIGKILL as soon as a few qemu processes run: the others are queued, defining or starting.
    wait_long(lambda: len(node.domain_ids()) >= 3, attempts=3000, delay=0.02)
    agent.kill()
    before = node.domain_ids()
    pids = {name: node.qemu_pid(name) for name in names}
    assert 3 <= len(before)

    node.start_agent(NO_RESYNC)
    wait_long(lambda: all(node.phase(n) == "Running" for n in names))

    after = node.domain_ids()
    assert sorted(after) == sorted(node.domain(n) for n in names)  # no orphan, none missing (names are unique)
    for domain, domain_id in before.items():
        assert after[domain] == domain_id, f"{domain} was restarted"
    for name in names:
        if pids[name] is not None:
            assert node.qemu_pid(name) == pids[name], f"{name}'s qemu was replaced"
        assert running_transitions(node, name) == ["Running"]
        assert node.events(name).count("Started") <= 1


def test_vmi_deleted_while_the_agent_is_down_loses_its_domain_when_it_returns(node):
    agent = node.start_agent(NO_RESYNC)
    node.create_vmis("doomed", "kept")
    wait_long(lambda: node.phase("doomed") == node.phase("kept") == "Running")
    kept_id = node.domain_ids()[node.domain("kept")]
    agent.kill()

    node.delete("doomed")
    # The agent's finalizer holds the VMI: nothing else may decide its domain is gone.
    assert node.vmi("doomed")["metadata"].get("deletionTimestamp")
    assert node.libvirt_state("doomed") == "running"

    node.start_agent(NO_RESYNC)
    wait_long(lambda: node.vmi("doomed") is None and node.libvirt_state("doomed") is None)
    assert node.domain_ids() == {node.domain("kept"): kept_id}
    assert node.phase("kept") == "Running"


def test_agent_follows_a_kube_apiserver_restart(node):
    node.start_agent(NO_RESYNC)
    node.create_vmis("steady", guests=("quitter",))
    wait_long(lambda: node.phase("steady") == node.phase("quitter") == "Running")
    steady_id = node.domain_ids()[node.domain("steady")]
    node.wait_booted("quitter")  # the API server is down only as long as the restart takes

    # While the API server is down the guest powers off: the agent sees it in libvirt but cannot write
    # status until the API is back; it must neither forget nor give up.
    node.plane.restart("kube-apiserver", while_down=lambda: node.power_off_guest("quitter"))

    wait_long(lambda: node.phase("quitter") == "Succeeded")
    wait_long(lambda: node.libvirt_state("quitter") is None)
    # Right after the restart: a new VMI starts, an old one pauses and unpauses, is deleted. The agent
    # re-listed and watches again.
    node.create_vmis("after")
    node.set_power("steady", "paused")
    wait_long(lambda: node.phase("after") == "Running")
    wait_long(lambda: (node.condition("steady", "Paused") or {}).get("status") == "True")
    assert node.libvirt_state("steady") == "paused"
    node.set_power("steady", "running")
    wait_long(lambda: node.condition("steady", "Paused") is None)
    assert node.libvirt_state("steady") == "running"
    assert node.domain_ids()[node.domain("steady")] == steady_id
    node.delete("after", "steady")
    wait_long(lambda: node.vmi("after") is None and node.vmi("steady") is None)
    assert node.domain_ids() == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="restarting the host's libvirtd needs root")
def test_agent_follows_a_libvirtd_restart(node):
    """Last in this file: libvirtd is shared by everything on the host; the restart takes about a second."""
    agent = node.start_agent(NO_RESYNC)
    node.create_vmis("survivor", guests=("quitter",))
    wait_long(lambda: node.phase("survivor") == node.phase("quitter") == "Running")
    ids = node.domain_ids()

    restart_libvirtd()
    node.reconnect_libvirt()
    assert node.domain_ids() == ids  # libvirtd's restart does not touch its guests

    # The agent subscribed to lifecycle events again: a guest that powers off is noticed (no resync here).
    wait_long(lambda: (metric(node.http("/metrics")[1], "virtops_agent_libvirt_connections_total") or 0) >= 2)
    node.power_off_guest("quitter")
    wait_long(lambda: node.phase("quitter") == "Succeeded")
    # Its libvirt calls work again: pause, then delete (from paused).
    node.set_power("survivor", "paused")
    wait_long(lambda: (node.condition("survivor", "Paused") or {}).get("status") == "True")
    assert node.libvirt_state("survivor") == "paused"
    node.delete("survivor", "quitter")
    wait_long(lambda: node.vmi("survivor") is None and node.vmi("quitter") is None)
    assert node.domain_ids() == {}
    assert agent.proc.poll() is None
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit() == 0
