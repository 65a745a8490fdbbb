"""What pause/unpause and start/stop/restart do, with KubeVirt's status codes and messages.

Pause and unpause check the VMI as KubeVirt's virt-api does (phase, the Paused condition), then call the
node API of the VMI's node (nodes.py), whose agent suspends or resumes the domain and answers with what
really happened; the 200 comes only after that. The agent then writes the Paused condition
(`reason: PausedByUser`, `message: VMI was paused by user`) or removes it. Nothing is recorded on the VMI:
no plain patch of the object can pause a VMI, only this subresource with its own RBAC verb. With dryRun
the checks run and the agent is not called (as in KubeVirt). An agent that is down is an error, never a
silent 200; two concurrent pauses give one 200 and one 409 "VMI is already paused" (the agent does one
power operation per domain at a time and checks the domain itself).

Messages and checks follow kubevirt/kubevirt pkg/virt-api/rest (lifecycle.go, and the constants of
subresource.go): PauseVMIRequestHandler (phase != Running -> "VM is not running"; Paused condition
-> "VMI is already paused"), UnpauseVMIRequestHandler ("VMI is not running", "VMI is not paused"),
fetchVirtualMachine (404 `virtualmachine.kubevirt.io "NAME" not found`), StartVMRequestHandler
("VM is already running" when a VMI exists that is not final and whose phase is neither Unknown nor
unset; "<strategy> does not support manual start requests" for Always/Once), StopVMRequestHandler
("VM is not running" for Halted without a live VMI; "Halted only supports manual stop requests with a
shorter graceperiod"), RestartVMRequestHandler ("RunStategy <s> does not support manual restart
requests" — KubeVirt's spelling — for Halted/Once; "VM is not running: Halted" without a VMI).
Conflicts name `virtualmachineinstance.kubevirt.io` or `virtualmachine.kubevirt.io` as KubeVirt's
`v1.Resource(...)` does.

Start, stop and restart of a VM whose runStrategy the controller cannot express in the spec (Manual,
RerunOnFailure; restart for every strategy) write KubeVirt's `status.stateChangeRequests` (getChangeRequestJson):
a JSON patch of the VM's status subresource whose first operation tests that the list is still what the API
read, so two requests racing cannot both land (the loser gets 409 with the API server's words). A pending
request refuses a new start or restart with KubeVirt's 500 "unable to complete request: stop/start already
underway"; a stop replaces whatever is pending. The controller (controller/vms.py) acts on the first request
and removes it once done.
"""

from __future__ import annotations

import socket
from typing import Any

from virtops.api.nodes import NodeApiClient
from virtops.api.status import StatusError, bad_request, conflict, internal, not_found
from virtops.kube import ApiError, ConflictError, KubeClient, NotFoundError, path_for
from virtops.kubevirt import FINAL_PHASES, run_strategy

KUBEVIRT = "kubevirt.io"
VMI_KIND = "virtualmachineinstance"
VM_KIND = "virtualmachine"
START_REQUEST, STOP_REQUEST = "Start", "Stop"  # KubeVirt's StateChangeRequestAction values
UNDERWAY = "unable to complete request: stop/start already underway"

Obj = dict[str, Any]


def is_paused(vmi: Obj) -> bool:
    conditions = (vmi.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Paused" and c.get("status") == "True" for c in conditions)


class Subresources:
    """The operations behind the HTTP endpoints; each returns normally or raises StatusError."""

    def __init__(self, client: KubeClient, nodes: NodeApiClient | None = None) -> None:
        self.client = client
        self.nodes = nodes or NodeApiClient(client, None)

    # --- VirtualMachineInstances ----------------------------------------------------------------
    def _vmi(self, namespace: str, name: str) -> Obj:
        try:
            return self.client.get(path_for("kubevirt.io/v1", "virtualmachineinstances", namespace, name))
        except NotFoundError:
            raise not_found(KUBEVIRT, VMI_KIND, name) from None
        except ApiError as exc:
            raise internal(exc.message) from exc

    def pause(self, namespace: str, name: str, dry_run: bool = False) -> None:
        vmi = self._vmi(namespace, name)
        if (vmi.get("status") or {}).get("phase") != "Running":
            raise conflict(KUBEVIRT, VMI_KIND, name, "VM is not running")
        if is_paused(vmi):
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is already paused")
        if not dry_run:
            self.nodes.put(vmi, "pause")

    def unpause(self, namespace: str, name: str, dry_run: bool = False) -> None:
        vmi = self._vmi(namespace, name)
        if (vmi.get("status") or {}).get("phase") != "Running":
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is not running")
        if not is_paused(vmi):
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is not paused")
        if not dry_run:
            self.nodes.put(vmi, "unpause")

    def portforward(self, namespace: str, name: str, resource: str, port: str, protocol: str) -> socket.socket:
        """A TCP stream to the guest's ``port``, checked as KubeVirt's PortForwardRequestHandler does (portforward.go,
        dialers.go): a VM's VMI must be its own, a paused VMI is 409 "VMI is paused", a VMI without interfaces
        400 "no network interfaces are present". KubeVirt dials the pod's address and has no phase check; we
        must go through the node, so a VMI that is not Running is 400 "VMI is not running" (KubeVirt's text for
        the other streams). TCP only: UDP datagrams would need framing on the hop to the node."""
        vmi = self._vmi_of_vm(namespace, name) if resource == "virtualmachines" else self._vmi(namespace, name)
        if is_paused(vmi):
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is paused")
        if not (vmi.get("status") or {}).get("interfaces"):
            raise bad_request("no network interfaces are present")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise bad_request(f'strconv.Atoi: parsing "{port}": invalid port')
        if protocol.lower() != "tcp":
            raise bad_request(f"protocol {protocol} is not supported by this server (only tcp)")
        if (vmi.get("status") or {}).get("phase") != "Running":
            raise bad_request("VMI is not running")
        return self.nodes.stream(vmi, "portforward", int(port))

    def guest_info(self, namespace: str, name: str, op: str) -> Obj:
        """guestosinfo, userlist or filesystemlist from the node's agent, after KubeVirt's checks (subresource.go):
        409 "VMI is not running" unless Running, 409 "VMI does not have guest agent connected" without the
        AgentConnected condition. The server sends every error of these three as KubeVirt's virt-api does."""
        vmi = self._vmi(namespace, name)
        status = vmi.get("status") or {}
        if status.get("phase") != "Running":
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is not running")
        if not any(c.get("type") == "AgentConnected" for c in status.get("conditions") or []):
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI does not have guest agent connected")
        return self.nodes.get(vmi, op)

    def stream(self, namespace: str, name: str, op: str) -> socket.socket:
        """The node's plain stream for console or vnc, after KubeVirt's checks (console.go, vnc.go)."""
        vmi = self._vmi(namespace, name)
        phase = (vmi.get("status") or {}).get("phase")
        if op == "console" and phase == "Failed":
            raise conflict(KUBEVIRT, VMI_KIND, name, "VMI is in failed status")
        if phase != "Running":
            raise bad_request("VMI is not running")
        return self.nodes.stream(vmi, op)

    # --- VirtualMachines ------------------------------------------------------------------------
    def _vm(self, namespace: str, name: str) -> Obj:
        try:
            return self.client.get(path_for("kubevirt.io/v1", "virtualmachines", namespace, name))
        except NotFoundError:
            raise not_found(KUBEVIRT, VM_KIND, name) from None
        except ApiError as exc:
            raise internal(f"unable to retrieve vm [{name}]: {exc.message}") from exc

    def _vmi_of_vm(self, namespace: str, name: str) -> Obj:
        """The VM's own VMI, as KubeVirt's FetchVirtualMachineInstanceForVM finds it."""
        vm = self._vm(namespace, name)
        if not (vm.get("status") or {}).get("created"):
            raise conflict(KUBEVIRT, VM_KIND, name, "VMI is not started")
        vmi = self._vmi(namespace, name)
        if not any(ref.get("uid") == vm["metadata"].get("uid") for ref in vmi["metadata"].get("ownerReferences") or []):
            raise internal(f"unable to retrieve vmi [{name}] for vm: it is not this VM's")
        return vmi

    def _vmi_or_none(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._vmi(namespace, name)
        except StatusError as exc:
            if exc.code == 404:
                return None
            raise

    def _set_running(self, vm: Obj, running: bool, dry_run: bool) -> None:
        meta = vm["metadata"]
        spec = vm.get("spec") or {}
        if spec.get("runStrategy") or "running" not in spec:
            change: Obj = {"runStrategy": "Always" if running else "Halted"}
            if "running" in spec:
                change["running"] = None  # the two fields are exclusive
        else:
            change = {"running": running}
        path = path_for("kubevirt.io/v1", "virtualmachines", meta["namespace"], meta["name"])
        try:
            self.client.request("PATCH", path, {"dryRun": "All" if dry_run else None},
                                {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": change},
                                "application/merge-patch+json")
        except ConflictError as exc:
            raise conflict(KUBEVIRT, VM_KIND, meta["name"], exc.message) from exc
        except ApiError as exc:
            raise internal(exc.message) from exc

    def _request_state_change(self, vm: Obj, dry_run: bool, *changes: Obj) -> None:
        """Append ``changes`` to the VM's status.stateChangeRequests, guarded by a test of the list as read."""
        meta = vm["metadata"]
        path = path_for("kubevirt.io/v1", "virtualmachines", meta["namespace"], meta["name"], "status")
        try:
            self.client.request("PATCH", path, {"dryRun": "All" if dry_run else None},
                                change_request_patch(vm, *changes), "application/json-patch+json")
        except StatusError:
            raise
        except ApiError as exc:
            if is_failed_test(exc):
                raise conflict(KUBEVIRT, VM_KIND, meta["name"], exc.message) from exc
            raise internal(exc.message) from exc

    def start(self, namespace: str, name: str, dry_run: bool = False) -> None:
        vm = self._vm(namespace, name)
        vmi = self._vmi_or_none(namespace, name)
        phase = ((vmi or {}).get("status") or {}).get("phase", "")
        if vmi is not None and phase not in FINAL_PHASES and phase not in ("Unknown", ""):
            raise conflict(KUBEVIRT, VM_KIND, name, "VM is already running")
        strategy = run_strategy(vm)
        if strategy in ("Always", "Once"):
            raise conflict(KUBEVIRT, VM_KIND, name, f"{strategy} does not support manual start requests")
        if strategy == "Halted":
            self._set_running(vm, True, dry_run)
            return
        if strategy == "RerunOnFailure" and phase == "Failed":
            raise conflict(KUBEVIRT, VM_KIND, name, "RerunOnFailure does not support starting VM from failed state")
        # A VMI that finished (Manual; RerunOnFailure: Succeeded) is stopped first, then a new one starts.
        finished = vmi is not None and (phase == "Succeeded" or (strategy == "Manual" and phase in FINAL_PHASES))
        start = {"action": START_REQUEST}
        if finished:
            self._request_state_change(vm, dry_run, stop_request(vmi), start)
        else:
            self._request_state_change(vm, dry_run, start)

    def stop(self, namespace: str, name: str, dry_run: bool = False) -> None:
        vm = self._vm(namespace, name)
        vmi = self._vmi_or_none(namespace, name)
        live = vmi is not None and (vmi.get("status") or {}).get("phase") not in FINAL_PHASES
        strategy = run_strategy(vm)
        if strategy == "Halted":
            if not live:
                raise conflict(KUBEVIRT, VM_KIND, name, "VM is not running")
            raise conflict(KUBEVIRT, VM_KIND, name,
                           "Halted only supports manual stop requests with a shorter graceperiod")
        if strategy in ("Always", "Once"):
            self._set_running(vm, False, dry_run)
            return
        if not live:
            raise conflict(KUBEVIRT, VM_KIND, name, "VM is not running")
        self._request_state_change(vm, dry_run, stop_request(vmi))

    def restart(self, namespace: str, name: str, dry_run: bool = False) -> None:
        vm = self._vm(namespace, name)
        strategy = run_strategy(vm)
        if strategy in ("Halted", "Once"):
            raise conflict(KUBEVIRT, VM_KIND, name, f"RunStategy {strategy} does not support manual restart requests")
        vmi = self._vmi_or_none(namespace, name)
        if vmi is None:
            raise conflict(KUBEVIRT, VM_KIND, name, "VM is not running: Halted")
        # The controller deletes this VMI (its uid: a newer one is spared), then starts a new one.
        self._request_state_change(vm, dry_run, stop_request(vmi), {"action": START_REQUEST})


def stop_request(vmi: Obj) -> Obj:
    return {"action": STOP_REQUEST, "uid": vmi["metadata"]["uid"]}


def change_request_patch(vm: Obj, *changes: Obj) -> list[Obj]:
    """KubeVirt's JSON patch for new state change requests (getChangeRequestJson): without any status, add one;
    else test that the list is what was read, then add to an empty list or, for a lone stop, replace it. Any
    other pending request is KubeVirt's 500 "stop/start already underway"."""
    status = vm.get("status") or {}
    if not status:
        return [{"op": "add", "path": "/status", "value": {"stateChangeRequests": list(changes)}}]
    pending = status.get("stateChangeRequests") or []
    if pending and not (len(changes) == 1 and changes[0]["action"] == STOP_REQUEST):
        raise internal(UNDERWAY)
    return [{"op": "test", "path": "/status/stateChangeRequests", "value": status.get("stateChangeRequests")},
            {"op": "replace" if pending else "add", "path": "/status/stateChangeRequests", "value": list(changes)}]


def is_failed_test(exc: ApiError) -> bool:
    """Whether kube-apiserver refused our JSON patch because its test operation failed (the list changed since).

    kube-apiserver 1.37 says only 422 "the server rejected our request due to an error in our request", without
    causes (field validation errors of a 422 carry causes; our patch has none to make). KubeVirt looks for
    "jsonpatch test operation does not apply", which this API server never writes, so KubeVirt's loser gets a 500;
    we answer what KubeVirt means, 409."""
    return exc.status == 422 and not (exc.body.get("details") or {}).get("causes")


def parse_dry_run(body: Any, query: dict[str, list[str]]) -> bool:
    """dryRun from the body (`{"dryRun": ["All"]}`, KubeVirt's PauseOptions) or the query (`dryRun=All`)."""
    values = list(query.get("dryRun", []))
    if body not in (None, b"", {}):
        if not isinstance(body, dict):
            raise bad_request("Can not unmarshal Request body to struct, error: body is not a JSON object")
        dry = body.get("dryRun") or []
        if not isinstance(dry, list) or not all(isinstance(v, str) for v in dry):
            raise bad_request("Can not unmarshal Request body to struct, error: dryRun must be a list of strings")
        values += dry
    for value in values:
        if value != "All":
            raise bad_request(f'Invalid dryRun value "{value}": only "All" is supported')
    return bool(values)
