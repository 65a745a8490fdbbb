"""LibvirtHypervisor against the real libvirtd: a diskless 64 MiB domain through its whole life."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from virtops.agent.domain import domain_xml  # noqa: E402
from virtops.agent.hypervisor import LibvirtHypervisor  # noqa: E402
from virtops.node.hypervisor import domain_type  # noqa: E402


@pytest.fixture
def hypervisor():
    hv = LibvirtHypervisor()
    prefix = f"t-{uuid.uuid4().hex[:8]}_"
    yield hv, prefix
    for name in hv.list_names(prefix):
        hv.stop(name, 0)
    hv.close()


@pytest.fixture
def state_dir():
    path = Path(tempfile.mkdtemp(prefix="virtops-agent-test-", dir="/var/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def diskless_xml(namespace: str, name: str, state_dir: Path) -> str:
    vmi = {
        "metadata": {"namespace": namespace, "name": name, "uid": str(uuid.uuid4())},
        "spec": {"domain": {"resources": {"requests": {"memory": "64Mi"}}}},
        "status": {"nodeName": "node-a"},
    }
    return domain_xml(vmi, domain_type=domain_type(), state_dir=state_dir)


def test_diskless_domain_runs_pauses_resumes_and_stops_while_paused(hypervisor, state_dir):
    hv, prefix = hypervisor
    namespace = prefix.rstrip("_")
    name = f"{namespace}_vm1"
    xml = diskless_xml(namespace, "vm1", state_dir)

    assert hv.state(name) is None
    assert hv.ensure_running(name, xml) is True
    assert hv.ensure_running(name, xml) is False  # idempotent: nothing to do the second time
    state = hv.state(name)
    assert (state.phase, state.paused, state.libvirt_state) == ("Running", False, "running")
    assert hv.list_names(prefix) == [name]
    marker = hv.marker(name)
    assert (marker.namespace, marker.name, marker.node) == (namespace, "vm1", "node-a")
    assert len(hv.macs(name)) == 1

    assert hv.resume(name) is False  # only a PAUSED domain is resumed
    assert hv.pause(name) is True
    assert hv.pause(name) is False  # only a RUNNING domain is suspended
    state = hv.state(name)
    assert (state.phase, state.paused, state.libvirt_state) == ("Running", True, "paused")

    assert hv.resume(name) is True
    assert hv.state(name).paused is False

    assert hv.pause(name) is True
    # A paused guest cannot see the power button: stop resumes it, then destroys it at the deadline.
    assert hv.stop(name, 1) is True
    assert hv.state(name) is None
    assert hv.list_names(prefix) == []
    assert hv.stop(name, 1) is False  # idempotent


def test_state_of_a_domain_destroyed_behind_our_back_is_failed(hypervisor, state_dir):
    import libvirt

    hv, prefix = hypervisor
    name = f"{prefix}vm2"
    hv.ensure_running(name, diskless_xml(prefix.rstrip("_"), "vm2", state_dir))
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(name).destroy()
    finally:
        conn.close()
    state = hv.state(name)
    assert (state.phase, state.libvirt_state) == ("Failed", "shutoff")
    hv.stop(name, 0)
    assert hv.state(name) is None
