"""The node agent against the lab's API server and the real libvirtd.

The test plays the scheduler: it creates VMIs already labelled for the agent's node, phase Scheduled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from virtops.agent.agent import FINALIZER, NodeAgent  # noqa: E402
from virtops.agent.hypervisor import LibvirtHypervisor  # noqa: E402
from virtops.agent.images import ImageCache  # noqa: E402
from virtops.agent.nodeapi import AgentNodeOps  # noqa: E402
from virtops.kube import KubeClient, NotFoundError, path_for  # noqa: E402
from virtops.lab.guest import kernel_boot  # noqa: E402
from virtops.lab.registry import Registry  # noqa: E402

PAUSED = {"type": "Paused", "status": "True", "reason": "PausedByUser", "message": "VMI was paused by user",
          "lastProbeTime": None}


def wait_for(what: str, probe: Callable[[], Any], attempts: int = 300, delay: float = 0.1) -> Any:
    """Poll a bounded number of times; the failure says what was awaited and the last value seen."""
    value = None
    for _attempt in range(attempts):
        value = probe()
        if value:
            return value
        time.sleep(delay)
    raise AssertionError(f"gave up waiting for {what}; last: {value!r}")


class Harness:
    def __init__(self, lab, kubectl, namespace: str) -> None:
        self.kubectl = kubectl
        self.namespace = namespace
        self.node = f"node-{namespace}"
        self.client = KubeClient.from_kubeconfig(lab.kubeconfig)
        self.registry = Registry.of_lab(lab.state_dir)
        self.hv = LibvirtHypervisor()
        self.state_dir = Path(tempfile.mkdtemp(prefix="virtops-agent-test-", dir="/var/tmp"))
        os.chmod(self.state_dir, 0o755)
        self.agents: list[NodeAgent] = []

    def start_agent(self) -> NodeAgent:
        agent = NodeAgent(self.client, self.node, LibvirtHypervisor(), labels={"zone": "a"},
                          capacity={"cpu": "2", "memory": "2Gi"}, state_dir=self.state_dir,
                          image_cache=ImageCache(self.state_dir / "images", ca_dir=str(self.registry.ca_dir)),
                          lease_namespace=self.namespace,
                          heartbeat_seconds=0.5, resync_seconds=0.5, watch_timeout_seconds=5)
        agent.start()
        self.agents.append(agent)
        return agent

    def vmi_path(self, name: str) -> str:
        return path_for("kubevirt.io/v1", "virtualmachineinstances", self.namespace, name)

    def create_vmi(self, name: str, annotations: dict[str, str] | None = None, **spec: Any) -> None:
        body = {
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {"kubevirt.io/nodeName": self.node},
                         "annotations": annotations or {}},
            "spec": dict({"terminationGracePeriodSeconds": 1,
                          "domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": {}}}, **spec),
            "status": {"phase": "Scheduled", "nodeName": self.node, "qosClass": "Burstable",
                       "conditions": [{"type": "LiveMigratable", "status": "False", "reason": "NotMigratable"}]},
        }
        self.kubectl("create", "-f", "-", stdin=json.dumps(body))

    def vmi(self, name: str) -> dict | None:
        try:
            return self.client.get(self.vmi_path(name))
        except NotFoundError:
            return None

    def condition(self, name: str, kind: str) -> dict | None:
        vmi = self.vmi(name) or {}
        return next((c for c in (vmi.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)

    def phase(self, name: str) -> str | None:
        return ((self.vmi(name) or {}).get("status") or {}).get("phase")

    def libvirt_state(self, name: str) -> str | None:
        state = self.hv.state(f"{self.namespace}_{name}")
        return state.libvirt_state if state else None

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items, _version = self.client.list(path_for("v1", "events", self.namespace),
                                           {"fieldSelector": f"involvedObject.name={name}"})
        return [(e["reason"], e["message"], e["source"]["component"]) for e in items]

    def set_power(self, name: str, value: str) -> None:
        """What the node API does for a pause ("paused") or unpause ("running"); its HTTP side has its own tests."""
        uid = (self.vmi(name) or {}).get("metadata", {}).get("uid")
        AgentNodeOps(self.agents[-1]).power(self.namespace, name, uid, "pause" if value == "paused" else "unpause")

    def close(self) -> None:
        for agent in self.agents:
            agent.stop(timeout=1)
        items, _version = self.client.list(path_for("kubevirt.io/v1", "virtualmachineinstances", self.namespace))
        for item in items:  # let the namespace go even if a test failed half-way
            self.client.merge_patch(self.vmi_path(item["metadata"]["name"]), {"metadata": {"finalizers": None}})
        for name in self.hv.list_names(f"{self.namespace}_"):
            self.hv.stop(name, 0)
        self.hv.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


@pytest.fixture
def harness(lab, kubevirt_api, namespace):
    h = Harness(lab, kubevirt_api, namespace)
    yield h
    h.close()


def test_vmi_runs_pauses_unpauses_and_is_deleted(harness):
    harness.start_agent()
    harness.create_vmi("testvmi")

    wait_for("phase Running", lambda: harness.phase("testvmi") == "Running")
    assert harness.libvirt_state("testvmi") == "running"
    vmi = harness.vmi("testvmi")
    assert FINALIZER in vmi["metadata"]["finalizers"]
    status = vmi["status"]
    assert status["nodeName"] == harness.node
    assert [i["name"] for i in status["interfaces"]] == ["default"]
    assert status["interfaces"][0]["mac"].startswith("52:54:00:")
    assert "ipAddress" not in status["interfaces"][0]  # a diskless guest never asks for DHCP
    assert harness.condition("testvmi", "Ready")["status"] == "True"
    assert [t["phase"] for t in status["phaseTransitionTimestamps"]] == ["Running"]
    # Fields written by others (the scheduler, the controller) are kept.
    assert status["qosClass"] == "Burstable"
    assert harness.condition("testvmi", "LiveMigratable")["reason"] == "NotMigratable"

    harness.set_power("testvmi", "paused")
    wait_for("domain paused", lambda: harness.libvirt_state("testvmi") == "paused")
    paused = wait_for("Paused condition", lambda: harness.condition("testvmi", "Paused"))
    assert {k: v for k, v in paused.items() if k != "lastTransitionTime"} == PAUSED
    assert paused["lastTransitionTime"]
    assert harness.condition("testvmi", "Ready")["status"] == "False"
    assert harness.phase("testvmi") == "Running"  # paused is not a phase
    wait_for("Paused event", lambda: ("Paused", "VirtualMachineInstance paused", "virtops-agent")
             in harness.events("testvmi"))

    harness.set_power("testvmi", "running")
    wait_for("Paused condition removed", lambda: harness.condition("testvmi", "Paused") is None)
    assert harness.libvirt_state("testvmi") == "running"
    assert harness.condition("testvmi", "Ready")["status"] == "True"
    wait_for("Unpaused event", lambda: ("Unpaused", "VirtualMachineInstance unpaused", "virtops-agent")
             in harness.events("testvmi"))

    harness.set_power("testvmi", "paused")
    wait_for("domain paused again", lambda: harness.libvirt_state("testvmi") == "paused")
    harness.kubectl("-n", harness.namespace, "delete", "vmi", "testvmi", "--wait=false")
    # Deleting a paused VMI still ends (grace period 1 s: the firmware ignores ACPI, so it is destroyed).
    wait_for("VMI object gone", lambda: harness.vmi("testvmi") is None)
    assert harness.libvirt_state("testvmi") is None
    assert harness.hv.list_names(f"{harness.namespace}_") == []


def test_unsupported_spec_fails_naming_the_field_and_leaves_no_domain(harness):
    harness.start_agent()
    harness.create_vmi(
        "hostdisk",
        domain={"resources": {"requests": {"memory": "64Mi"}},
                "devices": {"disks": [{"name": "data", "disk": {"bus": "virtio"}}]}},
        volumes=[{"name": "data", "hostDisk": {"path": "/var/tmp/x.img", "type": "DiskOrCreate"}}],
    )
    wait_for("phase Failed", lambda: harness.phase("hostdisk") == "Failed")
    synced = harness.condition("hostdisk", "Synchronized")
    assert synced["status"] == "False" and synced["reason"] == "UnsupportedSpec"
    assert synced["message"].startswith("spec.volumes[0].hostDisk: ")
    assert harness.condition("hostdisk", "Ready")["status"] == "False"
    assert harness.libvirt_state("hostdisk") is None
    assert not (harness.state_dir / f"{harness.namespace}_hostdisk").exists()
    wait_for("warning event", lambda: any(r == "UnsupportedSpec" and "spec.volumes[0].hostDisk" in m
                                          for r, m, _kind in harness.events("hostdisk")))

    harness.kubectl("-n", harness.namespace, "delete", "vmi", "hostdisk", "--wait=false")
    wait_for("Failed VMI deleted", lambda: harness.vmi("hostdisk") is None)


def test_impossible_disks_fail_the_vmi_naming_the_field_instead_of_being_retried(harness):
    # 27 disks on one bus raised IndexError in the domain planner and an exabyte emptyDisk failed in the quantity
    # parser: both were retried forever with the VMI left Scheduled.
    harness.start_agent()
    names = [f"d{i}" for i in range(27)]
    harness.create_vmi("manydisks", domain={"resources": {"requests": {"memory": "64Mi"}},
                                            "devices": {"disks": [{"name": n, "disk": {}} for n in names]}},
                       volumes=[{"name": n, "emptyDisk": {"capacity": "1Mi"}} for n in names])
    harness.create_vmi("hugedisk", domain={"resources": {"requests": {"memory": "64Mi"}},
                                           "devices": {"disks": [{"name": "big", "disk": {}}]}},
                       volumes=[{"name": "big", "emptyDisk": {"capacity": "100Ei"}}])
    for name, field in (("manydisks", "spec.domain.devices.disks[26]: "),
                        ("hugedisk", "spec.volumes[0].emptyDisk.capacity: 100Ei is larger than")):
        wait_for(f"{name} Failed", lambda name=name: harness.phase(name) == "Failed")
        synced = harness.condition(name, "Synchronized")
        assert synced["reason"] == "UnsupportedSpec" and synced["message"].startswith(field), synced
        assert harness.libvirt_state(name) is None
    harness.kubectl("-n", harness.namespace, "delete", "vmi", "manydisks", "hugedisk", "--wait=false")
    wait_for("Failed VMIs deleted", lambda: harness.vmi("manydisks") is None and harness.vmi("hugedisk") is None)


def test_lease_is_created_and_renewed(harness):
    harness.start_agent()
    path = path_for("coordination.k8s.io/v1", "leases", harness.namespace, harness.node)

    def lease() -> dict | None:
        try:
            return harness.client.get(path)
        except NotFoundError:
            return None

    first = wait_for("lease", lease)
    assert first["spec"]["holderIdentity"] == harness.node
    annotations = first["metadata"]["annotations"]
    assert json.loads(annotations["virtops.kubevirt.io/capacity"]) == {"cpu": "2", "memory": "2Gi"}
    assert json.loads(annotations["virtops.kubevirt.io/node-labels"]) == {"zone": "a"}
    assert annotations["virtops.kubevirt.io/agent-version"]
    wait_for("renewed lease", lambda: (lease() or {}).get("spec", {}).get("renewTime") != first["spec"]["renewTime"])


def test_restarted_agent_adopts_running_domain_and_removes_orphans(harness):
    agent = harness.start_agent()
    harness.create_vmi("keeper")
    wait_for("phase Running", lambda: harness.phase("keeper") == "Running")
    conn = libvirt.open("qemu:///system")
    try:
        domain_id = conn.lookupByName(f"{harness.namespace}_keeper").ID()
        agent.stop(timeout=1)

        # While the agent is away: a domain of ours whose VMI is gone, and a stranger with our naming.
        ghost = {"metadata": {"namespace": harness.namespace, "name": "ghost", "uid": "1d0e2a43-4e86-4b8e-9a51"
                              "-3f4d7a9c2b11"}, "spec": {"domain": {"memory": {"guest": "64Mi"}}},
                 "status": {"nodeName": harness.node}}
        from virtops.agent.domain import domain_xml

        xml = domain_xml(ghost, domain_type=agent.domain_type, state_dir=harness.state_dir / "ghost",
                         images={})
        (harness.state_dir / "ghost").mkdir()
        os.chmod(harness.state_dir / "ghost", 0o755)
        harness.hv.ensure_running(f"{harness.namespace}_ghost", xml)
        stranger = f"""<domain type='{agent.domain_type}'><name>{harness.namespace}_stranger</name>
            <memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"""
        harness.hv.ensure_running(f"{harness.namespace}_stranger", stranger)

        harness.start_agent()
        wait_for("orphan removed", lambda: harness.libvirt_state("ghost") is None)
        assert conn.lookupByName(f"{harness.namespace}_keeper").ID() == domain_id  # adopted, not restarted
        assert harness.libvirt_state("stranger") == "running"  # no marker: not ours to touch
        assert harness.phase("keeper") == "Running"
    finally:
        conn.close()


def test_domain_killed_behind_the_agents_back_fails_the_vmi(harness):
    harness.start_agent()
    harness.create_vmi("victim")
    wait_for("phase Running", lambda: harness.phase("victim") == "Running")
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(f"{harness.namespace}_victim").destroy()
    finally:
        conn.close()
    wait_for("phase Failed", lambda: harness.phase("victim") == "Failed")
    wait_for("domain undefined", lambda: harness.libvirt_state("victim") is None)
    assert harness.condition("victim", "Ready")["status"] == "False"


def test_domain_that_shuts_down_by_itself_succeeds_the_vmi(harness):
    harness.start_agent()
    # The project's guest (docs/guest-image.md) powers itself off cleanly a second after it has booted:
    # the domain ends as a guest shutdown, with no call to the agent.
    harness.create_vmi("quitter", domain={
        "resources": {"requests": {"memory": "128Mi"}}, "devices": {},
        "firmware": kernel_boot(harness.registry.address, "virtops.poweroff_after=1")})
    # A boot under TCG on a busy 2-core machine: a generous bounded wait.
    wait_for("phase Succeeded", lambda: harness.phase("quitter") == "Succeeded", attempts=2400)
    wait_for("domain undefined", lambda: harness.libvirt_state("quitter") is None)
    console = (harness.state_dir / f"{harness.namespace}_quitter" / "serial.log").read_text(errors="replace")
    assert "virtops-guest: virtops.poweroff_after=1 reached: shutting down" in console
    assert "virtops-guest: clean shutdown complete, powering off" in console
    vmi = harness.vmi("quitter")
    assert [t["phase"] for t in vmi["status"]["phaseTransitionTimestamps"]] == ["Running", "Succeeded"]
    assert harness.condition("quitter", "Ready")["reason"] == "GuestShutdown"
    wait_for("Stopped event", lambda: any(r == "Stopped" for r, _msg, _kind in harness.events("quitter")))


def test_the_retired_power_state_annotation_pauses_nothing(harness):
    """Before the node API, this annotation was the pause intent: anyone with `patch` on VMIs could pause."""
    harness.start_agent()
    harness.create_vmi("early", annotations={"virtops.kubevirt.io/power-state": "paused"})
    wait_for("phase Running", lambda: harness.phase("early") == "Running")
    assert harness.libvirt_state("early") == "running"
    assert harness.condition("early", "Paused") is None
    assert harness.condition("early", "Ready")["status"] == "True"
