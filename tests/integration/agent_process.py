"""The node agent as a real process (``python -m virtops.agent.main``) against a lab, for fault and operations tests.

Each agent runs with its own identity (``ControlPlane.agent_kubeconfig``: only the role in
services/virtops/agent/rbac.yaml), a node name of its own, and a state directory of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from conftest import wait_until
from virtops.agent.hypervisor import LibvirtHypervisor
from virtops.api.nodes import NodeApiClient, NodeApiCredentials
from virtops.kube import KubeClient, NotFoundError, path_for
from virtops.lab import ControlPlane
from virtops.lab.control_plane import free_port
from virtops.lab.guest import BOOTED, kernel_boot

LIBVIRT_UP = Path(__file__).resolve().parents[2] / "hack" / "libvirt-up.sh"


def wait_long(predicate, attempts: int = 600, delay: float = 0.1):
    """Bounded by a count of tries (never a wall-clock assert); generous, this machine is shared and slow."""
    return wait_until(predicate, attempts=attempts, delay=delay)


def metric(text: str, sample: str) -> float | None:
    """The value of one sample line of /metrics (name with its labels exactly as rendered), or None."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class AgentProcess:
    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the agent is not running"
        self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait_exit(self) -> int:
        assert self.proc is not None
        return wait_long(lambda: self.proc.poll() is not None and (self.proc.returncode,))[0]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class AgentLab:
    """One test's node: a namespace for its VMIs, agent processes, and what libvirt holds for them."""

    def __init__(self, lab, kubectl, namespace: str) -> None:
        self.plane = ControlPlane(lab.name, lab.state_dir)
        self.registry = self.plane.registry()
        self.kubectl = kubectl
        self.namespace = namespace
        self.node = f"node-{namespace}-{uuid.uuid4().hex[:4]}"
        self.admin = KubeClient.from_kubeconfig(lab.kubeconfig)
        self.kubeconfig = self.plane.agent_kubeconfig(self.node)
        self.hv = LibvirtHypervisor()
        self.conn = libvirt.open("qemu:///system")
        self.state_dir = Path(tempfile.mkdtemp(prefix="virtops-agent-test-", dir="/var/tmp"))
        os.chmod(self.state_dir, 0o755)
        self.metrics_port = free_port()
        self.agents: list[AgentProcess] = []
        self.node_api_args = self.plane.node_api_agent_args(self.node)
        files = self.plane.node_api_client_files()
        # The subresource API's own client of the node API, with its identity: what a pause does past the API.
        self.node_api = NodeApiClient(self.admin, NodeApiCredentials(files["cert"], files["key"], files["ca"]))

    # --- the agent ----------------------------------------------------------
    def agent_argv(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "virtops.agent.main", f"--kubeconfig={self.kubeconfig}",
                f"--node-name={self.node}", f"--state-dir={self.state_dir}",
                f"--image-cache={self.state_dir / 'images'}", f"--registry-ca-dir={self.registry.ca_dir}",
                "--pull-backoff-max-seconds=2", "--heartbeat-seconds=1",
                f"--metrics-address=127.0.0.1:{self.metrics_port}", "--watch-timeout-seconds=30",
                *self.node_api_args, *extra]

    def start_agent(self, *extra: str, argv: list[str] | None = None) -> AgentProcess:
        agent = AgentProcess(argv or self.agent_argv(*extra), self.state_dir / f"agent-{len(self.agents)}.log")
        agent.start()
        self.agents.append(agent)
        wait_long(lambda: self.http("/readyz")[0] == 200 or agent.proc.poll() is not None)
        assert agent.proc.poll() is None, agent.log()[-3000:]
        return agent

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    # --- VMIs ---------------------------------------------------------------
    def vmi_path(self, name: str | None = None) -> str:
        return path_for("kubevirt.io/v1", "virtualmachineinstances", self.namespace, name)

    def vmi_body(self, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """A diskless 64 MiB VMI already scheduled to this node (the test plays the scheduler)."""
        return {
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": self.namespace, "labels": {"kubevirt.io/nodeName": self.node},
                         "annotations": annotations or {}},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": {}}},
            "status": {"phase": "Scheduled", "nodeName": self.node},
        }

    def guest_body(self, name: str) -> dict[str, Any]:
        """The project's guest (docs/guest-image.md): a Linux that powers off cleanly on the ACPI power button."""
        body = self.vmi_body(name)
        body["spec"]["domain"] = {
            "resources": {"requests": {"memory": "128Mi"}}, "devices": {},
            "firmware": kernel_boot(self.registry.address, "virtops.no_agent=1")}
        return body

    def create_vmis(self, *names: str, guests: tuple[str, ...] = ()) -> None:
        """Diskless VMIs for ``names``, the project's guest for ``guests``."""
        items = [self.vmi_body(n) for n in names] + [self.guest_body(n) for n in guests]
        self.kubectl("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def vmi(self, name: str) -> dict | None:
        try:
            return self.admin.get(self.vmi_path(name))
        except NotFoundError:
            return None

    def phase(self, name: str) -> str | None:
        return ((self.vmi(name) or {}).get("status") or {}).get("phase")

    def condition(self, name: str, kind: str) -> dict | None:
        conditions = ((self.vmi(name) or {}).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def set_power(self, name: str, value: str) -> None:
        """Pause ("paused") or unpause ("running") through the agent's node API, as the subresource API does."""
        vmi = self.vmi(name)
        assert vmi is not None, f"no VMI {name}"
        self.node_api.put(vmi, "pause" if value == "paused" else "unpause")

    def delete(self, *names: str) -> None:
        self.kubectl("-n", self.namespace, "delete", "vmi", *names, "--wait=false")

    def events(self, name: str) -> list[str]:
        items, _rv = self.admin.list(path_for("v1", "events", self.namespace),
                                     {"fieldSelector": f"involvedObject.name={name}"})
        return [e["reason"] for e in items]

    # --- libvirt ------------------------------------------------------------
    def domain(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def libvirt_state(self, name: str) -> str | None:
        state = self.hv.state(self.domain(name))
        return state.libvirt_state if state else None

    def domain_ids(self) -> dict[str, int]:
        """Active domains of this test by name, with libvirt's domain ID (a new ID means a new qemu)."""
        out = {}
        for name in self.hv.list_names(f"{self.namespace}_"):
            try:
                dom = self.conn.lookupByName(name)
                if dom.isActive():
                    out[name] = dom.ID()
            except libvirt.libvirtError:
                pass  # went away between the list and the lookup
        return out

    def qemu_pid(self, name: str) -> int | None:
        try:
            return int(Path(f"/run/libvirt/qemu/{self.domain(name)}.pid").read_text())
        except (OSError, ValueError):
            return None

    def console(self, name: str) -> str:
        try:
            return (self.state_dir / self.domain(name) / "serial.log").read_text(errors="replace")
        except OSError:
            return ""

    def wait_booted(self, name: str) -> None:
        # A boot under TCG on a busy 2-core machine: a generous bounded wait.
        wait_until(lambda: BOOTED in self.console(name), attempts=2400, delay=0.1)

    def power_off_guest(self, name: str) -> None:
        """The guest powers itself off, without the agent: the ACPI power button once its init is up, then
        libvirt's own record of a clean guest shutdown (SHUTOFF), all through libvirt directly."""
        self.wait_booted(name)
        self.conn.lookupByName(self.domain(name)).shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        wait_until(lambda: self.libvirt_state(name) in ("shutoff", "gone", None), attempts=1200, delay=0.1)

    def reconnect_libvirt(self) -> None:
        for closer in (self.hv.close, self.conn.close):
            try:
                closer()
            except libvirt.libvirtError:
                pass
        self.conn = libvirt.open("qemu:///system")

    def close(self) -> None:
        for index, agent in enumerate(self.agents):
            agent.stop()
            print(f"--- agent {index} log (tail) ---\n{agent.log()[-4000:]}")  # pytest shows it when a test fails
        try:
            items, _rv = self.admin.list(self.vmi_path())
            for item in items:  # let the namespace go even if a test failed half-way
                self.admin.merge_patch(self.vmi_path(item["metadata"]["name"]), {"metadata": {"finalizers": None}})
        except Exception:  # noqa: BLE001 - the API may be what broke; the lab goes down anyway
            pass
        self.reconnect_libvirt()
        # Every domain of this test's node: its own namespace's, and those of per-test namespaces whose deletion
        # (kubectl delete --wait=false) had not reached the agent before it stopped; they ran on before.
        for name in self.hv.list_names():
            marker = self.hv.marker(name)
            if name.startswith(f"{self.namespace}_") or (marker is not None and marker.node == self.node):
                self.hv.stop(name, 0)
        self.hv.close()
        self.conn.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def restart_libvirtd(kill: bool = False, while_down: Callable[[], None] | None = None) -> None:
    """Restart the host's libvirtd, briefly (other tests on this host use it too); its guests keep running.

    ``kill``: SIGKILL it (a crash) instead of asking it to stop; ``while_down`` runs before it starts again.
    """
    systemd = Path("/run/systemd/system").is_dir()
    if systemd:
        subprocess.run(["systemctl", "kill", "--signal=SIGKILL", "libvirtd"] if kill else
                       ["systemctl", "stop", "libvirtd"], check=True)
    else:
        # hack/libvirt-up.sh starts it as `libvirtd -d` where there is no systemd: the same here.
        pid = int(Path("/run/libvirtd.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            wait_until(lambda: _proc_state(pid) == "Z", attempts=500, delay=0.02)
        except AssertionError:  # a libvirtd stuck in a call does not finish its shutdown; its guests survive this
            os.kill(pid, signal.SIGKILL)
            wait_long(lambda: _proc_state(pid) == "Z", delay=0.02)
    try:
        if while_down is not None:
            while_down()
    finally:
        # hack/libvirt-up.sh: as it was started (where there is no systemd, under hack/subreaper.py)
        subprocess.run(["systemctl", "restart", "libvirtd"] if systemd else [str(LIBVIRT_UP)], check=True)
        wait_long(lambda: subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                                         check=False).returncode == 0)


def _proc_state(pid: int) -> str:
    """The process state letter; a process that is gone counts as a zombie ("Z")."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
