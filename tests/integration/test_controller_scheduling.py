"""The controller against the real lab: schedules onto live nodes, explains why not, fails VMIs of dead nodes.

Node agents are played by writing their heartbeat Leases (the real agent has its own tests).
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import wait_until
from virtops.controller.controller import (
    AGENT_FINALIZER,
    CAPACITY_ANNOTATION,
    LABELS_ANNOTATION,
    Controller,
    LeaderElector,
    ensure_namespace,
)
from virtops.controller.vms import VmReconciler
from virtops.kube import ConflictError, KubeClient, path_for, unchanged_since


@pytest.fixture
def client(lab):
    return KubeClient.from_kubeconfig(lab.kubeconfig)


@pytest.fixture
def lease_ns(client):
    name = f"leases-{uuid.uuid4().hex[:6]}"
    ensure_namespace(client, name)
    return name


def heartbeat(client, ns, node, memory="4Gi", cpu="2", labels=None, age=0, duration=40):
    renew = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=age)
    body = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": ns, "annotations": {
            CAPACITY_ANNOTATION: json.dumps({"cpu": cpu, "memory": memory}),
            LABELS_ANNOTATION: json.dumps(labels or {}),
        }},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": duration,
                 "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    }
    path = path_for("coordination.k8s.io/v1", "leases", ns, node)
    try:
        current = client.get(path)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        client.update(path, body)
    except Exception:  # noqa: BLE001 - first heartbeat
        client.create(path_for("coordination.k8s.io/v1", "leases", ns), body)


@pytest.fixture
def controller(client, lease_ns):
    ctl = Controller(client, lease_namespace=lease_ns, node_grace_seconds=1.0, health_interval=0.2)
    ctl.start()
    yield ctl
    ctl.stop()


def vmi(name, memory="1Gi", **spec):
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": name},
            "spec": dict({"domain": {"devices": {}, "resources": {"requests": {"memory": memory}}}}, **spec)}


def get(client, ns, name):
    obj = client.get(path_for("kubevirt.io/v1", "virtualmachineinstances", ns, name))
    obj.setdefault("status", {})
    return obj


def create(client, ns, body):
    client.create(path_for("kubevirt.io/v1", "virtualmachineinstances", ns), body)


def test_schedules_onto_a_live_node_that_fits(client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "small", memory="512Mi")
    heartbeat(client, lease_ns, "big", memory="8Gi", labels={"disk": "ssd"})
    create(client, namespace, vmi("v1", nodeSelector={"disk": "ssd"}))
    got = wait_until(lambda: (o := get(client, namespace, "v1"))["status"].get("phase") == "Scheduled" and o)
    assert got["status"]["nodeName"] == "big"
    assert got["metadata"]["labels"]["kubevirt.io/nodeName"] == "big"
    shown = kubevirt_api("-n", namespace, "get", "vmi", "v1", "--no-headers").split()
    assert shown[2:4] == ["Scheduled", "big"] or "big" in shown


def test_unschedulable_stays_pending_with_the_reason(client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "tiny", memory="256Mi")
    create(client, namespace, vmi("huge", memory="2Gi"))

    def pending():
        o = get(client, namespace, "huge")
        conds = {c["type"]: c for c in o.get("status", {}).get("conditions", [])}
        return o["status"].get("phase") == "Pending" and conds.get("PodScheduled")

    cond = wait_until(pending)
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "Insufficient memory" in cond["message"]
    # A node that fits arrives: the pending VMI is scheduled without any new write to it.
    heartbeat(client, lease_ns, "roomy", memory="4Gi")
    assert wait_until(lambda: get(client, namespace, "huge")["status"].get("nodeName")) == "roomy"


def test_a_burst_of_vmis_fills_two_nodes_without_overcommitting_either(
        client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "left", memory="10Gi", cpu="100")
    heartbeat(client, lease_ns, "right", memory="10Gi", cpu="100")
    wait_until(lambda: {"left", "right"} <= set(controller.nodes))
    names = [f"burst-{i:02}" for i in range(20)]  # room for exactly 10 of these 1Gi VMIs on each node
    with ThreadPoolExecutor(len(names)) as pool:  # all at once, as a GitOps apply of 20 manifests would
        list(pool.map(lambda n: create(client, namespace, vmi(n)), names))

    def settled():
        objs = [get(client, namespace, n) for n in names]
        refused = [o for o in objs if any(c["type"] == "PodScheduled" and c["status"] == "False"
                                          for c in o["status"].get("conditions", []))]
        bound = [o for o in objs if o["status"].get("nodeName")]
        return len(bound) + len(refused) == len(names) and objs

    placed = Counter(o["status"].get("nodeName") for o in wait_until(settled, attempts=400))
    assert placed == {"left": 10, "right": 10}


def events_of(client, ns, name):
    return client.list(path_for("v1", "events", ns), {"fieldSelector": f"involvedObject.name={name}"})[0]


def test_a_stale_write_is_a_conflict_to_retry_not_a_rejection(client, kubevirt_api, namespace):
    create(client, namespace, vmi("raced"))
    path = path_for("kubevirt.io/v1", "virtualmachineinstances", namespace, "raced")
    seen = get(client, namespace, "raced")
    client.merge_patch(path, {"metadata": {"labels": {"touched": "yes"}}})  # someone else writes meanwhile
    with pytest.raises(ConflictError):
        client.json_patch(path, [unchanged_since(seen["metadata"]["resourceVersion"]),
                                 {"op": "add", "path": "/status", "value": {"phase": "Scheduling"}}])


def test_a_rejected_bind_is_told_in_an_event_not_swallowed(client, kubevirt_api, namespace, lease_ns, controller):
    # A Lease may be named what no label value can hold (more than 63 characters): the API server refuses the
    # bind's kubevirt.io/nodeName label with 422. Nothing else is wrong, so only the controller can say why.
    node = "node-" + "x" * 70
    heartbeat(client, lease_ns, node)
    wait_until(lambda: node in controller.nodes)
    create(client, namespace, vmi("refused"))
    event = wait_until(lambda: next((e for e in events_of(client, namespace, "refused")
                                     if e["message"].startswith("the API server rejected")), None), attempts=400)
    assert (event["type"], event["reason"]) == ("Warning", "FailedScheduling")
    assert event["message"].startswith(f"the API server rejected the binding to node {node}: ")
    assert "metadata.labels" in event["message"]
    assert not get(client, namespace, "refused")["status"].get("nodeName")


def test_vmis_of_a_dead_node_are_marked_then_failed(client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "flaky", duration=30)
    create(client, namespace, vmi("victim"))
    wait_until(lambda: get(client, namespace, "victim")["status"].get("nodeName") == "flaky")
    # The agent dies: its last renewal ages past the lease duration (written, so the test needs no sleep).
    heartbeat(client, lease_ns, "flaky", duration=30, age=31)
    # Condition first, then Failed after the grace period.
    final = wait_until(lambda: (o := get(client, namespace, "victim"))["status"].get("phase") == "Failed" and o,
                       attempts=400)
    ready = next(c for c in final["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeUnresponsive" and "flaky" in ready["message"]
    # ... and no new VMI goes there.
    create(client, namespace, vmi("after"))
    cond = wait_until(lambda: next((c for c in get(client, namespace, "after").get("status", {})
                                    .get("conditions", []) if c["type"] == "PodScheduled"), None))
    assert "lease expired" in cond["message"]


def test_vmis_of_a_node_whose_lease_is_deleted_fail_and_can_be_deleted(
        client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "vanished", duration=5)
    body = vmi("stranded")
    body["metadata"]["finalizers"] = [AGENT_FINALIZER]  # held by the node's agent, as a running VMI is
    create(client, namespace, body)
    wait_until(lambda: get(client, namespace, "stranded")["status"].get("nodeName") == "vanished")
    # The node goes with its Lease (removed, or its agent uninstalled): no renewal will ever come. Judged like
    # an expired Lease from its last renewal, the VMI fails after the grace period.
    client.delete(path_for("coordination.k8s.io/v1", "leases", lease_ns, "vanished"))
    final = wait_until(lambda: (o := get(client, namespace, "stranded"))["status"].get("phase") == "Failed" and o,
                       attempts=600)
    ready = next(c for c in final["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeUnresponsive"
    assert ready["message"].startswith("node vanished has no heartbeat Lease")
    # ... and its delete finishes: no agent will ever remove its finalizer.
    client.delete(path_for("kubevirt.io/v1", "virtualmachineinstances", namespace, "stranded"))
    wait_until(lambda: vmi_or_none(client, namespace, "stranded") is None, attempts=400)


def test_only_one_replica_leads(client, lease_ns):
    first = LeaderElector(client, "replica-a", namespace=lease_ns, name="ctl", lease_duration=30, renew_deadline=20)
    second = LeaderElector(client, "replica-b", namespace=lease_ns, name="ctl", lease_duration=30, renew_deadline=20)
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.try_acquire() is True  # renewal by the holder


# --- VirtualMachines -------------------------------------------------------------------------

def vm_path(ns, name=None):
    return path_for("kubevirt.io/v1", "virtualmachines", ns, name)


def vmi_or_none(client, ns, name):
    try:
        return get(client, ns, name)
    except Exception:  # noqa: BLE001 - NotFound
        return None


def set_phase(client, ns, name, phase):
    """Play the node agent: it writes a phase only once the VMI is Scheduled to its node."""
    wait_until(lambda: get(client, ns, name)["status"].get("nodeName"))
    client.merge_patch(path_for("kubevirt.io/v1", "virtualmachineinstances", ns, name), {"status": {"phase": phase}})


def test_vm_run_strategies_drive_its_vmi(client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "n1")
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm1"},
            "spec": {"runStrategy": "Always", "template": {"metadata": {"labels": {"app": "x"}},
                                                           "spec": vmi("ignored")["spec"]}}}
    client.create(vm_path(namespace), body)
    first = wait_until(lambda: vmi_or_none(client, namespace, "vm1"))
    assert first["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachine"
    assert first["metadata"]["labels"]["app"] == "x"
    set_phase(client, namespace, "vm1", "Running")
    wait_until(lambda: client.get(vm_path(namespace, "vm1")).get("status", {}).get("printableStatus") == "Running")
    shown = kubevirt_api("-n", namespace, "get", "vm", "vm1", "--no-headers").split()
    assert shown[2] == "Running"

    # Always: a finished VMI is replaced by a new one.
    set_phase(client, namespace, "vm1", "Succeeded")
    first_uid = first["metadata"]["uid"]
    wait_until(lambda: (o := vmi_or_none(client, namespace, "vm1")) and o["metadata"]["uid"] != first_uid)

    # Halted: the VMI goes, the VM says Stopped.
    client.merge_patch(vm_path(namespace, "vm1"), {"spec": {"runStrategy": "Halted"}})
    wait_until(lambda: vmi_or_none(client, namespace, "vm1") is None)
    wait_until(lambda: client.get(vm_path(namespace, "vm1"))["status"]["printableStatus"] == "Stopped")

    # Back to Always: it runs again.
    client.merge_patch(vm_path(namespace, "vm1"), {"spec": {"runStrategy": "Always"}})
    wait_until(lambda: vmi_or_none(client, namespace, "vm1"))


def test_a_status_meant_for_a_deleted_vm_never_lands_on_the_vm_made_again_under_its_name(
        client, kubevirt_api, namespace):
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "reborn"},
            "spec": {"runStrategy": "Halted", "template": {"spec": vmi("ignored")["spec"]}}}
    old = client.create(vm_path(namespace), body)
    client.delete(vm_path(namespace, "reborn"))
    new = client.create(vm_path(namespace), body)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    # A reconcile that read the old VM writes its status late (the informer had not seen the delete yet).
    VmReconciler(client).reconcile(old, None)
    assert "status" not in client.get(vm_path(namespace, "reborn"))


def test_rerun_on_failure_replaces_only_a_failed_vmi(client, kubevirt_api, namespace, lease_ns, controller):
    heartbeat(client, lease_ns, "n1")
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm2"},
            "spec": {"runStrategy": "RerunOnFailure", "template": {"spec": vmi("ignored")["spec"]}}}
    client.create(vm_path(namespace), body)
    first = wait_until(lambda: vmi_or_none(client, namespace, "vm2"))
    set_phase(client, namespace, "vm2", "Failed")  # the guest crashed
    second = wait_until(lambda: (o := vmi_or_none(client, namespace, "vm2"))
                        and o["metadata"]["uid"] != first["metadata"]["uid"] and o)
    # A clean guest shutdown stays down: KubeVirt 1.7 deletes the Succeeded VMI and makes no new one.
    set_phase(client, namespace, "vm2", "Succeeded")
    wait_until(lambda: vmi_or_none(client, namespace, "vm2") is None)
    wait_until(lambda: client.get(vm_path(namespace, "vm2"))["status"].get("printableStatus") == "Stopped")
    assert second["metadata"]["uid"] != first["metadata"]["uid"] and vmi_or_none(client, namespace, "vm2") is None
