"""The node_agent role on this host in check mode: as on a fresh systemd host (nothing installed yet, systemd
chosen) and one phase alone by its tag. Nothing may be installed and nothing may fail."""

from __future__ import annotations

import json

import pytest
from conftest import run_playbook


def inventory(lab, tmp_path, **more) -> str:
    from virtops.lab import ControlPlane

    node = f"role-check-{lab.name}"
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "ansible_become": False, "node_agent_node_name": node,
            "node_agent_kubeconfig_src": ControlPlane(lab.name, lab.state_dir).agent_kubeconfig(node),
            "node_agent_service_name": f"virtops-agent-role-check-{lab.name}",
            "node_agent_install_packages": False,
            "node_agent_config_dir": str(tmp_path / "node" / "etc"),
            "node_agent_state_dir": str(tmp_path / "node" / "state"),
            "node_agent_run_dir": str(tmp_path / "node" / "run"),
            "node_agent_venv": str(tmp_path / "node" / "venv"), **more}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({"all": {"hosts": {"node-a": host}}}))
    return str(path)


def recap_of(proc, host: str) -> dict[str, int]:
    import re

    line = re.search(rf"{re.escape(host)}\s+:\s+(.*)", proc.stdout).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


@pytest.mark.parametrize("tags", [[], ["--tags", "node_agent_service"], ["--tags", "node_agent_configure"]])
def test_check_mode_on_a_fresh_systemd_host_installs_nothing_and_fails_nowhere(lab, tmp_path, tags):
    # systemd chosen: the unit is not there yet, so systemd cannot be asked about it (nor is systemd PID 1 here).
    path = inventory(lab, tmp_path, node_agent_service_manager="systemd")
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--check", *tags)
    assert recap_of(proc, "node-a")["failed"] == 0
    assert not (tmp_path / "node").exists()  # nothing installed


def test_the_service_phase_alone_knows_how_the_agent_runs(lab, tmp_path):
    path = inventory(lab, tmp_path)
    proc = run_playbook("tests/integration/playbooks/node_agent.yml", "-i", path, "--check",
                        "--tags", "node_agent_service")
    assert "runs under the roles supervisor" in " ".join(proc.stdout.split()).replace("'", "")
