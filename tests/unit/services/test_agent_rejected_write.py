"""A write of the agent's that the API server rejects (422) is not a race: it is logged, told once in a
Warning event, and raised so the worker retries with backoff. A stale write is a conflict (409) instead: the
patch's first operation sets the resourceVersion last read, the API server's precondition."""

from __future__ import annotations

import pytest
from virtops.agent.agent import NODE_LABEL, NodeAgent
from virtops.kube import InvalidError


class RejectingApi:
    def __init__(self) -> None:
        self.patches: list[list[dict]] = []
        self.events: list[dict] = []

    def json_patch(self, path, ops):
        self.patches.append(ops)
        raise InvalidError(422, {"message": 'VirtualMachineInstance.kubevirt.io "a" is invalid: status.phase: '
                                            'Unsupported value: "Sideways"', "reason": "Invalid"})

    def create(self, path, body):
        self.events.append(body)
        return body


def test_a_rejected_status_write_is_told_once_and_raised(tmp_path):
    api = RejectingApi()
    node = NodeAgent(api, "node-a", object(), state_dir=tmp_path, image_cache=tmp_path,  # type: ignore[arg-type]
                     domain_type="qemu")
    vmi = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "7", "labels": {NODE_LABEL: "node-a"}},
           "status": {"phase": "Running"}}
    for _retry in range(3):
        with pytest.raises(InvalidError):
            node._patch(vmi, {"status": {"phase": "Sideways"}})
    assert api.patches[0][0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"}
    assert [(e["type"], e["reason"]) for e in api.events] == [("Warning", "FailedUpdate")]
    assert "Unsupported value" in api.events[0]["message"]
