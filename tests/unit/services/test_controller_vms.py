"""VM run strategies: what the controller does with a VM's VMI, and what the VM says."""

from __future__ import annotations

import pytest
from virtops.controller.vms import (
    VmReconciler,
    desired_action,
    printable_status,
    remaining_requests,
    run_strategy,
    vmi_for,
)


def vm(strategy=None, running=None, created=False):
    spec = {"template": {"metadata": {"labels": {"app": "a"}}, "spec": {"domain": {"devices": {}}}}}
    if strategy:
        spec["runStrategy"] = strategy
    if running is not None:
        spec["running"] = running
    return {"metadata": {"name": "v", "namespace": "n", "uid": "u"}, "spec": spec, "status": {"created": created}}


def vmi(phase="Running", paused=False):
    conds = [{"type": "Paused", "status": "True"}] if paused else []
    return {"metadata": {"name": "v"}, "status": {"phase": phase, "conditions": conds}}


def test_running_maps_to_always_and_halted():
    assert run_strategy(vm(running=True)) == "Always"
    assert run_strategy(vm(running=False)) == "Halted"


@pytest.mark.parametrize(("spec", "strategy"), [
    ({"runStrategy": None, "running": True}, "Always"),
    ({"runStrategy": "", "running": True}, "Always"),
    ({"runStrategy": None}, "Halted"),
    ({"runStrategy": ""}, "Halted"),
    ({"runStrategy": "Manual", "running": True}, "Manual"),
])
def test_controller_and_subresource_api_read_a_null_or_empty_run_strategy_alike(spec, strategy):
    # A null runStrategy is unset, as in KubeVirt: spec.running decides. The controller took the null itself for
    # the strategy (and did nothing with the VM) where the API answered as for Always.
    from virtops.api import subresources

    assert run_strategy({"spec": spec}) == strategy
    assert subresources.run_strategy({"spec": spec}) == strategy
    assert desired_action({"metadata": {}, "spec": spec}, None) == ("create" if strategy == "Always" else "none")


@pytest.mark.parametrize(("strategy", "current", "created", "action"), [
    ("Always", None, False, "create"),
    ("Always", vmi("Succeeded"), True, "replace"),
    ("Always", vmi("Failed"), True, "replace"),
    ("Always", vmi("Running"), True, "none"),
    ("RerunOnFailure", vmi("Failed"), True, "replace"),
    ("RerunOnFailure", vmi("Succeeded"), True, "delete"),  # KubeVirt 1.7: a guest that powered off stays off
    ("Once", None, False, "create"),
    ("Once", None, True, "none"),
    ("Once", vmi("Failed"), True, "none"),
    ("Manual", None, False, "none"),
    ("Halted", vmi("Running"), True, "delete"),
    ("Halted", None, True, "none"),
])
def test_desired_action(strategy, current, created, action):
    assert desired_action(vm(strategy, created=created), current) == action


def test_printable_status():
    assert printable_status(vm("Always"), None) == "Starting"
    assert printable_status(vm("Halted"), None) == "Stopped"
    assert printable_status(vm("Always"), vmi("Running")) == "Running"
    assert printable_status(vm("Always"), vmi("Running", paused=True)) == "Paused"
    assert printable_status(vm("Always"), vmi("Scheduled")) == "Starting"


def test_the_vmi_is_the_template_owned_by_the_vm():
    made = vmi_for(vm("Always"))
    assert made["metadata"]["name"] == "v" and made["metadata"]["labels"]["app"] == "a"
    owner = made["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("VirtualMachine", "u", True)


def with_requests(obj, *requests, status_strategy=None):
    obj["status"]["stateChangeRequests"] = list(requests)
    if status_strategy:
        obj["status"]["runStrategy"] = status_strategy
    return obj


def vmi_uid(uid, phase="Running"):
    made = vmi(phase)
    made["metadata"]["uid"] = uid
    return made


START = {"action": "Start"}


def stop(uid):
    return {"action": "Stop", "uid": uid}


@pytest.mark.parametrize(("strategy", "requests", "current", "action"), [
    ("Manual", [START], None, "create"),
    ("Manual", [], None, "none"),
    ("Manual", [stop("a")], vmi_uid("a"), "delete"),
    ("Manual", [stop("old")], vmi_uid("a"), "none"),  # a stop for an earlier VMI spares this one
    ("Manual", [stop("a"), START], None, "none"),  # the stop is done; the start comes next, once it is removed
    ("RerunOnFailure", [stop("a")], vmi_uid("a"), "delete"),
    ("RerunOnFailure", [START], None, "create"),
    ("Always", [stop("a"), START], vmi_uid("a"), "replace"),
])
def test_state_change_requests_drive_the_vmi(strategy, requests, current, action):
    assert desired_action(with_requests(vm(strategy, created=True), *requests), current) == action


def test_a_stopped_rerun_on_failure_vm_stays_stopped_and_one_new_to_the_strategy_starts():
    assert desired_action(with_requests(vm("RerunOnFailure"), status_strategy="RerunOnFailure"), None) == "none"
    assert printable_status(with_requests(vm("RerunOnFailure"), status_strategy="RerunOnFailure"), None) == "Stopped"
    assert desired_action(with_requests(vm("RerunOnFailure"), status_strategy="Halted"), None) == "create"
    assert desired_action(vm("RerunOnFailure"), None) == "create"


@pytest.mark.parametrize(("requests", "current", "left"), [
    ([stop("a"), START], None, [START]),  # no VMI left: the stop is done
    ([stop("a"), START], vmi_uid("b"), [START]),  # another VMI: that one was stopped already
    ([stop("a"), START], vmi_uid("a"), [stop("a"), START]),  # still there: not done
    ([START], vmi_uid("b"), []),  # a live VMI: the start is done
    ([START], vmi_uid("b", "Succeeded"), [START]),  # a finished one is not a start
    ([START], None, [START]),
    ([], None, []),
])
def test_a_request_is_removed_once_done(requests, current, left):
    assert remaining_requests(with_requests(vm("Manual"), *requests), current) == left


class FakeApi:
    """VMIs and VM status writes of one reconcile, kube-apiserver's answers reduced to what the reconciler reads."""

    def __init__(self):
        self.calls = []

    def delete(self, path, body):
        self.calls.append(("delete", path.rsplit("/", 1)[1], body["preconditions"]["uid"]))

    def create(self, path, body):
        self.calls.append(("create", body["metadata"]["name"]))
        return dict(body, metadata=dict(body["metadata"], uid="new"), status={"phase": "Pending"})

    def merge_patch(self, path, patch):
        self.calls.append(("status", patch["status"].get("stateChangeRequests", "unchanged"),
                           (patch.get("metadata") or {}).get("resourceVersion")))


def test_manual_restart_deletes_then_creates_and_clears_each_request():
    api = FakeApi()
    reconciler = VmReconciler(api)
    owned = vmi_uid("a")
    owned["metadata"]["ownerReferences"] = [{"uid": "u"}]
    the_vm = with_requests(vm("Manual", created=True), stop("a"), START)
    the_vm["metadata"]["resourceVersion"] = "7"
    reconciler.reconcile(the_vm, owned)
    assert api.calls[0] == ("delete", "v", "a")
    assert api.calls[1][1] == "unchanged"  # not done while the VMI is there
    api.calls.clear()
    reconciler.reconcile(the_vm, None)  # the VMI is gone: the stop is done, against the version read
    assert api.calls == [("status", [START], "7")]
    api.calls.clear()
    the_vm = with_requests(vm("Manual", created=True), START)
    the_vm["metadata"]["resourceVersion"] = "8"
    reconciler.reconcile(the_vm, None)
    assert api.calls[0] == ("create", "v")
    assert api.calls[1][1:] == (None, "8")  # the start is done: the list is removed


def test_rerun_on_failure_replaces_a_failed_vmi_through_a_start_request():
    api = FakeApi()
    failed = vmi_uid("a", "Failed")
    failed["metadata"]["ownerReferences"] = [{"uid": "u"}]
    the_vm = with_requests(vm("RerunOnFailure", created=True), status_strategy="RerunOnFailure")
    the_vm["metadata"]["resourceVersion"] = "3"
    VmReconciler(api).reconcile(the_vm, failed)
    assert api.calls == [("delete", "v", "a"), ("status", [START], "3")]


def test_a_vm_reconcile_that_fails_while_the_api_is_away_is_tried_again_and_logged_on_one_line(caplog):
    import urllib3
    from virtops.controller.controller import Controller

    class ApiAway:
        def reconcile(self, vm, vmi):
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))

    ctl = Controller(object())  # type: ignore[arg-type]
    ctl.queue.base_delay = 0.01
    ctl.vm_reconciler = ApiAway()  # type: ignore[assignment]
    ctl.vms[("n", "v")] = vm("Halted")
    ctl.reconcile_vm(("n", "v"))  # the VM's next event may never come: the queue brings it back
    assert ctl.queue.get(timeout=5) == ("vm", "n", "v")
    assert [(r.levelname, r.exc_info) for r in caplog.records] == [("WARNING", None)]
    assert "VM n/v: reconcile failed; retrying in 0.0s: ('Connection aborted.'" in caplog.text
