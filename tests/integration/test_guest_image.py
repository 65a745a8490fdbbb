"""The project's guest (docs/guest-image.md) on a stack lab: a real Linux that boots by kernelBoot, gets an
address, shows it in status.interfaces, stops its clock while paused and answers the ACPI power button.

Times are measured and printed (run with -s to see them), never asserted: 2 cores are shared with other labs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CRDS, USER_ROLES, Kubectl, run_module, wait_until

libvirt = pytest.importorskip("libvirt")

from virtops.agent.hypervisor import LibvirtHypervisor  # noqa: E402
from virtops.lab.guest import BOOTED, kernel_boot  # noqa: E402

TICK = re.compile(r"virtops-guest: tick (\d+) uptime ([0-9.]+)")


def wait_long(predicate, seconds: float = 240.0):
    """Boots under TCG on a loaded 2-core machine can take a while: a generous bounded wait."""
    return wait_until(predicate, attempts=int(seconds / 0.2), delay=0.2)


@pytest.fixture(scope="module")
def stack():
    """A lab of its own with our controller and one node agent; the lab pushes the guest image to its registry."""
    from virtops.lab import ControlPlane

    name = f"guest-{os.getpid()}"
    plane = ControlPlane(name, stack=True, nodes=1)
    info = plane.up()
    kubectl = Kubectl(f"{info.state_dir}/bin/kubectl", info.kubeconfig)
    kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
    kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io", "--timeout=60s")
    available = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    wait_long(lambda: kubectl.run("get", "apiservice", "v1.subresources.kubevirt.io", "-o", available,
                                  check=False).stdout == "True")
    try:
        yield info, kubectl, f"{name}-node-1"
    finally:
        plane.down()


@pytest.fixture
def ns(stack):
    _info, kubectl, _node = stack
    name = f"g-{os.urandom(3).hex()}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "vmis", "--all", "-n", name, "--wait=true", "--timeout=90s")
    kubectl("delete", "namespace", name, "--wait=false")


def create_guest(stack, ns: str, name: str, kernel_args: str = "", grace: int | None = None) -> float:
    """Create a VMI that boots the guest; returns the monotonic time of the create."""
    info, kubectl, _node = stack
    spec: dict = {"domain": {"resources": {"requests": {"memory": "128Mi"}},
                             "firmware": kernel_boot(info.registry, kernel_args),
                             "devices": {}}}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}
    started = time.monotonic()
    kubectl("create", "-f", "-", stdin=json.dumps(body))
    return started


def vmi(stack, ns: str, name: str) -> dict | None:
    _info, kubectl, _node = stack
    proc = kubectl.run("-n", ns, "get", "vmi", name, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def serial_log(stack, ns: str, name: str) -> Path:
    info, _kubectl, node = stack
    return Path(info.state_dir) / "agents" / node / f"{ns}_{name}" / "serial.log"


def console(stack, ns: str, name: str) -> str:
    try:
        return serial_log(stack, ns, name).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_booted(stack, ns: str, name: str, started: float) -> float:
    wait_long(lambda: BOOTED in console(stack, ns, name))
    return time.monotonic() - started


def ticks(text: str) -> list[tuple[int, float]]:
    return [(int(n), float(up)) for n, up in TICK.findall(text)]


def first_interface_with_address(stack, ns: str, name: str) -> dict | None:
    interfaces = ((vmi(stack, ns, name) or {}).get("status") or {}).get("interfaces") or []
    return interfaces[0] if interfaces and interfaces[0].get("ipAddress") else None


def delete_and_follow(stack, ns: str, name: str) -> tuple[float, str]:
    """Delete the VMI (its default or own grace period) and return (seconds until it is gone, console).

    The console file is opened first: the agent removes the VMI's directory at the end, and an open
    file keeps everything qemu wrote up to the guest's last line.
    """
    _info, kubectl, _node = stack
    with open(serial_log(stack, ns, name), errors="replace") as log:
        text = log.read()
        started = time.monotonic()
        kubectl("-n", ns, "delete", "vmi", name, "--wait=false")
        wait_long(lambda: vmi(stack, ns, name) is None)
        elapsed = time.monotonic() - started
        text += log.read()
    return elapsed, text


def domain_exists(ns: str, name: str) -> bool:
    hypervisor = LibvirtHypervisor()
    try:
        return hypervisor.state(f"{ns}_{name}") is not None
    finally:
        hypervisor.close()


def test_guest_boots_shows_its_address_and_shuts_down_cleanly_on_delete(stack, ns):
    _info, kubectl, _node = stack
    started = create_guest(stack, ns, "guest")  # the default grace period: 30 s
    booted = wait_booted(stack, ns, "guest", started)
    log = console(stack, ns, "guest")
    assert "Linux version 6.1" in log  # the kernel's own banner on the serial console
    assert "virtops-guest: eth0 has address 10.0.2.15/24" in log

    iface = wait_long(lambda: first_interface_with_address(stack, ns, "guest"))
    with_ip = time.monotonic() - started
    assert iface["ipAddress"] == "10.0.2.15"
    assert iface["ipAddresses"][0] == "10.0.2.15"
    assert not any(a.startswith("fe80") for a in iface["ipAddresses"])
    assert iface["infoSource"] == "domain, guest-agent" and iface["interfaceName"] == "eth0"
    assert iface["name"] == "default" and iface["mac"].startswith("52:54:00:")
    table = kubectl("-n", ns, "get", "vmis")
    assert re.search(r"guest\s+\S+\s+Running\s+10\.0\.2\.15\s", table), table
    status = vmi(stack, ns, "guest")["status"]
    assert status["phase"] == "Running"
    agent = next(c for c in status["conditions"] if c["type"] == "AgentConnected")
    assert agent["status"] == "True"
    # This guest's agent has no guest-get-osinfo: an answer ({}), not silence (None), and no guestOSInfo.
    assert LibvirtHypervisor().guest_os_info(f"{ns}_guest") == {} and "guestOSInfo" not in status

    gone, log = delete_and_follow(stack, ns, "guest")
    assert "virtops-guest: ACPI power button pressed: shutting down" in log
    assert "virtops-guest: clean shutdown complete, powering off" in log
    assert not domain_exists(ns, "guest")
    print(f"\n[guest] create->booted {booted:.1f}s, create->IP in status {with_ip:.1f}s, "
          f"delete->gone (ACPI, grace 30s) {gone:.1f}s")


def test_pause_stops_the_guest_clock_and_console_and_unpause_resumes_them(stack, ns):
    info, _kubectl, _node = stack
    started = create_guest(stack, ns, "clock", "virtops.tick=1", grace=30)
    wait_booted(stack, ns, "clock", started)
    wait_long(lambda: len(ticks(console(stack, ns, "clock"))) >= 2)

    def power(state: str) -> None:
        result = run_module("vmi_power", {"kubeconfig": info.kubeconfig, "name": "clock", "namespace": ns,
                                          "state": state, "wait": True, "wait_timeout": 120})
        assert result["changed"] is True, result

    power("paused")
    paused_at = time.monotonic()
    before = ticks(console(stack, ns, "clock"))
    time.sleep(5)  # an observation window: while paused, nothing at all may happen in the guest
    frozen = ticks(console(stack, ns, "clock"))
    assert frozen == before, "the guest printed while paused"
    power("running")
    paused_for = time.monotonic() - paused_at
    wait_long(lambda: len(ticks(console(stack, ns, "clock"))) > len(frozen) + 1)
    after = ticks(console(stack, ns, "clock"))
    assert [n for n, _up in after] == list(range(1, len(after) + 1))  # the same guest goes on counting
    last_up, next_up = before[-1][1], after[len(before)][1]
    # The guest's own clock did not run while paused: its uptime moved on by about one tick, not by the pause.
    assert next_up - last_up < paused_for, (last_up, next_up, paused_for)
    print(f"\n[guest] paused for {paused_for:.1f}s of host time; guest uptime moved {next_up - last_up:.2f}s")

    # Deleting a paused VMI: the agent resumes it so the guest sees the power button, and it shuts down cleanly.
    power("paused")
    gone, log = delete_and_follow(stack, ns, "clock")
    assert "virtops-guest: ACPI power button pressed: shutting down" in log
    assert "clean shutdown complete" in log
    print(f"[guest] delete of a paused VMI -> gone {gone:.1f}s")


def test_a_guest_that_ignores_acpi_is_destroyed_when_its_grace_period_ends(stack, ns):
    started = create_guest(stack, ns, "stubborn", "virtops.ignore_acpi=1", grace=5)
    wait_booted(stack, ns, "stubborn", started)
    assert "virtops-guest: ACPI power button: ignored (virtops.ignore_acpi=1)" in console(stack, ns, "stubborn")

    gone, log = delete_and_follow(stack, ns, "stubborn")
    assert "virtops-guest: ACPI power button pressed: ignored" in log  # it saw the button ...
    assert "clean shutdown" not in log  # ... and kept running until it was destroyed
    assert gone >= 5  # not a speed limit: the agent waited the whole grace period before destroying it
    assert not domain_exists(ns, "stubborn")
    print(f"\n[guest] ACPI ignored: delete->gone {gone:.1f}s (grace 5s)")


def test_guest_shutdown_succeeds_the_vmi(stack, ns):
    started = create_guest(stack, ns, "quitter", grace=30)
    wait_booted(stack, ns, "quitter", started)
    # Someone powers the guest down from the host side (as the guest's own poweroff would end it).
    subprocess.run(["virsh", "-c", "qemu:///system", "shutdown", f"{ns}_quitter", "--mode", "acpi"],
                   check=True, capture_output=True, text=True)
    wait_long(lambda: ((vmi(stack, ns, "quitter") or {}).get("status") or {}).get("phase") == "Succeeded")
    status = vmi(stack, ns, "quitter")["status"]
    assert [t["phase"] for t in status["phaseTransitionTimestamps"]] == ["Running", "Succeeded"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "GuestShutdown"
    wait_long(lambda: not domain_exists(ns, "quitter"))
