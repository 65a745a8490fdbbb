"""While a running guest's agent has not told an address yet the agent looks again every ADDRESS_POLL_SECONDS:
one timer per VMI, however many reconciles (watch events of its own status writes, libvirt events) happen
meanwhile; a guest without a guest agent is not polled (libvirt's agent lifecycle event queues it)."""

from __future__ import annotations

import threading

from virtops.agent.agent import NodeAgent, now_rfc3339
from virtops.agent.domain import status_interfaces

MAC = "52:54:00:00:00:01"


class BootingGuest:
    """The hypervisor boundary (the only fake): a running domain whose guest agent is connected (or not, with
    ``agent=False``) and has told nothing yet."""

    def __init__(self, agent: bool = True) -> None:
        self.agent = agent

    def macs(self, name):
        return [MAC]

    def guest_agent_connected(self, name):
        return self.agent

    def guest_interfaces(self, name):
        return None

    def guest_os_info(self, name):
        return None


class NoClient:
    """The status below is already what the agent would write: the API is never called."""


def timers() -> int:
    return sum(isinstance(t, threading.Timer) and t.is_alive() for t in threading.enumerate())


def running_vmi(agent: bool) -> dict:
    """A VMI whose status is already what the agent would write for the guest (the API is never called)."""
    now = now_rfc3339()
    conditions = [{"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": now}]
    if agent:
        conditions.append({"type": "AgentConnected", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": now})
    return {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "1"}, "spec": {},
            "status": {"phase": "Running", "nodeName": "node-a", "conditions": conditions,
                       "interfaces": status_interfaces(["default"], [MAC], None, []),
                       "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": now}]}}


def look_again_timers(tmp_path, agent: bool) -> int:
    """Timers left by three reconciles of the same running VMI in quick succession."""
    node = NodeAgent(NoClient(), "node-a", BootingGuest(agent), state_dir=tmp_path, image_cache=tmp_path,
                     domain_type="qemu")
    vmi = running_vmi(agent)
    before = timers()
    try:
        for _try in range(3):
            node._write_running(vmi, "ns_a", paused=False)
        return timers() - before
    finally:
        node.queue.close()  # a pending timer's add is then a no-op


def test_one_look_again_timer_per_vmi_not_one_per_reconcile(tmp_path):
    assert look_again_timers(tmp_path, agent=True) == 1


def test_a_guest_without_a_guest_agent_is_not_polled(tmp_path):
    assert look_again_timers(tmp_path, agent=False) == 0
