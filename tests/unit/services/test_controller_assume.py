"""kube-scheduler's "assume": a bind counts on its node as soon as it is sent, before the watch confirms it.

The API is faked at the client boundary and its watch never delivers: the worst case of a lagging informer,
which the integration test (tests/integration/test_controller_scheduling.py) meets for real in a burst.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from virtops.controller.controller import CAPACITY_ANNOTATION, Controller
from virtops.kube import ApiError

PATH = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachineinstances"


class SilentApi:
    """Answers the scheduler's reads and writes from its own store; tells the controller nothing."""

    def __init__(self, vmis, refuse=()):
        self.store = {f"{PATH}/{v['metadata']['name']}":
                      copy.deepcopy(v) for v in vmis}
        self.refuse = set(refuse)  # names whose bind the API server rejects

    def get(self, path):
        return copy.deepcopy(self.store[path])

    def json_patch(self, path, ops):
        obj = self.store[path]
        bind = any(op["path"] == "/metadata/labels" for op in ops)
        if bind and obj["metadata"]["name"] in self.refuse:
            raise ApiError(500, {"message": "etcdserver: request timed out"})
        for op in ops:
            if op["path"] == "/status":
                obj["status"] = op["value"]
            elif op["path"] == "/metadata/labels":
                obj["metadata"]["labels"] = op["value"]
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(obj)

    def create(self, path, body):  # events
        return body


def lease(node, memory):
    return {"metadata": {"name": node, "namespace": "leases",
                         "annotations": {CAPACITY_ANNOTATION: json.dumps({"cpu": "100", "memory": memory})}},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                     "renewTime": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}


def pending(name):
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"},
            "spec": {"domain": {"resources": {"requests": {"memory": "1Gi"}}}}, "status": {"phase": "Pending"}}


def bound_nodes(api):
    return Counter((o.get("status") or {}).get("nodeName") for o in api.store.values())


def test_a_burst_of_binds_never_overcommits_a_node_before_the_watch_catches_up():
    vmis = [pending(f"v{i:02}") for i in range(20)]
    api = SilentApi(vmis)
    controller = Controller(api)  # type: ignore[arg-type]
    controller._on_lease("SYNC", {"items": [lease("a", "10Gi"), lease("b", "10Gi")]})
    controller._on_vmi("SYNC", {"items": vmis})
    for v in vmis + vmis:  # twice: a reconcile of an already sent bind must not bind again
        controller.reconcile(("ns", v["metadata"]["name"]))
    assert bound_nodes(api) == {"a": 10, "b": 10}

    # The watch delivers the bound objects: assumptions give way to the real thing, nothing is counted twice.
    for obj in list(api.store.values()):
        controller._on_vmi("MODIFIED", obj)
    assert controller.assumed == {}


def test_a_failed_bind_frees_its_room():
    vmis = [pending("first"), pending("second")]
    api = SilentApi(vmis, refuse={"first"})
    controller = Controller(api)  # type: ignore[arg-type]
    controller._on_lease("SYNC", {"items": [lease("only", "1Gi")]})
    controller._on_vmi("SYNC", {"items": vmis})
    controller.reconcile(("ns", "first"))  # the bind fails: the node's one slot is not taken
    controller.reconcile(("ns", "second"))
    assert bound_nodes(api)["only"] == 1
    assert api.get(f"{PATH}/second")["status"]["nodeName"] == "only"
    assert set(controller.assumed) == {("ns", "second")}  # sent, not yet seen bound


class MeetingApi(SilentApi):
    """Each bind write waits for another bind write to be under way too (a barrier of two)."""

    def __init__(self, vmis):
        super().__init__(vmis)
        self.lock = threading.Lock()
        self.meeting = threading.Barrier(2, timeout=10)

    def json_patch(self, path, ops):
        if any(op["path"] == "/metadata/labels" for op in ops):
            self.meeting.wait()  # BrokenBarrierError (the bind fails) unless two binds overlap
        with self.lock:
            return super().json_patch(path, ops)


def test_once_started_the_binds_of_a_burst_are_written_side_by_side_and_still_never_overcommit():
    vmis = [pending(f"v{i:02}") for i in range(6)]
    api = MeetingApi(vmis)
    controller = Controller(api, bind_workers=2)  # type: ignore[arg-type]
    controller._on_lease("SYNC", {"items": [lease("a", "2Gi"), lease("b", "2Gi")]})
    controller._on_vmi("SYNC", {"items": vmis[:4]})
    controller.bind_pool = ThreadPoolExecutor(2)  # what start() sets up, without the informers
    try:
        for v in vmis[:4]:
            controller.reconcile(("ns", v["metadata"]["name"]))
    finally:
        controller.bind_pool.shutdown(wait=True)
    assert bound_nodes(api) == {"a": 2, "b": 2, None: 2}  # the two not yet listed stay pending
