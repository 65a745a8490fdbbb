"""Reconnecting to libvirt and the periodic resync look at the same things through one method: every
cached VMI and every domain of ours whose VMI is not cached (an orphan)."""

from __future__ import annotations

import threading

from virtops.agent.agent import NODE_LABEL, NodeAgent
from virtops.agent.hypervisor import DomainMarker


class OneOrphan:
    """libvirt (the only fake) holds ns_a, defined by this node's agent; no VMI ns/a is cached."""

    def list_names(self, prefix=""):
        return ["ns_a"]

    def marker(self, name):
        return DomainMarker(namespace="ns", name="a", uid="u1", node="node-a")


class Queue:
    def __init__(self) -> None:
        self.added: list[tuple] = []

    def add(self, key):
        self.added.append(key)


def agent(tmp_path) -> tuple[NodeAgent, Queue]:
    node = NodeAgent(None, "node-a", OneOrphan(), state_dir=tmp_path, image_cache=tmp_path,  # type: ignore[arg-type]
                     domain_type="qemu", resync_seconds=0.01)
    queue = node.queue = Queue()  # type: ignore[assignment]
    node._cache = {("ns", "b"): {"metadata": {"namespace": "ns", "name": "b", "labels": {NODE_LABEL: "node-a"}}}}
    node.synced.set()
    return node, queue


def run_resync_until(node: NodeAgent, done) -> None:
    resync = threading.Thread(target=node._resync_loop)
    resync.start()
    try:
        for _try in range(500):
            if done():
                break
            node.stop_event.wait(0.01)
    finally:
        node.stop_event.set()
        resync.join()


def test_reconnecting_to_libvirt_and_the_resync_queue_cached_vmis_and_orphan_domains(tmp_path):
    node, queue = agent(tmp_path)
    node._on_libvirt_connect()
    assert sorted(queue.added) == [("ns", "a"), ("ns", "b")]
    queue.added.clear()
    run_resync_until(node, lambda: len(queue.added) >= 2)
    assert sorted(set(queue.added)) == [("ns", "a"), ("ns", "b")]


def test_both_look_at_everything_through_one_method(tmp_path, monkeypatch):
    node, _queue = agent(tmp_path)
    calls = []
    monkeypatch.setattr(node, "_queue_everything", lambda: calls.append("all"))
    node._on_libvirt_connect()
    assert calls == ["all"]
    run_resync_until(node, lambda: len(calls) >= 2)
    assert len(calls) >= 2
