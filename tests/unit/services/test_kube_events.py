"""The services' event recorder: Events are written off the caller's path once started, at once before."""

from __future__ import annotations

import logging
import threading

from virtops.kube.events import EventRecorder

VMI = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
       "metadata": {"namespace": "ns", "name": "vm1", "uid": "u1", "resourceVersion": "7"}}


class SlowApi:
    """The API boundary: every Event POST waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written: list[tuple[str, dict]] = []

    def create(self, path: str, body: dict) -> dict:
        self.release.wait(10)
        self.written.append((path, body))
        return body


def test_before_start_an_event_is_written_at_once_with_its_source_and_object():
    api = SlowApi()
    api.release.set()
    EventRecorder(api, "virtops-agent", host="node-a").record(VMI, "Normal", "Started", "started")
    (path, body), = api.written
    assert path == "/api/v1/namespaces/ns/events"
    assert body["involvedObject"] == {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                                      "name": "vm1", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}
    assert (body["type"], body["reason"], body["message"]) == ("Normal", "Started", "started")
    assert body["source"] == {"component": "virtops-agent", "host": "node-a"}
    assert body["reportingInstance"] == "node-a" and body["metadata"]["generateName"] == "vm1."


def test_once_started_record_does_not_wait_for_the_post_and_stop_writes_what_is_queued():
    api = SlowApi()
    recorder = EventRecorder(api, "virtops-controller")
    recorder.start()
    for i in range(3):
        recorder.record(VMI, "Normal", "Scheduled", f"to node {i}")  # would block 10 s each if synchronous
    assert api.written == []
    api.release.set()
    recorder.stop(timeout=5)
    assert [b["message"] for _p, b in api.written] == ["to node 0", "to node 1", "to node 2"]
    assert "host" not in api.written[0][1]["source"]


def test_a_full_queue_drops_the_event_and_says_so(caplog):
    api = SlowApi()
    recorder = EventRecorder(api, "virtops-agent", queue_size=1)
    recorder.start()
    with caplog.at_level(logging.WARNING, logger="virtops.kube.events"):
        for _i in range(4):  # the sender holds one, the queue one, the rest are dropped
            recorder.record(VMI, "Normal", "Started", "started")
    assert "event queue full" in caplog.text
    api.release.set()
    recorder.stop(timeout=5)
    assert 1 <= len(api.written) <= 2


def test_a_failing_write_does_not_stop_the_sender(caplog):
    class Failing(SlowApi):
        def create(self, path, body):
            if body["message"] == "bad":
                raise RuntimeError("connection reset")
            return super().create(path, body)

    api = Failing()
    api.release.set()
    recorder = EventRecorder(api, "virtops-agent")
    recorder.start()
    recorder.record(VMI, "Warning", "Failed", "bad")
    recorder.record(VMI, "Normal", "Started", "good")
    with caplog.at_level(logging.WARNING, logger="virtops.kube.events"):
        recorder.stop(timeout=5)
    assert [b["message"] for _p, b in api.written] == ["good"]
    # one line that says what failed, no traceback (the chaos soak counts tracebacks as bugs)
    [record] = [r for r in caplog.records if "cannot record event Failed" in r.getMessage()]
    assert "RuntimeError: connection reset" in record.getMessage() and record.exc_info is None
