"""The node_agent role on this host in check mode: as on a fresh systemd host (nothing installed yet, systemd
chosen) and one phase alone by its tag. Nothing may be installed and nothing may fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import recap, run_playbook


def inventory(lab, tmp_path, root: Path | None = None, **more) -> str:
    from virtops.lab import ControlPlane

    root = root or tmp_path / "node"
    node = f"role-check-{lab.name}"
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "ansible_become": False, "node_agent_node_name": node,
            "node_agent_kubeconfig_src": ControlPlane(lab.name, lab.state_dir).agent_kubeconfig(node),
            "node_agent_service_name": f"virtops-agent-role-check-{lab.name}",
            "node_agent_install_packages": False,
            "node_agent_config_dir": str(root / "etc"), "node_agent_state_dir": str(root / "state"),
            "node_agent_run_dir": str(root / "run"), "node_agent_venv": str(root / "venv"), **more}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({"all": {"hosts": {"node-a": host}}}))
    return str(path)


@pytest.mark.parametrize("tags", [[], ["--tags", "node_agent_service"], ["--tags", "node_agent_configure"]])
def test_check_mode_on_a_fresh_systemd_host_installs_nothing_and_fails_nowhere(lab, tmp_path, tags):
    # systemd chosen: the unit is not there yet, so systemd cannot be asked about it (nor is systemd PID 1 here).
    # Its directories outside /tmp (the unit's PrivateTmp): check mode must not create them.
    root = Path(f"/var/lib/virtops-role-check-{os.getpid()}-{tmp_path.name}")
    path = inventory(lab, tmp_path, root, node_agent_service_manager="systemd")
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--check", *tags)
    assert recap(proc, "node-a")["failed"] == 0
    assert not root.exists()  # nothing installed


def test_systemd_with_a_state_dir_in_tmp_fails_clearly(lab, tmp_path):
    path = inventory(lab, tmp_path, node_agent_service_manager="systemd")
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--check", ok=False)
    said = " ".join(proc.stdout.split())
    assert f"node_agent_state_dir={tmp_path}/node/state cannot be used with systemd" in said
    assert "PrivateTmp=yes" in said


def test_the_service_phase_alone_knows_how_the_agent_runs(lab, tmp_path):
    path = inventory(lab, tmp_path)
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--check",
                        "--tags", "node_agent_service")
    assert "runs under the roles supervisor" in " ".join(proc.stdout.split()).replace("'", "")


def test_a_kubeconfig_that_is_not_a_regular_file_fails_clearly(lab, tmp_path):
    path = inventory(lab, tmp_path, node_agent_kubeconfig_src=str(tmp_path))
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--check", ok=False)
    assert "is not a readable regular file on the Ansible controller" in " ".join(proc.stdout.split())


def test_another_nodes_identity_fails_clearly_without_printing_it(lab, tmp_path):
    """The configure phase for real (the test's own virtualenv runs the whoami), with node b's kubeconfig for a."""
    from virtops.lab import ControlPlane

    other = ControlPlane(lab.name, lab.state_dir).agent_kubeconfig(f"role-other-{lab.name}")
    venv = str(Path(sys.executable).parent.parent)
    path = inventory(lab, tmp_path, node_agent_kubeconfig_src=other, node_agent_venv=venv)
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--tags", "node_agent_configure",
                        ok=False)
    said = " ".join(proc.stdout.split())
    assert f"authenticates as system:virtops:node:role-other-{lab.name}, not as system:virtops:node:role-check-" in said
    assert "node_agent_node_name=role-check-" in said
    assert "PRIVATE KEY" not in proc.stdout and "client-key-data" not in proc.stdout
    assert (tmp_path / "node" / "etc" / "kubeconfig").stat().st_mode & 0o777 == 0o600


def test_absent_refuses_while_the_node_has_guests_unless_told_to_remove_them(lab, tmp_path):
    """A domain marked with the node (defined here, never started) stands for a guest whose disks are in the
    state directory: absent names it and removes nothing; with node_agent_remove_guests it undefines it."""
    node = f"role-check-{lab.name}"
    domain = f"t-{tmp_path.name[-20:]}_guest".replace(".", "-")
    xml = (f"<domain type='qemu'><name>{domain}</name><memory unit='MiB'>32</memory><os><type>hvm</type></os>"
           "<metadata><virtops:vmi xmlns:virtops='https://virtops.dev/agent' namespace='t' name='guest' uid='u1'"
           f" node='{node}'/></metadata></domain>")
    (tmp_path / "domain.xml").write_text(xml)
    virsh = ["virsh", "--connect", "qemu:///system"]
    subprocess.run([*virsh, "define", str(tmp_path / "domain.xml")], check=True, capture_output=True)
    state = tmp_path / "node" / "state"
    state.mkdir(parents=True)
    try:
        path = inventory(lab, tmp_path, node_agent_state="absent")
        refused = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, ok=False)
        said = " ".join(refused.stdout.split())
        assert f"holds the disks of 1 guest(s) of node {node}: {domain}" in said
        assert "node_agent_remove_guests=true" in said
        assert state.exists()  # nothing removed

        path = inventory(lab, tmp_path, node_agent_state="absent", node_agent_remove_guests=True)
        run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path)
        assert not state.exists()
        listed = subprocess.run([*virsh, "list", "--all", "--name"], check=True, capture_output=True, text=True)
        assert domain not in listed.stdout.split()
        again = inventory(lab, tmp_path, node_agent_state="absent")
        run_playbook("tests/integration/playbooks/node_agent.yml", "-i", again)  # no guest left: no refusal
    finally:
        subprocess.run([*virsh, "undefine", domain], check=False, capture_output=True)
