"""playbooks/lab.yml brings up the lab with KubeVirt's API; a second run changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import recap, run_playbook


def play(*extra: str):
    return run_playbook("playbooks/lab.yml", *extra)


def test_lab_playbook_is_idempotent_and_check_mode_safe():
    name = f"playbook-{os.getpid()}"
    try:
        first = play("-e", f"lab_name={name}")
        assert recap(first)["changed"] > 0
        assert recap(play("-e", f"lab_name={name}"))["changed"] == 0
        assert recap(play("-e", f"lab_name={name}", "--check", "--diff"))["changed"] == 0
    finally:
        down = play("-e", f"lab_name={name}", "-e", "lab_state=down")
    assert recap(down)["changed"] == 1
    assert not Path(f"/tmp/virtops-lab/{name}").exists()


def test_vmi_playbook_second_run_reports_no_change(lab, kubevirt_api, namespace):
    extra = ["-e", f"kubeconfig={lab.kubeconfig}", "-e", f"vmi_namespace={namespace}"]

    def run(*more):
        return recap(run_playbook("tests/integration/playbooks/vmi_declare.yml", *extra, *more))

    assert run("--check")["changed"] == 2
    assert kubevirt_api("-n", namespace, "get", "vmis", "-o", "name") == ""
    assert run()["changed"] == 2
    assert run()["changed"] == 0
    assert run("--check", "--diff")["changed"] == 0
