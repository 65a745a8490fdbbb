"""The lab is a real, correctly configured control plane, and `down` leaves nothing behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from virtops.lab import ControlPlane
from virtops.lab.debian_image import DEBIAN_REPOSITORY, DEBIAN_TAG
from virtops.lab.versions import KUBERNETES_VERSION


def test_version_endpoint_tells_the_pinned_release(kubectl):
    version = json.loads(kubectl("get", "--raw", "/version"))
    assert version["gitVersion"] == KUBERNETES_VERSION
    assert version["minor"] == KUBERNETES_VERSION.split(".")[1]


def test_listens_only_on_loopback(lab):
    assert lab.server.startswith("https://127.0.0.1:")
    for port in lab.ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0


def test_rbac_denies_an_unprivileged_user(kubectl):
    denied = kubectl.run("auth", "can-i", "list", "pods", "--as=nobody", check=False)
    assert denied.stdout.strip() == "no"


def test_aggregation_layer_is_configured(kubectl):
    cm = json.loads(
        kubectl("get", "configmap", "-n", "kube-system", "extension-apiserver-authentication", "-o", "json")
    )
    assert "requestheader-client-ca-file" in cm["data"]
    assert json.loads(cm["data"]["requestheader-allowed-names"]) == ["front-proxy-client"]


def test_second_up_is_unchanged(lab):
    # Compared with the processes running now: other tests on the session's lab restart its components.
    before = ControlPlane(lab.name).up()
    again = ControlPlane(lab.name).up()
    assert before.changed is again.changed is False
    assert again.pids == before.pids


def test_up_pushes_the_debian_image_when_asked_and_only_once(capsys):
    # A lab of its own: the session's lab gets the image from the tests that boot it (test_debian_guest_access.py
    # pushes it there), so whether it holds the image depends on the order the tests ran in.
    name = f"debian-push-{os.getpid()}"
    ControlPlane(name).up()
    try:
        plane = ControlPlane(name, debian_image=True)
        reference = plane.registry().reference(DEBIAN_REPOSITORY, DEBIAN_TAG)
        assert not plane.registry().has(reference)
        assert plane.up().changed is False  # `up` on the healthy lab adds the image and restarts nothing
        assert plane.registry().has(reference)
        assert f"pushed {reference}" in capsys.readouterr().err
        plane.up()
        assert "pushed" not in capsys.readouterr().err  # present: a second up pushes nothing
        assert plane.push_debian() == reference
    finally:
        ControlPlane(name).down()


def test_restart_brings_the_component_back_when_the_fault_step_fails(lab, kubectl):
    def broken_fault_step():
        raise RuntimeError("the fault step failed")

    with pytest.raises(RuntimeError, match="the fault step failed"):
        ControlPlane(lab.name).restart("kube-apiserver", while_down=broken_fault_step)
    assert kubectl("get", "--raw", "/readyz") == "ok"


def test_down_leaves_no_process_port_or_directory(tmp_path):
    plane = ControlPlane(f"down-check-{os.getpid()}")
    info = plane.up()
    pids = [e["pid"] for e in info.pids.values()]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)

    assert plane.down() is True

    for pid in pids:
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" not in status.read_text()
        assert not status.exists(), f"pid {pid} still exists"
    for name, port in info.ports.items():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"{name} port {port} still answers"
    assert not Path(info.state_dir).exists()
    assert plane.status() is None
    assert plane.down() is False  # a second down has nothing to do


def test_bin_has_kubevirts_own_virtctl_stamped_with_its_release(lab):
    out = subprocess.run([str(Path(lab.state_dir) / "bin" / "virtctl"), "version", "--client"],
                         capture_output=True, text=True, check=True).stdout
    assert 'Client Version: version.Info{GitVersion:"v1.7.0", GitCommit:"50b9b4d0cf1c' in out
    assert lab.versions["kubevirt"] == "v1.7.0"
