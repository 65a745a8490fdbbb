"""Shared fixtures: a real lab control plane for the integration tests."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "roles" / "cluster" / "files" / "crds"
USER_ROLES = ROOT / "roles" / "cluster" / "files" / "rbac"


class Kubectl:
    """kubectl of the lab's own release, bound to one lab's kubeconfig."""

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
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
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
def namespace(kubectl):
    """A fresh namespace per test (the lab's controller-manager finishes deleting it)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")
