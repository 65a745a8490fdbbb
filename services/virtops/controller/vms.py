"""VirtualMachines: keep a VM's VMI in line with spec.running / spec.runStrategy and the state change requests of
status.stateChangeRequests, and report VM status.

| runStrategy    | the controller ...                                                                      |
|----------------|-----------------------------------------------------------------------------------------|
| Always         | creates the VMI; replaces it when it finished or a stop request names it                |
| RerunOnFailure | creates it when the VM comes to this strategy or on a start request; replaces it when   |
|                | it Failed; deletes it when it Succeeded or a stop request names it                      |
| Once           | creates the VMI once; never replaces it                                                 |
| Manual         | creates it on a start request, deletes it on a stop request; nothing by itself          |
| Halted         | deletes the VMI                                                                         |
``spec.running: true`` means Always and ``false`` Halted, as in KubeVirt.

State change requests are what KubeVirt's virt-api writes for `virtctl start/stop/restart` (our
api/subresources.py writes the same): a list of ``{action: Start}`` and ``{action: Stop, uid: VMI_UID}``. As
KubeVirt's VM controller does, only the first one counts: a Stop deletes the VMI with that uid (uid as the
delete precondition, so a newer VMI is spared) and is removed once no VMI with that uid is left; a Start creates
the VMI when there is none and is removed once a live VMI exists. ``status.runStrategy`` records the strategy
the controller last acted on (first written once a VMI was created, as in KubeVirt): a RerunOnFailure VM that was
stopped stays stopped, one that just became RerunOnFailure starts.
"""

from __future__ import annotations

import copy
import logging

from virtops.kube import ConflictError, KubeClient, NotFoundError, path_for
from virtops.kubevirt import FINAL_PHASES, run_strategy

log = logging.getLogger("virtops.controller.vms")

API = "kubevirt.io/v1"


START, STOP = "Start", "Stop"


def first_request(vm: dict) -> dict:
    """The state change request the controller acts on now (only the first counts, as in KubeVirt); {} if none."""
    requests = (vm.get("status") or {}).get("stateChangeRequests") or []
    return requests[0] if requests else {}


def has_start_request(vm: dict) -> bool:
    return first_request(vm).get("action") == START


def has_stop_request_for(vm: dict, vmi: dict | None) -> bool:
    request = first_request(vm)
    uid = ((vmi or {}).get("metadata") or {}).get("uid")
    return request.get("action") == STOP and bool(uid) and request.get("uid") == uid


def desired_action(vm: dict, vmi: dict | None) -> str:
    """'create', 'delete', 'replace' or 'none' for this VM and its current VMI."""
    strategy = run_strategy(vm)
    if (vm.get("metadata") or {}).get("deletionTimestamp"):
        return "none"  # the garbage collector removes the owned VMI
    phase = ((vmi or {}).get("status") or {}).get("phase", "")
    deleting = bool(((vmi or {}).get("metadata") or {}).get("deletionTimestamp"))
    if strategy == "Halted":
        return "delete" if vmi is not None and not deleting else "none"
    if vmi is None:
        if strategy == "Always" or (strategy == "Manual" and has_start_request(vm)):
            return "create"
        if strategy == "RerunOnFailure" and (
                has_start_request(vm) or (vm.get("status") or {}).get("runStrategy") != strategy):
            return "create"
        if strategy == "Once" and not (vm.get("status") or {}).get("created"):
            return "create"
        return "none"
    if deleting:
        return "none"
    stop = has_stop_request_for(vm, vmi)
    if strategy == "Always" and (stop or phase in FINAL_PHASES):
        return "replace"
    if strategy == "RerunOnFailure":
        if phase == "Failed":
            return "replace"
        return "delete" if stop or phase == "Succeeded" else "none"  # a guest that powered off stays off
    if strategy == "Manual" and stop:
        return "delete"
    return "none"


def remaining_requests(vm: dict, vmi: dict | None) -> list[dict]:
    """status.stateChangeRequests once the first is done (KubeVirt's isTrimFirstChangeRequestNeeded): a Stop when no
    VMI of its uid is left, a Start when a live VMI exists."""
    requests = list((vm.get("status") or {}).get("stateChangeRequests") or [])
    if not requests:
        return requests
    first, meta = requests[0], (vmi or {}).get("metadata") or {}
    live = vmi is not None and not meta.get("deletionTimestamp") and (
        (vmi.get("status") or {}).get("phase") not in FINAL_PHASES)
    if first.get("action") == STOP and (vmi is None or not first.get("uid") or first.get("uid") != meta.get("uid")):
        return requests[1:]
    if first.get("action") == START and live:
        return requests[1:]
    return requests


def printable_status(vm: dict, vmi: dict | None) -> str:
    strategy = run_strategy(vm)
    if (vm.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    if vmi is None:
        return "Starting" if desired_action(vm, None) == "create" else "Stopped"
    if (vmi.get("metadata") or {}).get("deletionTimestamp"):
        return "Stopping"
    status = vmi.get("status") or {}
    phase = status.get("phase", "")
    paused = any(c.get("type") == "Paused" and c.get("status") == "True" for c in status.get("conditions") or [])
    if phase == "Running":
        return "Paused" if paused else "Running"
    if phase == "Succeeded":
        return "Stopped"
    if phase == "Failed":
        return "CrashLoopBackOff" if strategy in ("Always", "RerunOnFailure") else "Stopped"
    return "Starting"


def vmi_for(vm: dict) -> dict:
    """The VMI a VM runs: its template, its name and namespace, owned by the VM."""
    meta = vm["metadata"]
    template = copy.deepcopy((vm.get("spec") or {}).get("template") or {})
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": API,
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(tmeta.get("labels") or {}, **{"kubevirt.io/vm": meta["name"]}),
            "annotations": tmeta.get("annotations") or {},
            "ownerReferences": [{
                "apiVersion": API, "kind": "VirtualMachine", "name": meta["name"], "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": template.get("spec") or {},
    }


class VmReconciler:
    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def reconcile(self, vm: dict, vmi: dict | None) -> None:
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        if vmi is not None and not any(o.get("uid") == vm["metadata"]["uid"]
                                       for o in vmi["metadata"].get("ownerReferences") or []):
            self._status(vm, vmi, extra={"conditions": [{
                "type": "Failure", "status": "True", "reason": "FailedCreate",
                "message": f"a VirtualMachineInstance named {name} exists and is not owned by this VM"}]})
            return
        action = desired_action(vm, vmi)
        vmi_path = path_for(API, "virtualmachineinstances", ns, name)
        requests = remaining_requests(vm, vmi)
        try:
            if action in ("delete", "replace"):
                self.client.delete(vmi_path, {"preconditions": {"uid": vmi["metadata"]["uid"]}})
                log.info("VM %s/%s: %s its VMI%s", ns, name, "deleted" if action == "delete" else "replacing",
                         " (stop request)" if has_stop_request_for(vm, vmi) else "")
                # 'replace' creates the new VMI once the old one is gone (a later DELETED event). RerunOnFailure
                # asks for that with a start request, as KubeVirt does: without one a stopped VM stays stopped.
                if action == "replace" and run_strategy(vm) == "RerunOnFailure" and not any(
                        r.get("action") == START for r in requests):
                    requests = [*requests, {"action": START}]
            elif action == "create":
                vmi = self.client.create(path_for(API, "virtualmachineinstances", ns), vmi_for(vm))
                log.info("VM %s/%s: created its VMI%s", ns, name, " (start request)" if has_start_request(vm) else "")
                requests = remaining_requests(vm, vmi)
        except (ConflictError, NotFoundError):
            return  # raced with someone: the watch brings the next state
        self._status(vm, vmi, created_now=action == "create", requests=requests)

    def _status(self, vm: dict, vmi: dict | None, created_now: bool = False, extra: dict | None = None,
                requests: list[dict] | None = None) -> None:
        vmi_status = (vmi or {}).get("status") or {}
        conditions = [c for c in vmi_status.get("conditions") or [] if c.get("type") in ("Ready", "Paused")]
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        # Once: remember that the VMI was created, so it is never created a second time.
        once_done = bool((vm.get("status") or {}).get("created")) and run_strategy(vm) == "Once"
        status = {
            "printableStatus": printable_status(vm, vmi),
            "created": vmi is not None or once_done,
            "ready": ready,
            "conditions": conditions,
        }
        if created_now:
            status["created"] = True
        if status["created"] or (vm.get("status") or {}).get("runStrategy"):
            status["runStrategy"] = run_strategy(vm)
        if extra:
            status.update(extra)
        old = vm.get("status") or {}
        if requests is not None and requests != (old.get("stateChangeRequests") or []):
            # The version-guarded write below also spares a request the subresource API added since the read.
            status["stateChangeRequests"] = requests or None
        if all(old.get(k) == v for k, v in status.items()):
            return
        try:  # guarded: a VM deleted and made again under its name must not get the status meant for the old one
            self.client.merge_patch(path_for(API, "virtualmachines", vm["metadata"]["namespace"],
                                             vm["metadata"]["name"], "status"),
                                    {"metadata": {"resourceVersion": vm["metadata"]["resourceVersion"]},
                                     "status": status})
        except (ConflictError, NotFoundError):
            pass  # changed or gone meanwhile: its next event brings the VM as it is now
