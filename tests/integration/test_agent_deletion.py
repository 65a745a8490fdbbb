"""Deleting VMIs whose guests ignore the ACPI power button must not hold the agent's workers.

KubeVirt's semantics: the button is pressed once, the guest has spec.terminationGracePeriodSeconds to power
off, then the domain is destroyed. A diskless VMI never powers off by itself (its firmware finds nothing to
boot and ignores the button), so each deletion below waits for its whole grace period. With a single worker,
a pause of another VMI asked for meanwhile must still be applied while those deletions wait.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from test_agent_lifecycle import Harness, wait_for  # noqa: E402
from virtops.agent.agent import NodeAgent  # noqa: E402
from virtops.agent.hypervisor import LibvirtHypervisor  # noqa: E402
from virtops.agent.libvirt_events import DomainEventWatcher  # noqa: E402

GRACE_SECONDS = 25
DELETED = ("gone-1", "gone-2", "gone-3")


@pytest.fixture
def harness(lab, kubevirt_api, namespace):
    h = Harness(lab, kubevirt_api, namespace)
    yield h
    h.close()


def start_single_worker_agent(h: Harness) -> NodeAgent:
    agent = NodeAgent(h.client, h.node, LibvirtHypervisor(), capacity={"cpu": "2", "memory": "2Gi"},
                      state_dir=h.state_dir, image_cache=h.state_dir / "images", lease_namespace=h.namespace,
                      heartbeat_seconds=1, resync_seconds=1, watch_timeout_seconds=5, workers=1,
                      domain_events=DomainEventWatcher())
    agent.start()
    h.agents.append(agent)
    return agent


def test_waiting_deletions_do_not_hold_the_only_worker(harness):
    start_single_worker_agent(harness)
    for name in DELETED:
        harness.create_vmi(name, terminationGracePeriodSeconds=GRACE_SECONDS)
    harness.create_vmi("other")
    for name in (*DELETED, "other"):
        wait_for(f"{name} Running", lambda name=name: harness.phase(name) == "Running", attempts=600)

    for name in DELETED:
        harness.kubectl("-n", harness.namespace, "delete", "vmi", name, "--wait=false")
    deleted_at = time.monotonic()
    # The one worker has pressed every power button (the agent records it as an event for each VMI).
    for name in DELETED:
        wait_for(f"{name} ShuttingDown", lambda name=name: any(
            e[0] == "ShuttingDown" for e in harness.events(name)), attempts=600)

    harness.set_power("other", "paused")
    wait_for("Paused condition of the other VMI", lambda: harness.condition("other", "Paused"), attempts=600)
    # Ordering, not speed: the pause was applied while every deletion was still inside its grace period.
    for name in DELETED:
        assert harness.libvirt_state(name) == "running", name  # the guest ignored the button
        assert harness.vmi(name) is not None, name  # the finalizer still holds the object
    assert harness.libvirt_state("other") == "paused"

    # Each deleted guest is destroyed at the end of its grace period, not before.
    last_seen_running: dict[str, float] = {}

    def all_gone() -> bool:
        for name in DELETED:
            if harness.libvirt_state(name) is not None:
                last_seen_running[name] = time.monotonic()
        return all(harness.vmi(n) is None and harness.libvirt_state(n) is None for n in DELETED)

    wait_for("deleted VMIs and domains gone", all_gone, attempts=1200)
    for name in DELETED:
        # deletionTimestamp has whole seconds: the deadline may come up to a second before grace has passed.
        assert last_seen_running.get(name, deleted_at) - deleted_at >= GRACE_SECONDS - 2, name
    assert harness.hv.list_names(f"{harness.namespace}_") == [f"{harness.namespace}_other"]
    assert harness.phase("other") == "Running"
