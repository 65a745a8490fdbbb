"""vmi_power end to end: a stack lab (controller + subresource API + a real node agent + libvirt)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import CRDS, USER_ROLES, Kubectl, fresh_namespace, recap, run_module, run_playbook, wait_until

libvirt = pytest.importorskip("libvirt")


def wait_until_long(predicate):
    return wait_until(predicate, attempts=600, delay=0.1)


@pytest.fixture(scope="module")
def stack():
    """A lab of its own with our controller and one node agent (lab-node-1)."""
    from virtops.lab import ControlPlane

    plane = ControlPlane(f"power-{os.getpid()}", stack=True, nodes=1)
    info = plane.up()
    kubectl = Kubectl(f"{info.state_dir}/bin/kubectl", info.kubeconfig)
    kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
    kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io", "--timeout=60s")
    available = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    wait_until_long(lambda: kubectl.run("get", "apiservice", "v1.subresources.kubevirt.io", "-o", available,
                                        check=False).stdout == "True")
    try:
        yield info, kubectl
    finally:
        plane.down()


@pytest.fixture
def ns(stack):
    with fresh_namespace(stack[1], "p", "vmis") as name:
        yield name


def power(stack, check_mode=False, **args):
    info, _kubectl = stack
    return run_module("vmi_power", dict({"kubeconfig": info.kubeconfig}, **args), check_mode=check_mode)


def running_vmi(stack, ns, name="testvmi", **spec):
    info, kubectl = stack
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": name},
            # A diskless guest ignores ACPI: a short grace period keeps deletes quick.
            "spec": dict({"terminationGracePeriodSeconds": 1,
                          "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}, **spec)}
    kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(body))
    result = run_module("vmi", {"kubeconfig": info.kubeconfig, "name": name, "namespace": ns, "state": "present",
                                "definition": body, "wait": True, "wait_timeout": 120})
    assert result["summary"]["phase"] == "Running", result
    return result


def domain_state(ns, name):
    conn = libvirt.open("qemu:///system")
    try:
        return conn.lookupByName(f"{ns}_{name}").state()[0]
    finally:
        conn.close()


def test_pause_pause_again_unpause_unpause_again(stack, ns):
    _info, kubectl = stack
    running_vmi(stack, ns)
    first = power(stack, name="testvmi", namespace=ns, state="paused")
    assert first["changed"] is True and first["summary"]["paused"] is True
    assert domain_state(ns, "testvmi") == libvirt.VIR_DOMAIN_PAUSED
    message = kubectl("-n", ns, "get", "vmi", "testvmi", "-o",
                      "jsonpath={.status.conditions[?(@.type==\"Paused\")].message}")
    assert message == "VMI was paused by user"
    assert kubectl("-n", ns, "get", "vmi", "testvmi", "-o", "jsonpath={.status.phase}") == "Running"

    again = power(stack, name="testvmi", namespace=ns, state="paused")
    assert again["changed"] is False

    resumed = power(stack, name="testvmi", namespace=ns, state="running")
    assert resumed["changed"] is True and resumed["summary"]["paused"] is False
    assert domain_state(ns, "testvmi") == libvirt.VIR_DOMAIN_RUNNING
    assert power(stack, name="testvmi", namespace=ns, state="running")["changed"] is False


def test_check_run_then_real_run_then_check_run(stack, ns):
    running_vmi(stack, ns)
    check = power(stack, check_mode=True, name="testvmi", namespace=ns, state="paused")
    assert check["changed"] is True
    assert domain_state(ns, "testvmi") == libvirt.VIR_DOMAIN_RUNNING
    assert power(stack, name="testvmi", namespace=ns, state="paused")["changed"] is True
    assert power(stack, check_mode=True, name="testvmi", namespace=ns, state="paused")["changed"] is False


def test_pause_a_vm_by_name(stack, ns):
    _info, kubectl = stack
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "myvm"},
          "spec": {"runStrategy": "Manual", "template": {"spec": {"domain": {"devices": {}}}}}}
    kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(vm))
    stopped = power(stack, kind="vm", name="myvm", namespace=ns, state="paused")
    assert stopped["failed"] is True and f"VirtualMachine {ns}/myvm is not running" in stopped["msg"]
    running_vmi(stack, ns, name="myvm")
    result = power(stack, kind="VirtualMachine", name="myvm", namespace=ns, state="paused")
    assert result["changed"] is True and result["summary"]["paused"] is True


def test_pausing_a_vmi_that_is_not_running_fails_clearly(stack, ns):
    _info, kubectl = stack
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": "nowhere"},
            "spec": {"nodeSelector": {"no": "such-node"}, "domain": {"devices": {}}}}
    kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(body))
    result = power(stack, name="nowhere", namespace=ns, state="paused")
    assert result["failed"] is True
    assert "VM is not running" in result["msg"]
    check = power(stack, check_mode=True, name="nowhere", namespace=ns, state="paused")
    assert check["failed"] is True and "VM is not running" in check["msg"]


def test_a_user_without_the_pause_verb_gets_a_clear_403(stack, ns):
    _info, kubectl = stack
    running_vmi(stack, ns)
    kubectl("-n", ns, "create", "rolebinding", "viewer", "--clusterrole=kubevirt.io:view", "--user=viewer")
    result = power(stack, name="testvmi", namespace=ns, state="paused", impersonate_user="viewer")
    assert result["failed"] is True
    assert "RBAC denied verb update on virtualmachineinstances/pause" in result["msg"]
    assert domain_state(ns, "testvmi") == libvirt.VIR_DOMAIN_RUNNING


def test_pausing_a_vmi_whose_node_has_no_agent_fails_clearly_and_records_nothing(stack, ns):
    """Pause goes through the node's agent (issue #15): with no agent for the node, KubeVirt's error, no silent 200."""
    _info, kubectl = stack
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "orphan", "labels": {"kubevirt.io/nodeName": "ghost"}},
            "spec": {"domain": {"devices": {}}},
            "status": {"phase": "Running", "nodeName": "ghost"}}
    kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(body))
    result = power(stack, name="orphan", namespace=ns, state="paused", wait_timeout=2)
    assert result["failed"] is True
    assert result.get("changed") is not True
    assert "Failed to pause VirtualMachineInstance" in result["msg"]
    assert "No virt-handler on node ghost found" in result["msg"]
    vmi = json.loads(kubectl("-n", ns, "get", "vmi", "orphan", "-o", "json"))
    assert not [c for c in (vmi.get("status") or {}).get("conditions") or [] if c.get("type") == "Paused"]


def test_lifecycle_playbook_runs_twice_with_the_same_result(stack):
    """playbooks/lifecycle.yml (create, boot, list, get, pause, read Paused, unpause, delete) on a real node."""
    info, kubectl = stack
    ns = f"life-{os.urandom(3).hex()}"
    try:
        for _run in range(2):
            proc = run_playbook("playbooks/lifecycle.yml", "-e", f"kubeconfig={info.kubeconfig}",
                                "-e", f"vmi_namespace={ns}")
            assert "Paused: VMI was paused by user (phase stays Running)" in proc.stdout
            # The guest booted, took its address from user-mode networking, and the table shows it.
            assert "10.0.2.15" in proc.stdout
            counts = recap(proc)
            # create, pause, unpause, delete change something every run (the namespace only the first time).
            assert counts["changed"] in (4, 5) and counts["failed"] == 0
        assert kubectl("-n", ns, "get", "vmis", "-o", "name") == ""
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
