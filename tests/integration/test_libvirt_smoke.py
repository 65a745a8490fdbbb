"""libvirtd and qemu work on this host: a diskless domain starts, suspends, resumes, stops."""

from __future__ import annotations

import uuid

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from virtops.node.hypervisor import domain_type  # noqa: E402


@pytest.fixture
def conn():
    try:
        c = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        pytest.fail(f"libvirtd is not running (hack/libvirt-up.sh starts it): {exc}")
    yield c
    c.close()


def test_diskless_domain_starts_suspends_resumes_and_is_destroyed(conn):
    name = f"virtops-smoke-{uuid.uuid4().hex[:8]}"
    xml = f"""
    <domain type='{domain_type()}'>
      <name>{name}</name>
      <memory unit='MiB'>64</memory>
      <vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices>
        <serial type='pty'/>
        <interface type='user'><model type='virtio'/></interface>
      </devices>
    </domain>"""
    dom = conn.createXML(xml, 0)  # transient: nothing stays defined if the test dies
    try:
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        dom.suspend()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        dom.resume()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        dom.destroy()
    assert name not in [d.name() for d in conn.listAllDomains()]
