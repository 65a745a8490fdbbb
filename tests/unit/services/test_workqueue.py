"""The services' one work queue (virtops.kube.workqueue): dedup, one key to one worker, later adds, backoff;
and the controller feeding it: a heartbeat does not queue every pending VMI again."""

from __future__ import annotations

import datetime
import json
import threading

from virtops.controller.controller import CAPACITY_ANNOTATION, Controller
from virtops.kube.workqueue import KeyQueue


def test_a_key_is_queued_once():
    queue = KeyQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert len(queue) == 2
    assert queue.get(0) == ("ns", "a")
    assert queue.get(0) == ("ns", "b")
    assert queue.get(0) is None


def test_a_key_in_progress_is_not_handed_out_twice_but_runs_again_afterwards():
    queue = KeyQueue()
    queue.add("k")
    assert queue.get(0) == "k"
    queue.add("k")  # an event while a worker holds the key
    queue.add("k")
    assert queue.get(0) is None
    queue.done("k")
    assert queue.get(0) == "k"
    queue.done("k")
    assert queue.get(0) is None


def test_close_wakes_waiting_workers():
    queue = KeyQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(10)))
    worker.start()
    queue.close()
    worker.join(5)
    assert got == [None]
    queue.add("late")
    assert len(queue) == 0


def test_add_after_queues_the_key_later_and_once():
    queue = KeyQueue()
    queue.add_after("k", 0.05)
    queue.add_after("k", 0.05)
    assert queue.get(0) is None  # not yet
    assert queue.get(5) == "k"
    assert queue.get(0.2) is None  # the second timer found it queued or held: one run at a time
    queue.done("k")


def test_retry_backs_off_per_key_and_forget_starts_again():
    queue = KeyQueue(base_delay=0.01, max_delay=0.04)
    assert [queue.retry("a") for _failure in range(4)] == [0.01, 0.02, 0.04, 0.04]
    assert queue.retry("b") == 0.01  # another key has its own count
    queue.forget("a")
    assert queue.retry("a") == 0.01
    queue.close()


def lease(node, renewed, memory="4Gi"):
    return {"metadata": {"name": node, "namespace": "leases",
                         "annotations": {CAPACITY_ANNOTATION: json.dumps({"cpu": "2", "memory": memory})}},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


def pending(name):
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"}, "spec": {},
            "status": {"phase": "Pending"}}


def drain(queue):
    """The VMI keys queued (the controller also queues its one Secrets sync on VMI events)."""
    keys = []
    while (key := queue.get(0)) is not None:
        keys.append(key)
        queue.done(key)
    return [k for k in keys if k[0] == "vmi"]


def test_heartbeats_do_not_queue_pending_vmis_again_and_again():
    controller = Controller(client=None)  # type: ignore[arg-type] - event intake never calls the API
    now = datetime.datetime.now(datetime.UTC)
    controller._on_lease("SYNC", {"items": [lease("a", now), lease("b", now)]})
    controller._on_vmi("SYNC", {"items": [pending("v1"), pending("v2"), pending("v3")]})
    assert sorted(drain(controller.queue)) == [("vmi", "ns", "v1"), ("vmi", "ns", "v2"), ("vmi", "ns", "v3")]

    for beat in range(1, 6):  # five renewals of each node, nothing else changed
        for node in ("a", "b"):
            controller._on_lease("MODIFIED", lease(node, now + datetime.timedelta(seconds=beat)))
    assert drain(controller.queue) == []

    controller._on_vmi("MODIFIED", pending("v1"))
    controller._on_vmi("MODIFIED", pending("v1"))  # two events, one reconcile
    assert drain(controller.queue) == [("vmi", "ns", "v1")]

    # A node that changes what fits (more memory) is worth a look at every pending VMI, once each.
    controller._on_lease("MODIFIED", lease("b", now + datetime.timedelta(seconds=9), memory="8Gi"))
    controller._on_lease("MODIFIED", lease("a", now + datetime.timedelta(seconds=9), memory="8Gi"))
    assert sorted(drain(controller.queue)) == [("vmi", "ns", "v1"), ("vmi", "ns", "v2"), ("vmi", "ns", "v3")]


def test_a_dead_node_that_renews_again_queues_the_pending_vmis():
    controller = Controller(client=None)  # type: ignore[arg-type]
    now = datetime.datetime.now(datetime.UTC)
    controller._on_lease("SYNC", {"items": [lease("a", now - datetime.timedelta(seconds=120))]})
    controller._on_vmi("SYNC", {"items": [pending("v1")]})
    drain(controller.queue)
    controller._on_lease("MODIFIED", lease("a", now))
    assert drain(controller.queue) == [("vmi", "ns", "v1")]
