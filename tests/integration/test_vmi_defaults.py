"""The cluster role's VMI defaulting policy (roles/cluster/files/admission/vmi-defaults.yaml) on a real
kube-apiserver: KubeVirt's disk defaults are written into the stored object, so `kubectl get vmi -o yaml`
shows what will run (a volume without a disk was silently ignored before)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, wait_until

POLICY = ROOT / "roles" / "cluster" / "files" / "admission" / "vmi-defaults.yaml"


@pytest.fixture()
def defaults_policy(kubectl, kubevirt_api):
    """The policy applied for one test, removed after it (it binds cluster-wide)."""
    kubectl("apply", "--server-side", "-f", str(POLICY))
    try:
        yield
    finally:
        kubectl("delete", "--ignore-not-found", "-f", str(POLICY))


def vmi(name: str, devices: dict, volumes: list) -> str:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                       "metadata": {"name": name},
                       "spec": {"domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": devices},
                                "volumes": volumes}})


def stored_disks(kubectl, namespace: str, name: str) -> list:
    return json.loads(kubectl("-n", namespace, "get", "vmi", name, "-o", "json"))["spec"]["domain"]["devices"].get(
        "disks")


def test_volume_without_disk_gets_kubevirts_default_disk_in_the_stored_spec(kubectl, namespace, defaults_policy):
    volumes = [{"name": "root", "containerDisk": {"image": "example.org/root:1"}},
               {"name": "data", "emptyDisk": {"capacity": "1Gi"}},
               {"name": "plain", "emptyDisk": {"capacity": "1Gi"}},
               {"name": "typeless", "emptyDisk": {"capacity": "1Gi"}}]
    devices = {"disks": [{"name": "root", "disk": {"bus": "virtio"}}, {"name": "plain", "disk": {}},
                         {"name": "typeless"}]}

    def created() -> bool:  # the policy takes effect once kube-apiserver has loaded it
        kubectl("-n", namespace, "delete", "vmi", "probe", "--ignore-not-found", "--wait=false")
        kubectl("-n", namespace, "create", "-f", "-", stdin=vmi("probe", {}, [volumes[1]]))
        return bool(stored_disks(kubectl, namespace, "probe"))

    wait_until(created, attempts=300, delay=0.1)
    kubectl("-n", namespace, "create", "-f", "-", stdin=vmi("full", devices, volumes))
    assert stored_disks(kubectl, namespace, "full") == [
        {"name": "root", "disk": {"bus": "virtio"}},  # what the user wrote stays
        {"name": "plain", "disk": {"bus": "sata"}},  # KubeVirt's amd64 default bus
        {"name": "typeless", "disk": {"bus": "sata"}},  # no device type: a disk
        {"name": "data", "disk": {"bus": "sata"}},  # the volume no disk named
    ]
    assert stored_disks(kubectl, namespace, "probe") == [{"name": "data", "disk": {"bus": "sata"}}]
    # Without volumes nothing is added.
    kubectl("-n", namespace, "create", "-f", "-", stdin=vmi("bare", {}, []))
    assert stored_disks(kubectl, namespace, "bare") is None
