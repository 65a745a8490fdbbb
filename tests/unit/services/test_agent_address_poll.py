"""While a running guest has no address yet the agent looks again every ADDRESS_POLL_SECONDS: one timer
per VMI, however many reconciles (watch events of its own status writes, libvirt events) happen meanwhile."""

from __future__ import annotations

import threading

from virtops.agent.agent import NodeAgent, now_rfc3339
from virtops.agent.domain import status_interfaces

MAC = "52:54:00:00:00:01"


class BootingGuest:
    """The hypervisor boundary (the only fake): a running domain whose guest has no agent (yet)."""

    def macs(self, name):
        return [MAC]

    def guest_agent_connected(self, name):
        return False

    def guest_interfaces(self, name):
        return None


class NoClient:
    """The status below is already what the agent would write: the API is never called."""


def timers() -> int:
    return sum(isinstance(t, threading.Timer) and t.is_alive() for t in threading.enumerate())


def test_one_look_again_timer_per_vmi_not_one_per_reconcile(tmp_path):
    node = NodeAgent(NoClient(), "node-a", BootingGuest(), state_dir=tmp_path, image_cache=tmp_path,
                     domain_type="qemu")
    ready = {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
    vmi = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "1"}, "spec": {},
           "status": {"phase": "Running", "nodeName": "node-a", "conditions": [ready],
                      "interfaces": status_interfaces(["default"], [MAC], None, []),
                      "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": now_rfc3339()}]}}
    before = timers()
    try:
        for _try in range(3):  # three reconciles of the same booting VMI in quick succession
            node._write_running(vmi, "ns_a", paused=False)
        assert timers() - before == 1
    finally:
        node.queue.close()  # the pending timer's add is then a no-op
