# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Wait for a VMI to reach a phase or condition, or to be gone, by watching the API.

One GET (or the object the caller already has) gives a resourceVersion; a watch
from there sees every change without polling. A 410 Gone (resourceVersion too
old) re-reads and watches again. The clock is monotonic; a timeout error carries
the last object seen and the VMI's recent events.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    GoneError,
    NotFoundError,
    WaitTimeoutError,
)

# The phases a VMI never leaves (KubeVirt's VirtualMachineInstance.IsFinal).
FINAL_PHASES = ("Succeeded", "Failed")


def conditions_of(obj):
    return ((obj or {}).get("status") or {}).get("conditions") or []


def find_condition(obj, condition_type):
    for cond in conditions_of(obj):
        if cond.get("type") == condition_type:
            return cond
    return None


class Expectation:
    """What a wait waits for: a phase, a condition (type/status/reason), or absence."""

    def __init__(self, phase=None, condition=None, status="True", reason=None, absent=False):
        self.phase = phase
        self.condition = condition
        self.status = status or "True"
        self.reason = reason
        self.absent = absent

    @classmethod
    def from_params(cls, wait_for, default_phase="Running"):
        wait_for = wait_for or {}
        if wait_for.get("condition"):
            return cls(condition=wait_for["condition"], status=wait_for.get("status"), reason=wait_for.get("reason"))
        return cls(phase=wait_for.get("phase") or default_phase)

    def describe(self):
        if self.absent:
            return "to be deleted"
        if self.condition:
            text = "condition {0}={1}".format(self.condition, self.status)
            return text + (" (reason {0})".format(self.reason) if self.reason else "")
        return "phase {0}".format(self.phase)

    def met(self, obj):
        if self.absent:
            return obj is None
        if obj is None:
            return False
        if self.condition:
            cond = find_condition(obj, self.condition)
            if cond is None:
                # "status False" is also met by an absent condition (e.g. Paused gone after unpause).
                return self.status == "False" and not self.reason
            return cond.get("status") == self.status and (not self.reason or cond.get("reason") == self.reason)
        return (obj.get("status") or {}).get("phase") == self.phase

    def impossible(self, obj):
        """Why the expectation can no longer be met, or None."""
        if self.absent:
            return None
        if obj is None:
            return "it was deleted"
        phase = (obj.get("status") or {}).get("phase")
        if phase in FINAL_PHASES and self.phase and self.phase != phase:
            return "it reached the final phase {0}".format(phase)
        return None


def wait_for_object(client, collection_path, name, expectation, timeout, initial=None):
    """Block until ``expectation`` holds for the named object; return the object (None when absent).

    ``initial``, when given, is the object as the caller just read or wrote it: no extra GET.
    """
    deadline = time.monotonic() + timeout
    obj, resource_version = _read(client, collection_path, name, initial)
    while True:
        if expectation.met(obj):
            return obj
        why = expectation.impossible(obj)
        if why:
            raise WaitTimeoutError("will never reach {0}: {1}".format(expectation.describe(), why), obj)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeoutError(
                "timed out after {0}s waiting for {1}".format(timeout, expectation.describe()), obj
            )
        try:
            for event in client.watch(
                collection_path,
                {"fieldSelector": "metadata.name=" + name, "resourceVersion": resource_version},
                min(remaining, 300),
            ):
                event_obj = event.get("object") or {}
                resource_version = (event_obj.get("metadata") or {}).get("resourceVersion") or resource_version
                if event["type"] == "BOOKMARK":
                    continue
                obj = None if event["type"] == "DELETED" else event_obj
                if expectation.met(obj) or expectation.impossible(obj):
                    break
                if time.monotonic() >= deadline:
                    break
        except GoneError:
            obj, resource_version = _read(client, collection_path, name)


def _read(client, collection_path, name, initial=None):
    """The object (or None) and a resourceVersion to watch from."""
    if initial is not None:
        return initial, initial["metadata"]["resourceVersion"]
    try:
        obj = client.get(collection_path + "/" + name)
        return obj, obj["metadata"]["resourceVersion"]
    except NotFoundError:
        page = client.get(collection_path, {"fieldSelector": "metadata.name=" + name, "limit": 1})
        return None, page["metadata"]["resourceVersion"]


def recent_events(client, namespace, name, kind="VirtualMachineInstance", limit=5):
    """The last few events about the object, oldest first, as short strings."""
    try:
        page = client.get(
            "/api/v1/namespaces/{0}/events".format(namespace),
            {"fieldSelector": "involvedObject.name={0},involvedObject.kind={1}".format(name, kind)},
        )
    except Exception:  # events are a courtesy in an error message; never mask the real error
        return []
    items = sorted(
        page.get("items") or [],
        key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp") or "",
    )
    return ["{0} {1}: {2}".format(e.get("type", ""), e.get("reason", ""), e.get("message", "")) for e in items][-limit:]


def describe_last_seen(obj, events):
    if obj is None:
        text = "last seen: the object does not exist"
    else:
        status = obj.get("status") or {}
        conds = ", ".join(
            "{0}={1}{2}".format(c.get("type"), c.get("status"), " ({0})".format(c["reason"]) if c.get("reason") else "")
            for c in status.get("conditions") or []
        )
        text = "last seen: phase {0!r}, node {1!r}, conditions [{2}]".format(
            status.get("phase", ""), status.get("nodeName", ""), conds
        )
    if events:
        text += "; events: " + " | ".join(events)
    return text
