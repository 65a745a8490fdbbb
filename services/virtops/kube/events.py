"""Kubernetes Events for the services (agent and controller), written off the caller's path.

As client-go's event recorder: ``record`` hands the Event to one sender thread and returns, so a worker that
started a domain or bound a VMI does not wait for an Event's POST before its next step (under load that POST
was one more API round trip on every VMI's way to Running). The queue is bounded (client-go's is too): when
it is full the Event is dropped and logged. Until ``start``, and after ``stop``, an Event is written at once
on the caller's thread (one-shot use and tests see it at once). Best effort: a failed write is logged.
Written here: the official kubernetes client's event API is synchronous, and no maintained package offers an
asynchronous recorder for it.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from typing import Any

from virtops.kube.client import KubeClient, path_for

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    def __init__(self, client: KubeClient, component: str, host: str | None = None,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.client, self.component, self.host = client, component, host
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None

    def record(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """An Event of type ``kind`` (Normal, Warning) about ``obj`` (a namespaced object with apiVersion and
        kind; its uid and resourceVersion are referenced)."""
        meta = obj["metadata"]
        now = _now()
        source: dict[str, str] = {"component": self.component}
        body: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": meta["name"] + ".", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion", "kubevirt.io/v1"),
                               "kind": obj.get("kind", "VirtualMachineInstance"), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message, "type": kind,
            "source": source, "reportingComponent": self.component,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        if self.host:
            source["host"] = self.host
            body["reportingInstance"] = self.host
        if self._thread is None:
            self._write(body)
            return
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            log.warning("event queue full: event %s for %s/%s dropped", reason, meta["namespace"], meta["name"])

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.component}-events", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then write at once again."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)  # behind what is queued; a hung API must not hold the stop
        except queue.Full:
            return
        thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            self._write(body)

    def _write(self, body: dict[str, Any]) -> None:
        try:
            self.client.create(path_for("v1", "events", body["metadata"]["namespace"]), body)
        except Exception as exc:  # noqa: BLE001 - best effort, and the sender thread must go on: one line, no traceback
            obj = body["involvedObject"]
            log.warning("cannot record event %s for %s/%s: %s: %s", body["reason"], obj["namespace"], obj["name"],
                        type(exc).__name__, exc)
