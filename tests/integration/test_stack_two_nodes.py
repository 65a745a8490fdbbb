"""The whole stack with two real node agents on this host: scheduling, VMs, a node that dies.

A lab of its own runs our controller and two agents (two node names, one libvirtd); every VMI here
becomes a real qemu process. Leases are short (4 s) so a dead node is noticed quickly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

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


def events(kubectl, ns, name):
    items = json.loads(kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}",
                               "-o", "json"))["items"]
    return [e["reason"] for e in items]


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


USER_DATA = "#cloud-config\nhostname: ci-probe\n# marker-4c1f9e: must never leave the ISO\n"


def cloud_init_vmi(name, node, source, **spec):
    body = vmi(name, nodeSelector={"kubernetes.io/hostname": node},
               volumes=[{"name": "ci", "cloudInitNoCloud": source}], **spec)
    body["spec"]["domain"]["devices"] = {"disks": [{"name": "ci", "disk": {"bus": "virtio"}}]}
    return body


def secret(name, **data):
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def test_secrets_on_nodes_only_the_vmis_node_reads_its_secret(two_nodes):
    """docs/secrets-on-nodes.md on the real API: the Secret a VMI names is readable by its node's identity only,
    while the VMI lives; the ISO holds the data, nothing else on the node or in the API does."""
    from virtops.lab import ControlPlane

    info, kubectl, nodes, ns = two_nodes
    plane = ControlPlane(info.name, info.state_dir)
    as_node = {n: Kubectl(kubectl.binary, plane.user_kubeconfig(f"probe-{n}", f"system:virtops:node:{n}",
                                                                "virtops:nodes")) for n in nodes}

    def reads(node, name):
        proc = as_node[node].run("-n", ns, "get", "secret", name, "-o", "name", check=False)
        assert proc.returncode == 0 or "forbidden" in proc.stderr.lower(), proc.stderr
        return proc.returncode == 0

    create(kubectl, ns, secret("ci-user", userdata=USER_DATA))
    create(kubectl, ns, secret("unrelated", userdata="#cloud-config\n"))
    assert not reads(nodes[0], "ci-user") and not reads(nodes[1], "ci-user")  # no VMI names it yet

    create(kubectl, ns, cloud_init_vmi("ci", nodes[0], {"secretRef": {"name": "ci-user"}}))
    wait_long(lambda: status(kubectl, ns, "ci").get("phase") == "Running")
    assert reads(nodes[0], "ci-user")
    assert not reads(nodes[1], "ci-user")  # another node's agent: 403
    assert not reads(nodes[0], "unrelated") and not reads(nodes[1], "unrelated")  # named by no VMI: 403
    listing = as_node[nodes[0]].run("-n", ns, "get", "secrets", check=False)
    assert listing.returncode != 0 and "forbidden" in listing.stderr.lower()

    # The ISO: 0600, KubeVirt's volume id and files, read back with xorriso.
    iso = Path(info.state_dir) / "agents" / nodes[0] / f"{ns}_ci" / "noCloud.iso"
    assert iso.stat().st_mode & 0o777 == 0o600
    out = Path(info.state_dir) / "extracted-ci"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
                   capture_output=True, check=True)
    assert (out / "user-data").read_text() == USER_DATA
    meta = json.loads((out / "meta-data").read_text())
    assert meta == {"instance-id": get(kubectl, ns, "vmi", "ci")["metadata"]["uid"], "local-hostname": "ci"}
    shutil.rmtree(out)

    # User data is nowhere else: not in the domain XML, the VMI, its events, or any lab log.
    conn = libvirt.open("qemu:///system")
    try:
        xml = conn.lookupByName(f"{ns}_ci").XMLDesc(0)
    finally:
        conn.close()
    assert str(iso) in xml and "marker-4c1f9e" not in xml
    assert "marker-4c1f9e" not in kubectl("-n", ns, "get", "vmi,events", "-o", "json")
    for log in (Path(info.state_dir) / "logs").glob("*.log"):
        assert "marker-4c1f9e" not in log.read_text(errors="replace"), log

    kubectl("-n", ns, "delete", "vmi", "ci")
    wait_long(lambda: not reads(nodes[0], "ci-user"))  # the grant goes with the VMI
    assert not iso.parent.exists()  # and the ISO with its state directory


def test_a_vmi_waits_for_its_missing_secret_and_bad_cloud_init_fails_naming_the_field(two_nodes):
    _info, kubectl, nodes, ns = two_nodes
    create(kubectl, ns, cloud_init_vmi("late", nodes[1], {"secretRef": {"name": "late-user"}}))
    cond = wait_long(lambda: next((c for c in status(kubectl, ns, "late").get("conditions", [])
                                   if c["type"] == "Synchronized" and c.get("reason") == "SecretUnavailable"), None))
    assert cond["message"] == "spec.volumes[0].cloudInitNoCloud.secretRef.name: Secret two/late-user not found"
    # One warning: the grant came before the bind, so no 403 came first (timestamps have seconds only: sorted)
    # (events are written off the services' paths, so the warning may follow its condition by a moment)
    wait_long(lambda: "SecretUnavailable" in events(kubectl, ns, "late"))
    assert sorted(events(kubectl, ns, "late")) == ["Scheduled", "SecretUnavailable"]
    assert status(kubectl, ns, "late")["phase"] == "Scheduled" and domain_node(ns, "late") is None
    create(kubectl, ns, secret("late-user", userData="#cloud-config\n"))  # the other key KubeVirt reads
    wait_long(lambda: status(kubectl, ns, "late").get("phase") == "Running")
    assert not any(c["type"] == "Synchronized" for c in status(kubectl, ns, "late").get("conditions", []))

    create(kubectl, ns, cloud_init_vmi("bad", nodes[1], {"userDataBase64": "not base64!"}))
    failed = wait_long(lambda: (s := status(kubectl, ns, "bad")).get("phase") == "Failed" and s)
    sync = next(c for c in failed["conditions"] if c["type"] == "Synchronized")
    assert sync["message"] == "spec.volumes[0].cloudInitNoCloud.userDataBase64: is not a valid base64 value"
    assert domain_node(ns, "bad") is None
    assert not (Path(_info.state_dir) / "agents" / nodes[1] / f"{ns}_bad").exists()  # nothing half-made


def test_a_killed_agent_marks_its_node_and_new_vmis_go_elsewhere(two_nodes):
    info, kubectl, nodes, ns = two_nodes
    create(kubectl, ns, vmi("victim", nodeSelector={"kubernetes.io/hostname": nodes[0]}))
    doomed = "doomed"  # a namespace whose only VMI runs on the node that dies
    kubectl("create", "namespace", doomed)
    create(kubectl, doomed, vmi("inmate", nodeSelector={"kubernetes.io/hostname": nodes[0]}))
    for space, name in ((ns, "victim"), (doomed, "inmate")):
        wait_long(lambda s=space, n=name: status(kubectl, s, n).get("phase") == "Running")

    os.kill(info.pids[f"agent-{nodes[0]}"]["pid"], signal.SIGKILL)  # and it never comes back

    failed = wait_long(lambda: (s := status(kubectl, ns, "victim")).get("phase") == "Failed" and s)
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NodeUnresponsive" and nodes[0] in ready["message"]

    create(kubectl, ns, vmi("newcomer"))
    wait_long(lambda: status(kubectl, ns, "newcomer").get("phase") == "Running")
    assert status(kubectl, ns, "newcomer")["nodeName"] == nodes[1]

    # Deleting a VMI of the dead node finishes: the controller releases it from the agent's finalizer ...
    kubectl("-n", ns, "delete", "vmi", "victim", "--wait=false")
    wait_long(lambda: get(kubectl, ns, "vmi", "victim") is None)
    # ... and so does deleting a namespace that holds one.
    kubectl("delete", "namespace", doomed, "--wait=false")
    wait_long(lambda: kubectl.run("get", "namespace", doomed, check=False).returncode != 0)
