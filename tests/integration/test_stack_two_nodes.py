"""The whole stack with two real node agents on this host: scheduling, VMs, a node that dies.

A lab of its own runs our controller and two agents (two node names, one libvirtd); every VMI here
becomes a real qemu process. Leases are short (4 s) so a dead node is noticed quickly.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import CRDS, USER_ROLES, Kubectl, wait_until

libvirt = pytest.importorskip("libvirt")


def wait_long(predicate):
    return wait_until(predicate, attempts=600, delay=0.1)


@pytest.fixture(scope="module")
def two_nodes():
    from virtops.lab import ControlPlane

    name = f"two-{os.getpid()}"
    plane = ControlPlane(name, stack=True, nodes=2, lease_seconds=4, node_grace_seconds=3)
    info = plane.up()
    kubectl = Kubectl(f"{info.state_dir}/bin/kubectl", info.kubeconfig)
    kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
    kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io",
            "crd/virtualmachines.kubevirt.io", "--timeout=60s")
    nodes = [f"{name}-node-1", f"{name}-node-2"]
    wait_long(lambda: all(kubectl.run("-n", "kube-node-lease", "get", "lease", n, check=False).returncode == 0
                          for n in nodes))
    ns = "two"
    kubectl("create", "namespace", ns)
    try:
        yield info, kubectl, nodes, ns
    finally:
        plane.down()


def vmi(name, **spec):
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": name},
            "spec": dict({"terminationGracePeriodSeconds": 1,
                          "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}, **spec)}


def get(kubectl, ns, kind, name):
    proc = kubectl.run("-n", ns, "get", kind, name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def status(kubectl, ns, name):
    return (get(kubectl, ns, "vmi", name) or {}).get("status") or {}


def domain_node(ns, name):
    """The node whose agent defined the libvirt domain, from the agent's metadata marker."""
    from virtops.agent.hypervisor import LibvirtHypervisor

    hypervisor = LibvirtHypervisor()
    try:
        marker = hypervisor.marker(f"{ns}_{name}")
        return marker.node if marker else None
    finally:
        hypervisor.close()


def create(kubectl, ns, body):
    kubectl("-n", ns, "create", "-f", "-", stdin=json.dumps(body))


def test_vmis_spread_over_nodes_and_follow_node_selectors(two_nodes):
    _info, kubectl, nodes, ns = two_nodes
    for name in ("spread-a", "spread-b"):
        create(kubectl, ns, vmi(name))
    for name in ("spread-a", "spread-b"):
        wait_long(lambda n=name: status(kubectl, ns, n).get("phase") == "Running")
    placed = {status(kubectl, ns, n)["nodeName"] for n in ("spread-a", "spread-b")}
    assert placed == set(nodes)
    assert domain_node(ns, "spread-a") == status(kubectl, ns, "spread-a")["nodeName"]

    create(kubectl, ns, vmi("pinned", nodeSelector={"kubernetes.io/hostname": nodes[1]}))
    wait_long(lambda: status(kubectl, ns, "pinned").get("phase") == "Running")
    assert status(kubectl, ns, "pinned")["nodeName"] == nodes[1] == domain_node(ns, "pinned")

    create(kubectl, ns, vmi("nowhere", nodeSelector={"kubernetes.io/hostname": "no-such-node"}))
    cond = wait_long(lambda: next((c for c in status(kubectl, ns, "nowhere").get("conditions", [])
                                   if c["type"] == "PodScheduled"), None))
    assert cond["reason"] == "Unschedulable"
    assert "2 node(s) didn't match Pod's node affinity/selector" in cond["message"]


def test_vm_run_strategies_with_real_guests(two_nodes):
    _info, kubectl, _nodes, ns = two_nodes
    vm = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "always"},
          "spec": {"runStrategy": "Always", "template": {"spec": vmi("x")["spec"]}}}
    create(kubectl, ns, vm)
    wait_long(lambda: (get(kubectl, ns, "vm", "always") or {}).get("status", {}).get("printableStatus") == "Running")
    assert domain_node(ns, "always") is not None

    kubectl("-n", ns, "patch", "vm", "always", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    wait_long(lambda: get(kubectl, ns, "vmi", "always") is None and domain_node(ns, "always") is None)
    wait_long(lambda: get(kubectl, ns, "vm", "always")["status"]["printableStatus"] == "Stopped")

    kubectl("-n", ns, "patch", "vm", "always", "--type=merge", "-p", '{"spec":{"runStrategy":"Always"}}')
    wait_long(lambda: status(kubectl, ns, "always").get("phase") == "Running")

    rerun = dict(vm, metadata={"name": "rerun"}, spec=dict(vm["spec"], runStrategy="RerunOnFailure"))
    create(kubectl, ns, rerun)
    wait_long(lambda: status(kubectl, ns, "rerun").get("phase") == "Running")
    first_uid = get(kubectl, ns, "vmi", "rerun")["metadata"]["uid"]
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(f"{ns}_rerun").destroy()  # the guest crashes
    finally:
        conn.close()
    wait_long(lambda: (o := get(kubectl, ns, "vmi", "rerun")) and o["metadata"]["uid"] != first_uid
              and o.get("status", {}).get("phase") == "Running")


def test_a_killed_agent_marks_its_node_and_new_vmis_go_elsewhere(two_nodes):
    info, kubectl, nodes, ns = two_nodes
    create(kubectl, ns, vmi("victim", nodeSelector={"kubernetes.io/hostname": nodes[0]}))
    wait_long(lambda: status(kubectl, ns, "victim").get("phase") == "Running")

    os.kill(info.pids[f"agent-{nodes[0]}"]["pid"], signal.SIGKILL)

    failed = wait_long(lambda: (s := status(kubectl, ns, "victim")).get("phase") == "Failed" and s)
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeUnresponsive" and nodes[0] in ready["message"]

    create(kubectl, ns, vmi("newcomer"))
    wait_long(lambda: status(kubectl, ns, "newcomer").get("phase") == "Running")
    assert status(kubectl, ns, "newcomer")["nodeName"] == nodes[1]
