"""playbooks/site.yml (a real cluster): its syntax, and a check-mode run against a lab that changes nothing."""

from __future__ import annotations

import json

from conftest import recap, run_playbook


def test_site_playbook_syntax_with_the_example_inventory():
    run_playbook("playbooks/site.yml", "--syntax-check", "-i", "examples/site/inventory.yml")


def test_site_playbook_check_mode_installs_nothing(lab, tmp_path):
    from virtops.lab import ControlPlane

    node = f"site-check-{lab.name}"
    node_kubeconfig = ControlPlane(lab.name, lab.state_dir).agent_kubeconfig(node)
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inventory = {"all": {"children": {
        "virtops_controller": {"hosts": {"localhost": local}},
        "virtops_nodes": {"hosts": {"node-a": dict(local, ansible_become=False, node_agent_node_name=node,
                                                   node_agent_kubeconfig_src=node_kubeconfig,
                                                   node_agent_service_name="virtops-agent-site-check",
                                                   node_agent_config_dir=str(tmp_path / "etc"),
                                                   node_agent_state_dir=str(tmp_path / "state"),
                                                   node_agent_run_dir=str(tmp_path / "run"),
                                                   node_agent_venv=str(tmp_path / "venv"))}},
    }}}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))

    proc = run_playbook("playbooks/site.yml", "-i", str(path), "--check", "-e", f"kubeconfig={lab.kubeconfig}")

    assert recap_of(proc, "node-a")["failed"] == 0
    said = " ".join(proc.stdout.split()).replace("'", "")
    assert "runs under the roles supervisor" in said  # no systemd here: the role says how it runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]  # nothing installed on the node
    assert recap(proc)["failed"] == 0


def recap_of(proc, host: str) -> dict[str, int]:
    import re

    line = re.search(rf"{re.escape(host)}\s+:\s+(.*)", proc.stdout).group(1)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
