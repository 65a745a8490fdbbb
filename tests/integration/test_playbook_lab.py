"""playbooks/lab.yml brings up the lab with KubeVirt's API; a second run changes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def play(*extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "playbooks/lab.yml", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc


def recap(proc: subprocess.CompletedProcess) -> dict[str, int]:
    line = re.search(r"localhost\s+:\s+(.*)", proc.stdout).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


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
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "tests/integration/playbooks/vmi_declare.yml"]

    def run(*more):
        proc = subprocess.run(cmd + extra + list(more), cwd=ROOT, env=env, capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return recap(proc)

    assert run("--check")["changed"] == 2
    assert kubevirt_api("-n", namespace, "get", "vmis", "-o", "name") == ""
    assert run()["changed"] == 2
    assert run()["changed"] == 0
    assert run("--check", "--diff")["changed"] == 0
