"""Node health without a Lease: a node that VMIs name but no Lease speaks for is judged like an expired one.

The API is faked at the client boundary and time is the controller's clock, set by the test; the integration
test (tests/integration/test_controller_scheduling.py) deletes a real Lease.
"""

from __future__ import annotations

import datetime

import virtops.controller.controller as controller_module
from virtops.controller.controller import Controller

T0 = datetime.datetime(2026, 12, 2, 18, 0, tzinfo=datetime.UTC)


class RecordingApi:
    def __init__(self):
        self.patches = []

    def json_patch(self, path, ops):
        self.patches.append(ops)
        return {}

    def create(self, path, body):  # events
        return body


def running_on(node):
    return {"metadata": {"namespace": "ns", "name": "v", "resourceVersion": "7", "uid": "u"},
            "status": {"phase": "Running", "nodeName": node}}


def phases_written(api):
    return [op["value"].get("phase") for ops in api.patches for op in ops if op["path"] == "/status"]


def test_a_node_never_leased_gets_a_lease_duration_and_the_grace_period_from_when_it_was_missed(monkeypatch):
    api = RecordingApi()
    ctl = Controller(api, node_grace_seconds=10)  # type: ignore[arg-type]
    clock = [T0]
    monkeypatch.setattr(controller_module, "now_utc", lambda: clock[0])
    ctl._on_vmi("SYNC", {"items": [running_on("nowhere")]})
    ctl.check_node_health()
    assert api.patches == []  # the Leases are not listed yet: not a node without one

    ctl._on_lease("SYNC", {"items": []})
    ctl.check_node_health()  # first missed now
    clock[0] = T0 + datetime.timedelta(seconds=39)
    ctl.check_node_health()
    assert api.patches == []  # within a lease duration (40 s) of being missed
    clock[0] = T0 + datetime.timedelta(seconds=41)
    ctl.check_node_health()
    assert phases_written(api) == ["Running"]  # NodeUnresponsive, not failed yet
    clock[0] = T0 + datetime.timedelta(seconds=51)
    ctl.check_node_health()
    assert phases_written(api)[-1] == "Failed"
