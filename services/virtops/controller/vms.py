"""VirtualMachines: keep a VM's VMI in line with spec.running / spec.runStrategy, and report VM status.

| runStrategy     | the controller ...                                                     |
|-----------------|------------------------------------------------------------------------|
| Always          | creates the VMI; replaces it when it finished (Succeeded or Failed)      |
| RerunOnFailure  | creates the VMI; replaces it only when it Failed                        |
| Once            | creates the VMI once; never replaces it                                 |
| Manual          | never creates or deletes by itself (start/stop requests do)             |
| Halted          | deletes the VMI                                                         |
``spec.running: true`` means Always and ``false`` Halted, as in KubeVirt.
"""

from __future__ import annotations

import copy
import logging

from virtops.kube import ConflictError, KubeClient, NotFoundError, path_for
from virtops.kubevirt import FINAL_PHASES, run_strategy

log = logging.getLogger("virtops.controller.vms")

API = "kubevirt.io/v1"


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
        if strategy in ("Always", "RerunOnFailure"):
            return "create"
        if strategy == "Once" and not (vm.get("status") or {}).get("created"):
            return "create"
        return "none"
    if deleting:
        return "none"
    if strategy == "Always" and phase in FINAL_PHASES:
        return "replace"
    if strategy == "RerunOnFailure" and phase == "Failed":
        return "replace"
    return "none"


def printable_status(vm: dict, vmi: dict | None) -> str:
    strategy = run_strategy(vm)
    if (vm.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    if vmi is None:
        return "Stopped" if strategy in ("Halted", "Manual", "Once") else "Starting"
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
        try:
            if action in ("delete", "replace"):
                self.client.delete(vmi_path, {"preconditions": {"uid": vmi["metadata"]["uid"]}})
                log.info("VM %s/%s: %s its VMI", ns, name, "deleted" if action == "delete" else "replacing")
                # 'replace' creates the new VMI once the old one is gone (a later DELETED event).
            elif action == "create":
                vmi = self.client.create(path_for(API, "virtualmachineinstances", ns), vmi_for(vm))
                log.info("VM %s/%s: created its VMI", ns, name)
        except (ConflictError, NotFoundError):
            return  # raced with someone: the watch brings the next state
        self._status(vm, vmi, created_now=action == "create")

    def _status(self, vm: dict, vmi: dict | None, created_now: bool = False, extra: dict | None = None) -> None:
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
        if extra:
            status.update(extra)
        old = vm.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        try:  # guarded: a VM deleted and made again under its name must not get the status meant for the old one
            self.client.merge_patch(path_for(API, "virtualmachines", vm["metadata"]["namespace"],
                                             vm["metadata"]["name"], "status"),
                                    {"metadata": {"resourceVersion": vm["metadata"]["resourceVersion"]},
                                     "status": status})
        except (ConflictError, NotFoundError):
            pass  # changed or gone meanwhile: its next event brings the VM as it is now
