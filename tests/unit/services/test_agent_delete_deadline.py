"""Deleting a VMI without holding a worker: the power button once, a deadline, a requeue, then destroy.

The hypervisor and the API server are the fakes (one boundary each); the queue records what was queued.
"""

from __future__ import annotations

import datetime
import time

import libvirt
from virtops.agent.agent import FINALIZER, NODE_LABEL, NodeAgent
from virtops.agent.hypervisor import DomainMarker, DomainState, LibvirtHypervisor

RUNNING = DomainState(phase="Running", paused=False, libvirt_state="running", reason=1)
POWERED_OFF = DomainState(phase="Succeeded", paused=False, libvirt_state="shutoff", reason=1)


class Guest:
    """One domain of ours whose guest ignores the power button until told to power off."""

    def __init__(self, calls: list[str] | None = None) -> None:
        self.current: DomainState | None = RUNNING
        self.presses = 0
        self.stopped: list[float] = []
        self.calls = [] if calls is None else calls  # libvirt calls and API writes, in order

    def state(self, name):
        self.calls.append("state")
        return self.current

    def destroy(self, name):
        self.calls.append("destroy")
        existed = self.current is not None
        if existed:
            self.current = POWERED_OFF
        return existed

    def marker(self, name):
        return DomainMarker(namespace="ns", name="a", uid="u1", node="node-a") if self.current else None

    def shutdown(self, name):
        self.presses += 1
        return self.current is not None and self.current.phase == "Running"

    def stop(self, name, grace_seconds=0.0):
        self.calls.append("undefine")
        self.stopped.append(grace_seconds)
        self.current = None
        return True

    def list_names(self, prefix=""):
        return ["ns_a"] if self.current else []


class ApiServer:
    def __init__(self, calls: list[str]) -> None:
        self.patches: list[list[dict]] = []
        self.events: list[str] = []
        self.calls = calls

    def json_patch(self, path, ops):
        self.calls.append("patch")
        self.patches.append(ops)
        return {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "9", "finalizers": [],
                             "deletionTimestamp": "x"}}

    def create(self, path, body):
        self.events.append(body["reason"])
        return body


class Queue:
    def __init__(self) -> None:
        self.added: list[tuple] = []
        self.later: list[tuple[tuple, float]] = []

    def add(self, key):
        self.added.append(key)

    def add_after(self, key, seconds):
        self.later.append((key, seconds))


def deleted_vmi(grace: int = 25, deleted_ago: float = 0.0) -> dict:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=deleted_ago)
    return {"metadata": {"namespace": "ns", "name": "a", "uid": "u1", "resourceVersion": "5",
                         "labels": {NODE_LABEL: "node-a"}, "finalizers": [FINALIZER],
                         "deletionTimestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ")},
            "spec": {"terminationGracePeriodSeconds": grace}, "status": {"phase": "Running", "nodeName": "node-a"}}


def agent(tmp_path, vmi: dict) -> tuple[NodeAgent, Guest, ApiServer, Queue]:
    calls: list[str] = []
    guest, api, queue = Guest(calls), ApiServer(calls), Queue()
    node = NodeAgent(api, "node-a", guest, state_dir=tmp_path, image_cache=tmp_path, domain_type="qemu")
    node.queue = queue  # type: ignore[assignment]
    node._cache[("ns", "a")] = vmi
    return node, guest, api, queue


def removed_finalizer(api: ApiServer) -> bool:
    return any(op["path"] == "/metadata/finalizers" and op["value"] == [] for ops in api.patches for op in ops)


def test_deletion_presses_the_button_once_and_returns_with_the_vmi_queued_for_its_deadline(tmp_path):
    node, guest, api, queue = agent(tmp_path, deleted_vmi(grace=25))
    node.reconcile(("ns", "a"))
    assert (guest.presses, guest.stopped, removed_finalizer(api)) == (1, [], False)
    assert api.events == ["ShuttingDown"]
    [(key, seconds)] = queue.later
    assert key == ("ns", "a") and 25 <= seconds <= 25.2
    node.reconcile(("ns", "a"))  # a resync or an unrelated event before the deadline: nothing new
    assert (guest.presses, guest.stopped, len(queue.later), api.events) == (1, [], 1, ["ShuttingDown"])


def test_the_guest_powering_off_ends_the_deletion_before_the_deadline(tmp_path):
    node, guest, api, queue = agent(tmp_path, deleted_vmi(grace=25))
    node.reconcile(("ns", "a"))
    guest.current = POWERED_OFF
    node._on_domain_event("ns_a", "stopped")  # libvirt's lifecycle event
    assert queue.added == [("ns", "a")]
    node.reconcile(("ns", "a"))
    assert guest.stopped == [0] and removed_finalizer(api)
    assert ("ns", "a") not in node._deadlines


def test_at_the_deadline_the_domain_is_destroyed_and_the_finalizer_removed(tmp_path, monkeypatch):
    node, guest, api, queue = agent(tmp_path, deleted_vmi(grace=25))
    node.reconcile(("ns", "a"))
    later = node._deadlines[("ns", "a")][1] + 0.01
    monkeypatch.setattr("virtops.agent.agent.time.monotonic", lambda: later)
    node.reconcile(("ns", "a"))
    assert (guest.presses, guest.stopped) == (1, [0]) and removed_finalizer(api)


def test_a_deletion_timestamp_cut_to_its_second_still_gives_the_whole_grace_period(tmp_path):
    """The API server writes whole seconds: a VMI deleted at 12:00:00.9 says 12:00:00 (CI saw 4.56 s of 5)."""
    for ago in (0.0, 0.5, 0.99):
        node, _guest, _api, queue = agent(tmp_path, deleted_vmi(grace=5, deleted_ago=ago))
        node.reconcile(("ns", "a"))
        [(_key, seconds)] = queue.later
        remaining = node._deadlines[("ns", "a")][1] - time.monotonic()
        assert remaining >= 5 - ago - 0.01 and seconds >= remaining  # never before deletion + 5 s


def test_a_restarted_agent_takes_the_deadline_from_the_deletion_timestamp(tmp_path):
    node, guest, api, queue = agent(tmp_path, deleted_vmi(grace=20, deleted_ago=15))
    node.reconcile(("ns", "a"))
    [(_key, seconds)] = queue.later
    assert 4 < seconds <= 6.2  # what is left of the grace period, not a new one
    node, guest, api, queue = agent(tmp_path, deleted_vmi(grace=20, deleted_ago=30))
    node.reconcile(("ns", "a"))  # the grace period ended while no agent ran
    assert (guest.presses, guest.stopped, queue.later) == (0, [0], []) and removed_finalizer(api)


def test_no_grace_period_destroys_at_once(tmp_path):
    node, guest, api, _queue = agent(tmp_path, deleted_vmi(grace=0))
    node.reconcile(("ns", "a"))
    assert (guest.presses, guest.stopped) == (0, [0]) and removed_finalizer(api)


def test_the_vmi_is_released_once_its_guest_is_destroyed_and_the_definition_goes_after(tmp_path):
    # The VMI's way out is destroy, then the finalizer's release; the undefine and the files come after it.
    # With no grace left, libvirt is not asked how the guest is first.
    (tmp_path / "ns_a").mkdir()
    node, guest, _api, _queue = agent(tmp_path, deleted_vmi(grace=0))
    node.reconcile(("ns", "a"))
    assert guest.calls == ["destroy", "patch", "undefine"]
    assert not (tmp_path / "ns_a").exists()


def test_a_failed_release_still_undefines_and_the_retry_only_releases(tmp_path):
    node, guest, api, _queue = agent(tmp_path, deleted_vmi(grace=0))

    def away(path, ops):
        api.calls.append("patch")
        raise ConnectionError("the API server is away")

    api.json_patch = away  # type: ignore[method-assign]
    try:
        node.reconcile(("ns", "a"))
    except ConnectionError:
        pass  # the worker retries the VMI
    assert guest.calls == ["destroy", "patch", "undefine"] and guest.current is None
    del api.json_patch  # back again
    node.reconcile(("ns", "a"))
    assert guest.calls[3:] == ["patch"] and removed_finalizer(api)  # the domain is not ours to touch any more


def test_a_new_vmi_with_the_same_name_gets_its_own_deadline(tmp_path):
    node, guest, api, queue = agent(tmp_path, deleted_vmi(grace=25))
    node._deadlines[("ns", "a")] = ("an-earlier-uid", 0.0)  # long past
    node.reconcile(("ns", "a"))
    assert (guest.presses, guest.stopped) == (1, [])


class PausedDomain:
    """libvirt's domain object as shutdown() uses it: paused, ignores the button."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.paused = True

    def isActive(self) -> int:  # noqa: N802 - libvirt's name
        return 1

    def state(self):
        return [libvirt.VIR_DOMAIN_PAUSED if self.paused else libvirt.VIR_DOMAIN_RUNNING, 1]

    def resume(self) -> int:
        self.calls.append("resume")
        self.paused = False
        return 0

    def shutdownFlags(self, flags: int) -> int:  # noqa: N802 - libvirt's name
        self.calls.append("power-button")
        return 0


def test_shutdown_resumes_a_paused_guest_presses_the_button_and_does_not_wait(monkeypatch):
    hv = LibvirtHypervisor()
    dom = PausedDomain()
    monkeypatch.setattr(hv, "_lookup", lambda name: dom)
    assert hv.shutdown("ns_a") is True  # still running: the caller keeps the deadline
    assert dom.calls == ["resume", "power-button"]
