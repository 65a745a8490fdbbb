"""`virtctl start/stop/restart` of VMs with runStrategy Manual and RerunOnFailure, on a stack lab: the subresource
API writes KubeVirt's status.stateChangeRequests, our controller acts on them (a real node agent runs the VMIs)
and removes each once done. The client is KubeVirt's own virtctl v1.7.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Kubectl, wait_until
from virtops.api.subresources import change_request_patch, is_failed_test
from virtops.kube import InvalidError, KubeClient, path_for

pytest.importorskip("libvirt")

# Diskless guests ignore ACPI: a short grace period keeps stops quick.
TEMPLATE = {"terminationGracePeriodSeconds": 1,
            "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}


@pytest.fixture
def lab(stack_lab, stack_ns):
    """(namespace, kubectl, KubeVirt's virtctl, the lab's info)."""
    info, kubectl = stack_lab
    return stack_ns, kubectl, Kubectl(Path(info.state_dir) / "bin" / "virtctl", info.kubeconfig), info


def make_vm(kubectl, ns: str, name: str, strategy: str) -> None:
    kubectl("create", "-f", "-", stdin=json.dumps({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name, "namespace": ns},
        "spec": {"runStrategy": strategy, "template": {"spec": TEMPLATE}}}))


def vm_status(kubectl, ns: str, name: str) -> dict:
    return json.loads(kubectl("-n", ns, "get", "vm", name, "-o", "json")).get("status") or {}


def vmi_uid_phase(kubectl, ns: str, name: str) -> tuple[str, str]:
    out = kubectl.run("-n", ns, "get", "vmi", name, "-o", "jsonpath={.metadata.uid} {.status.phase}", check=False)
    uid, _sep, phase = out.stdout.partition(" ") if out.returncode == 0 else ("", "", "")
    return uid, phase


def wait_running(kubectl, ns: str, name: str, not_uid: str = "") -> str:
    """The uid of a Running VMI (other than ``not_uid``), once the VM has no request left."""
    def running() -> str:
        uid, phase = vmi_uid_phase(kubectl, ns, name)
        done = not vm_status(kubectl, ns, name).get("stateChangeRequests")
        return uid if phase == "Running" and uid != not_uid and done else ""
    return wait_until(running, 1200, 0.1)


def wait_stopped(kubectl, ns: str, name: str) -> None:
    def stopped() -> bool:
        status = vm_status(kubectl, ns, name)
        return (vmi_uid_phase(kubectl, ns, name)[0] == "" and not status.get("stateChangeRequests")
                and status.get("printableStatus") == "Stopped")
    wait_until(stopped, 1200, 0.1)


def refused(virtctl, *args: str) -> str:
    proc = virtctl.run(*args, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr.strip()


def conflict(name: str, why: str) -> str:
    return f'Operation cannot be fulfilled on virtualmachine.kubevirt.io "{name}": {why}'


@pytest.mark.parametrize("strategy", ["Manual", "RerunOnFailure"])
def test_virtctl_start_stop_restart_through_state_change_requests(lab, strategy) -> None:
    ns, kubectl, virtctl, _info = lab
    name = strategy.lower()
    make_vm(kubectl, ns, name, strategy)
    if strategy == "Manual":
        wait_stopped(kubectl, ns, name)  # Manual never starts by itself
        assert conflict(name, "VM is not running") in refused(virtctl, "stop", name, "-n", ns)
        assert conflict(name, "VM is not running: Halted") in refused(virtctl, "restart", name, "-n", ns)
        out = virtctl("start", name, "-n", ns)
        print(f"virtctl start: {out.strip()}")
        assert f"VM {name} was scheduled to start" in out
    first = wait_running(kubectl, ns, name)  # RerunOnFailure: started on its own, as the VM came to the strategy

    assert conflict(name, "VM is already running") in refused(virtctl, "start", name, "-n", ns)
    out = virtctl("restart", name, "-n", ns)
    print(f"virtctl restart: {out.strip()}")
    assert f"VM {name} was scheduled to restart" in out
    second = wait_running(kubectl, ns, name, not_uid=first)
    assert vm_status(kubectl, ns, name)["runStrategy"] == strategy  # the spec was never touched

    out = virtctl("stop", name, "-n", ns)
    print(f"virtctl stop: {out.strip()}")
    assert f"VM {name} was scheduled to stop" in out
    wait_stopped(kubectl, ns, name)  # and it stays stopped: RerunOnFailure restarts only a failed VMI
    assert json.loads(kubectl("-n", ns, "get", "vm", name, "-o", "jsonpath={.spec}"))["runStrategy"] == strategy
    message = refused(virtctl, "stop", name, "-n", ns)
    print(f"virtctl stop again: {message}")
    assert conflict(name, "VM is not running") in message

    assert f"VM {name} was scheduled to start" in virtctl("start", name, "-n", ns)
    assert wait_running(kubectl, ns, name) not in (first, second)


def test_a_pending_request_refuses_the_next_and_a_stale_read_loses_the_race(lab) -> None:
    """A VMI of the VM's name that the VM does not own stops the controller from acting (it reports a Failure
    condition), so the requests of the first start stay pending. That VMI has finished (as if its guest powered
    off): a start of a Manual VM then asks to stop it and start a new one."""
    ns, kubectl, virtctl, info = lab
    kubectl("create", "-f", "-", stdin=json.dumps({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "held", "namespace": ns},
        "spec": dict(TEMPLATE, nodeSelector={"no-such-node": "x"})}))  # never scheduled
    kubectl("-n", ns, "patch", "vmi", "held", "--type=merge", "-p", json.dumps({"status": {"phase": "Succeeded"}}))
    uid = vmi_uid_phase(kubectl, ns, "held")[0]
    make_vm(kubectl, ns, "held", "Manual")
    wait_until(lambda: any(c.get("type") == "Failure" for c in vm_status(kubectl, ns, "held").get("conditions") or []),
               600, 0.1)
    admin = KubeClient.from_kubeconfig(info.kubeconfig)
    stale = admin.get(path_for("kubevirt.io/v1", "virtualmachines", ns, "held"))

    assert "VM held was scheduled to start" in virtctl("start", "held", "-n", ns)
    pending = [{"action": "Stop", "uid": uid}, {"action": "Start"}]
    assert vm_status(kubectl, ns, "held")["stateChangeRequests"] == pending
    message = refused(virtctl, "start", "held", "-n", ns)
    print(f"virtctl start with a start pending: {message}")
    assert "Internal error occurred: unable to complete request: stop/start already underway" in message

    # The API's guard: the patch of a start computed from the VM as it was before that start fails kube-apiserver's
    # test operation (the API answers that with 409 and these words).
    with pytest.raises(InvalidError) as lost:
        admin.request("PATCH", path_for("kubevirt.io/v1", "virtualmachines", ns, "held", "status"), None,
                      change_request_patch(stale, {"action": "Start"}), "application/json-patch+json")
    print(f"a start computed from a stale read: {lost.value.status} {lost.value.message}")
    assert is_failed_test(lost.value)
    assert vm_status(kubectl, ns, "held")["stateChangeRequests"] == pending
