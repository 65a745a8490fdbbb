"""Modules vm and vm_info on a stack lab: our controller runs VMs as VMIs, a real node agent boots them in libvirt,
and start/stop/restart go through the subresource API."""

from __future__ import annotations

import json

import pytest
from conftest import run_module

pytest.importorskip("libvirt")

# A diskless guest ignores ACPI: a short grace period keeps stops quick.
TEMPLATE = {"terminationGracePeriodSeconds": 1,
            "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}


@pytest.fixture
def ns(stack_ns):
    return stack_ns


@pytest.fixture
def vm(stack_lab):
    info, _kubectl = stack_lab

    def call(check_mode=False, diff=False, **args):
        return run_module("vm", dict({"kubeconfig": info.kubeconfig}, **args), check_mode, diff)

    return call


def vmi_uid(kubectl, ns, name):
    return kubectl.run("-n", ns, "get", "vmi", name, "-o", "jsonpath={.metadata.uid}", check=False).stdout


def test_kubevirt_core_options_create_a_running_vm_then_nothing_changes(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    args = dict(name="web", namespace=ns, labels={"app": "web"}, run_strategy="Always", spec=TEMPLATE,
                wait=True, wait_timeout=120)
    first = vm(**args)
    assert first["changed"] is True and first["method"] == "created", first
    assert first["summary"]["ready"] is True and first["summary"]["printable_status"] == "Running"
    # The template carries the labels, so the VMI does (kubevirt.core does the same).
    assert kubectl("-n", ns, "get", "vmi", "web", "-o", "jsonpath={.metadata.labels.app}") == "web"
    again = vm(**args)
    assert again["changed"] is False and again["method"] == "unchanged" and again["power_request"] is None


def test_check_run_then_real_run_then_check_run(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    args = dict(name="dry", namespace=ns, run_strategy="Halted", spec=TEMPLATE)
    assert vm(check_mode=True, **args)["changed"] is True
    assert kubectl.run("-n", ns, "get", "vm", "dry", check=False).returncode != 0
    assert vm(**args)["changed"] is True
    assert vm(check_mode=True, **args)["changed"] is False


def test_stop_start_restart_through_the_subresources_each_once(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    vm(name="box", namespace=ns, spec=TEMPLATE, wait=True)  # neither running nor run_strategy: runs
    first_uid = vmi_uid(kubectl, ns, "box")
    assert first_uid

    check = vm(check_mode=True, name="box", namespace=ns, state="stopped")
    assert check["changed"] is True and check["power_request"] == "stop"
    assert vmi_uid(kubectl, ns, "box") == first_uid  # dry run: still running

    stopped = vm(name="box", namespace=ns, state="stopped", wait=True)
    assert stopped["changed"] is True and stopped["power_request"] == "stop"
    assert stopped["summary"]["printable_status"] == "Stopped"
    assert vmi_uid(kubectl, ns, "box") == ""
    version = kubectl("-n", ns, "get", "vm", "box", "-o", "jsonpath={.metadata.resourceVersion}")
    again = vm(name="box", namespace=ns, state="stopped")
    assert again["changed"] is False and again["power_request"] is None
    assert kubectl("-n", ns, "get", "vm", "box", "-o", "jsonpath={.metadata.resourceVersion}") == version

    started = vm(name="box", namespace=ns, state="started", wait=True)
    assert started["changed"] is True and started["power_request"] == "start"
    assert started["summary"]["ready"] is True
    second_uid = vmi_uid(kubectl, ns, "box")
    assert second_uid not in ("", first_uid)
    assert vm(name="box", namespace=ns, state="started")["power_request"] is None

    restarted = vm(name="box", namespace=ns, state="restarted", wait=True)
    assert restarted["changed"] is True and restarted["power_request"] == "restart"
    assert vmi_uid(kubectl, ns, "box") not in ("", second_uid)
    assert restarted["summary"]["ready"] is True


def test_a_spec_change_is_patched_and_shown_in_the_diff(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    vm(name="cfg", namespace=ns, run_strategy="Halted", spec=TEMPLATE)
    uid = kubectl("-n", ns, "get", "vm", "cfg", "-o", "jsonpath={.metadata.uid}")
    bigger = json.loads(json.dumps(TEMPLATE))
    bigger["domain"]["resources"]["requests"]["memory"] = "96Mi"
    result = vm(diff=True, name="cfg", namespace=ns, run_strategy="Halted", spec=bigger, labels={"tier": "db"})
    assert result["changed"] is True and result["method"] == "patched"
    after = result["diff"]["after"]
    assert after["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] == "96Mi"
    assert result["diff"]["before"]["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"] == "64Mi"
    assert "managedFields" not in result["vm"]["metadata"]
    assert kubectl("-n", ns, "get", "vm", "cfg", "-o", "jsonpath={.metadata.uid}") == uid


def test_running_replaces_run_strategy_and_state_conflicts_name_the_option(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    vm(name="flip", namespace=ns, run_strategy="Halted", spec=TEMPLATE)
    vm(name="flip", namespace=ns, running=False)
    spec = json.loads(kubectl("-n", ns, "get", "vm", "flip", "-o", "jsonpath={.spec}"))
    assert spec.get("running") is False and "runStrategy" not in spec
    bad = vm(name="flip", namespace=ns, running=False, state="started")
    assert bad["failed"] is True and bad["msg"].startswith("running: False conflicts with state=started")
    missing = vm(name="nothere", namespace=ns, state="started")
    assert missing["failed"] is True and f"spec is required to create VirtualMachine {ns}/nothere" in missing["msg"]


def test_a_batch_applies_the_good_ones_and_names_the_bad_one(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    docs = [{"metadata": {"name": f"b{i}"}, "spec": {"runStrategy": "Halted", "template": {"spec": TEMPLATE}}}
            for i in range(3)]
    docs[1]["spec"]["template"]["spec"] = {"domain": {"resources": {"requests": {"memory": "lots"}}}}
    result = vm(definition=docs, namespace=ns)
    assert result["failed"] is True
    assert result["msg"].startswith(f"1 of 3 VirtualMachines failed: {ns}/b1: Failed to create VirtualMachine")
    assert [r["name"] for r in result["results"]] == ["b0", "b1", "b2"]
    assert kubectl("-n", ns, "get", "vms", "-o", "jsonpath={.items[*].metadata.name}").split() == ["b0", "b2"]
    del docs[1]
    again = vm(definition=docs, namespace=ns)
    assert again["changed"] is False and [r["method"] for r in again["results"]] == ["unchanged", "unchanged"]


def test_a_no_op_batch_of_stopped_vms_sends_two_lists(vm, stack_lab, ns, api_requests):
    docs = [{"metadata": {"name": f"s{i}", "labels": {"app": "batch"}},
             "spec": {"template": {"metadata": {"labels": {"app": "batch"}}, "spec": TEMPLATE}}} for i in range(5)]
    first = vm(definition=docs, namespace=ns, state="stopped")
    assert [(r["method"], r["summary"]["run_strategy"]) for r in first["results"]] == [("created", "Halted")] * 5
    api_requests.clear()
    again = vm(definition=docs, namespace=ns, state="stopped", check_mode=True)
    assert again["changed"] is False and {r["power_request"] for r in again["results"]} == {None}
    # The VMs, then their VMIs (to know that none runs): one LIST each, narrowed by the shared label.
    assert [(m, p.rsplit("/", 1)[1], q.get("labelSelector")) for m, p, q in api_requests] == [
        ("GET", "virtualmachines", "app=batch"), ("GET", "virtualmachineinstances", "app=batch")]


def test_delete_takes_the_vmi_with_it(vm, stack_lab, ns):
    _info, kubectl = stack_lab
    vm(name="gone", namespace=ns, spec=TEMPLATE, wait=True)
    deleted = vm(name="gone", namespace=ns, state="absent", wait=True,
                 delete_options={"propagationPolicy": "Foreground"})  # kubevirt.core's camelCase name
    assert deleted["changed"] is True and deleted["method"] == "deleted"
    assert kubectl.run("-n", ns, "get", "vm", "gone", check=False).returncode != 0
    assert vm(name="gone", namespace=ns, state="absent")["changed"] is False


def test_vm_info_gets_lists_and_waits(vm, stack_lab, ns):
    info, _kubectl = stack_lab
    vm(name="i1", namespace=ns, labels={"app": "i"}, run_strategy="Halted", spec=TEMPLATE)
    vm(name="i2", namespace=ns, labels={"app": "i"}, run_strategy="Always", spec=TEMPLATE)
    one = run_module("vm_info", {"kubeconfig": info.kubeconfig, "name": "i1", "namespace": ns, "running": False,
                                 "wait": True})
    assert one["summaries"][0]["printable_status"] == "Stopped"
    assert "managedFields" not in one["resources"][0]["metadata"]
    listed = run_module("vm_info", {"kubeconfig": info.kubeconfig, "namespace": ns, "label_selectors": ["app=i"],
                                    "hidden_fields": []})
    assert sorted(s["name"] for s in listed["summaries"]) == ["i1", "i2"]
    assert all("managedFields" in r["metadata"] for r in listed["resources"])  # asked for whole objects
    ready = run_module("vm_info", {"kubeconfig": info.kubeconfig, "name": "i2", "namespace": ns, "wait": True})
    assert ready["summaries"][0]["ready"] is True and ready["summaries"][0]["run_strategy"] == "Always"
