"""A VMI whose label names this node but whose status.nodeName names another (or none) is not this node's.

The controller sets both in one write; only someone else (another node's agent, before the admission
policy checked the label too) can make them differ. Acting on the label alone let an agent hand its VMI to
another node, whose agent then started a second domain of it. The agent must leave such a VMI alone."""

from __future__ import annotations

import pytest
from virtops.agent.agent import FINALIZER, NODE_LABEL, NodeAgent


class Untouchable:
    """Both boundaries (API and libvirt): any call at all is a failure."""

    def __getattr__(self, name):
        raise AssertionError(f"the agent called {name} for a VMI that is not its node's")


def vmi(bound: str | None, deleted: bool = False) -> dict:
    meta = {"namespace": "ns", "name": "a", "uid": "u1", "resourceVersion": "5",
            "labels": {NODE_LABEL: "node-a"}, "finalizers": [FINALIZER]}
    if deleted:
        meta["deletionTimestamp"] = "2026-11-26T07:00:00Z"
    status = {"phase": "Scheduled"}
    if bound is not None:
        status["nodeName"] = bound
    return {"metadata": meta, "spec": {"domain": {}}, "status": status}


@pytest.mark.parametrize("bound", ["node-b", None, ""])
@pytest.mark.parametrize("deleted", [False, True])
def test_a_vmi_relabelled_to_this_node_is_never_started_or_written(tmp_path, bound, deleted):
    node = NodeAgent(Untouchable(), "node-a", Untouchable(), state_dir=tmp_path, image_cache=tmp_path,
                     domain_type="qemu")
    obj = vmi(bound, deleted)
    node._store(obj)
    node.reconcile(("ns", "a"))  # neither libvirt nor the API server is called
    assert node.cached(("ns", "a")) is obj
