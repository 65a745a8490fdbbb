"""Shared fixtures: a real lab control plane for the integration tests."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The checkout as ansible_collections.virtops.kubevirt (hack/setup.sh makes the same link).
_COLLECTIONS = ROOT / ".cache" / "collections"
_LINK = _COLLECTIONS / "ansible_collections" / "virtops" / "kubevirt"
if not _LINK.exists():
    _LINK.parent.mkdir(parents=True, exist_ok=True)
    _LINK.symlink_to(ROOT)

sys.path.insert(0, str(_COLLECTIONS))


def run_module(name: str, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
    """Run one of our modules in-process, exactly as Ansible would, and return its result."""
    from ansible.module_utils.testing import patch_module_args

    module = importlib.import_module(f"ansible_collections.virtops.kubevirt.plugins.modules.{name}")
    args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(args), redirect_stdout(out), pytest.raises(SystemExit):
        module.main()
    return json.loads(out.getvalue())


def run_playbook(playbook: str, *extra: str, ok: bool = True,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """ansible-playbook from the checkout (its ansible.cfg links it in as virtops.kubevirt); must succeed, or with
    ``ok=False`` must fail. ``env`` adds to the environment."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {}))
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), playbook, *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc


def recap(proc: subprocess.CompletedProcess, host: str = "localhost") -> dict[str, int]:
    """The PLAY RECAP counters of one host."""
    line = re.search(rf"{re.escape(host)}\s+:\s+(.*)", proc.stdout).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def wait_until(predicate, attempts: int = 200, delay: float = 0.05):
    """The predicate's first truthy value; a bounded count of tries, never a wall-clock limit."""
    for _attempt in range(attempts):
        value = predicate()
        if value:
            return value
        time.sleep(delay)
    raise AssertionError("condition not reached")


CRDS = ROOT / "roles" / "cluster" / "files" / "crds"
USER_ROLES = ROOT / "roles" / "cluster" / "files" / "rbac"


class Kubectl:
    """kubectl of the lab's own release (or another lab tool taking --kubeconfig), bound to one lab's kubeconfig."""

    def __init__(self, binary: Path, kubeconfig: str) -> None:
        self.binary = str(binary)
        self.kubeconfig = kubeconfig

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,  # the caller decides; the failure message carries kubectl's stderr
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{Path(self.binary).name} {' '.join(args)} failed: {proc.stderr}")
        return proc

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        return self.run(*args, stdin=stdin).stdout


@pytest.fixture(scope="session")
def lab():
    """A lab control plane of its own for this test session, stopped at the end."""
    from virtops.lab import ControlPlane

    plane = ControlPlane(f"pytest-{os.getpid()}")
    info = plane.up()
    try:
        yield info
    finally:
        plane.down()


@pytest.fixture(scope="session")
def kubectl(lab) -> Kubectl:
    return Kubectl(Path(lab.state_dir) / "bin" / "kubectl", lab.kubeconfig)


@pytest.fixture(scope="session")
def virtctl(lab) -> Kubectl:
    """KubeVirt's own virtctl (lab/go/virtctl), the client of every subresource test."""
    return Kubectl(Path(lab.state_dir) / "bin" / "virtctl", lab.kubeconfig)


@pytest.fixture(scope="session")
def kubevirt_api(kubectl):
    """The cluster role's CRDs and user roles, applied once per session."""
    kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/virtualmachineinstances.kubevirt.io",
        "crd/virtualmachines.kubevirt.io",
        "--timeout=60s",
    )
    return kubectl


@pytest.fixture
def module(lab):
    """run_module bound to the lab's kubeconfig: module("vmi", {...}, check_mode=...)."""

    def call(name: str, args: dict, check_mode: bool = False, diff: bool = False) -> dict:
        return run_module(name, dict({"kubeconfig": lab.kubeconfig}, **args), check_mode, diff)

    return call


@pytest.fixture
def api_requests(monkeypatch):
    """Every request our modules' client sends (in-process modules), as (method, path, query), recorded on the way
    to the real API server, which answers it as always."""
    from ansible_collections.virtops.kubevirt.plugins.module_utils.client import KubeClient

    sent = []
    send = KubeClient.request

    def request(self, method, path, query=None, *args, **kwargs):
        sent.append((method, path, dict(query or {})))
        return send(self, method, path, query, *args, **kwargs)

    monkeypatch.setattr(KubeClient, "request", request)
    return sent


@pytest.fixture
def namespace(kubectl):
    """A fresh namespace per test (the lab's controller-manager finishes deleting it)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def stack_lab():
    """A lab of its own with our controller (VMs → VMIs, the subresource API) and one node agent (lab-node-1) on
    this host's libvirt, shared by the session's VM module and inventory tests: (info, kubectl)."""
    from virtops.lab import ControlPlane

    plane = ControlPlane(f"stack-{os.getpid()}", stack=True, nodes=1)
    info = plane.up()
    kubectl = Kubectl(Path(info.state_dir) / "bin" / "kubectl", info.kubeconfig)
    kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
    kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io",
            "crd/virtualmachines.kubevirt.io", "--timeout=60s")
    available = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
    wait_until(lambda: kubectl.run("get", "apiservice", "v1.subresources.kubevirt.io", "-o", available,
                                   check=False).stdout == "True", attempts=600, delay=0.1)
    try:
        yield info, kubectl
    finally:
        plane.down()


@contextlib.contextmanager
def fresh_namespace(kubectl: Kubectl, prefix: str, kinds: str = "vms,vmis") -> Iterator[str]:
    """A new namespace; at the end its objects of ``kinds`` are deleted and waited for (their VMIs' domains end
    before the next test), then the namespace is left to the lab's controller-manager."""
    name = f"{prefix}-{os.urandom(3).hex()}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", kinds, "--all", "-n", name, "--wait=true", "--timeout=60s")
        kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def stack_ns(stack_lab):
    """A fresh namespace in the stack lab."""
    with fresh_namespace(stack_lab[1], "vm") as name:
        yield name
