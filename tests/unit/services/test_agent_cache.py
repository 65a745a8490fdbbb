"""The agent's VMI cache after its own writes: the answer to the write that removes the last finalizer
of a deleted VMI is the object's final state, and must not bring it back into the cache when the watch
already delivered its DELETED event (it would be counted and looked at until the next list)."""

from __future__ import annotations

from virtops.agent.agent import FINALIZER, NODE_LABEL, NodeAgent


class ApiServer:
    """The API boundary (the only fake): a JSON patch answers with the object as the server left it."""

    def __init__(self, answer: dict) -> None:
        self.answer = answer

    def json_patch(self, path, ops):
        return self.answer


class NoHypervisor:
    """Writing status never calls libvirt."""


def vmi(finalizers: list[str], deleted: bool) -> dict:
    meta = {"namespace": "ns", "name": "a", "resourceVersion": "5", "labels": {NODE_LABEL: "node-a"},
            "finalizers": finalizers}
    if deleted:
        meta["deletionTimestamp"] = "2026-11-26T07:00:00Z"
    return {"metadata": meta, "status": {"phase": "Succeeded"}}


def agent(tmp_path, answer: dict) -> NodeAgent:
    return NodeAgent(ApiServer(answer), "node-a", NoHypervisor(), state_dir=tmp_path, image_cache=tmp_path,
                     domain_type="qemu")


def test_releasing_a_deleted_vmi_does_not_bring_it_back_into_the_cache(tmp_path):
    node = agent(tmp_path, answer=vmi([], deleted=True))
    # The watch's DELETED event came first: the cache no longer holds the VMI.
    node._patch(vmi([FINALIZER], deleted=True), {"metadata": {"finalizers": []}})
    assert node.cached(("ns", "a")) is None
    assert 'virtops_agent_vmis{phase="Succeeded"}' not in node.metrics.render()


def test_a_write_to_a_live_vmi_is_cached(tmp_path):
    node = agent(tmp_path, answer=vmi([FINALIZER], deleted=False))
    node._patch(vmi([], deleted=False), {"metadata": {"finalizers": [FINALIZER]}})
    assert node.cached(("ns", "a"))["metadata"]["finalizers"] == [FINALIZER]


def watched(version: str, phase: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": version,
                         "labels": {NODE_LABEL: "node-a"}, "finalizers": [FINALIZER]}, "status": {"phase": phase}}


class WatchingApiServer(ApiServer):
    """The API boundary with a list and a watch: the watch delivers ``events``, then ``late`` runs (a write's
    answer that arrives only now), then the agent stops."""

    def __init__(self, answer: dict, events: list[dict]) -> None:
        super().__init__(answer)
        self.events = events
        self.node: NodeAgent | None = None
        self.late = lambda: None

    def list(self, path, query=None):
        return [watched("rv-a", "Scheduled")], "rv-a"

    def watch(self, path, query=None, timeout_seconds=300):
        yield from self.events
        self.late()
        self.node.stop_event.set()


class EmptyHost:
    def list_names(self, prefix=""):
        return []


def informed(tmp_path, answer: dict, events: list[dict], late) -> NodeAgent:
    api = WatchingApiServer(answer, [{"type": "MODIFIED", "object": e} for e in events])
    node = NodeAgent(api, "node-a", EmptyHost(), state_dir=tmp_path, image_cache=tmp_path, domain_type="qemu")
    api.node, api.late = node, lambda: late(node)
    node._informer_loop()
    return node


def test_a_write_answer_the_watch_already_passed_does_not_replace_the_newer_object(tmp_path):
    # resourceVersions are opaque strings; only equality means anything. The agent compared them as integers:
    # on any other form that raised ValueError, and the stale answer replaced the newer object in the cache.
    node = informed(tmp_path, answer=watched("rv-b", "Running"),
                    events=[watched("rv-b", "Running"), watched("rv-c", "Succeeded")],  # ours, then someone else's
                    late=lambda node: node._patch(watched("rv-a", "Scheduled"), {"status": {"phase": "Running"}}))
    assert node.cached(("ns", "a"))["metadata"]["resourceVersion"] == "rv-c"


def test_a_write_answer_the_watch_has_not_delivered_yet_is_cached(tmp_path):
    node = informed(tmp_path, answer=watched("rv-b", "Running"), events=[],
                    late=lambda node: node._patch(watched("rv-a", "Scheduled"), {"status": {"phase": "Running"}}))
    assert node.cached(("ns", "a"))["metadata"]["resourceVersion"] == "rv-b"


def test_releasing_a_deleted_vmi_keeps_a_new_vmi_of_the_same_name_in_the_cache(tmp_path):
    # recreate: the watch delivered the old VMI's DELETED and the new one's ADDED before the answer to the write
    # that released the old one arrived; dropping the key by name lost the new VMI until its next change.
    old = dict(vmi([], deleted=True), metadata=dict(vmi([], deleted=True)["metadata"], uid="old"))
    node = agent(tmp_path, answer=old)
    new = watched("rv-n", "Scheduled")
    new["metadata"]["uid"] = "new"
    node._cache[("ns", "a")] = new
    node._patch(dict(old, metadata=dict(old["metadata"], finalizers=[FINALIZER])), {"metadata": {"finalizers": []}})
    assert node.cached(("ns", "a"))["metadata"]["uid"] == "new"
