"""The lab starts kube-controller-manager only once kube-apiserver is ready.

kube-controller-manager gives the API server 10 s to turn healthy and then exits; on this loaded machine
kube-apiserver sometimes took longer, and `up` failed with "kube-controller-manager exited". Processes and
readiness are faked here (the boundary: ControlPlane._spawn and _ready); the real start is in the integration tests.
"""

from __future__ import annotations

import os

from virtops.lab import ControlPlane, control_plane

TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "virtctl")


def test_kube_controller_manager_starts_after_the_api_server_answers_ready(tmp_path, monkeypatch):
    plane = ControlPlane("order", tmp_path / "lab")
    plane.state_dir.mkdir(parents=True)
    events: list[str] = []
    polls: list[int] = []
    me = {"pid": os.getpid(), "ticks": control_plane._start_ticks(os.getpid())}

    def spawn(component: str, argv: list[str]) -> dict[str, int]:
        events.append(f"spawn {component}")
        return me

    def ready(info) -> bool:
        polls.append(1)
        if len(polls) < 3:  # a slow API server: not ready on the first two polls
            return False
        events.append("ready")
        return True

    monkeypatch.setattr(plane, "_spawn", spawn)
    monkeypatch.setattr(plane, "_ready", ready)
    monkeypatch.setattr(plane, "_wait_registry", lambda info: None)  # the registry is faked too
    monkeypatch.setattr(plane, "_push_images", lambda: None)
    monkeypatch.setattr(control_plane.time, "sleep", lambda _s: None)
    plane._start({tool: tmp_path / tool for tool in TOOLS})

    assert events.index("spawn kube-controller-manager") > events.index("ready") > events.index(
        "spawn kube-apiserver")
