"""The node_agent role's systemd unit, rendered as the role renders it, passes systemd-analyze verify (no unknown
key, no value systemd would ignore), and its hardening is consistent: the syscall filter and the capabilities
agree, and a filtered call fails with EPERM instead of killing the agent with SIGSYS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "roles" / "node_agent" / "templates" / "virtops-agent.service.j2"


def render(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    agent = venv / "bin" / "virtops-agent"
    agent.write_text("#!/bin/sh\n")
    agent.chmod(0o755)
    text = jinja2.Template(TEMPLATE.read_text(), undefined=jinja2.StrictUndefined).render(
        ansible_managed="Ansible managed", node_agent_node_name="node-a", node_agent_venv=str(venv),
        _node_agent_config="/etc/virtops-agent/config.yaml", node_agent_state_dir="/var/lib/virtops-agent")
    unit = tmp_path / "virtops-agent.service"
    unit.write_text(text)
    return unit


def settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_finds_nothing(tmp_path):
    unit = render(tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    # verify only warns about keys and values it ignores: any line naming the unit is a mistake in it.
    assert [line for line in proc.stderr.splitlines() if unit.name in line] == []


def test_syscall_filter_and_capabilities_agree(tmp_path):
    unit = settings(render(tmp_path))
    denied = " ".join(v for v in unit["SystemCallFilter"] if v.startswith("~"))
    capabilities = " ".join(unit["CapabilityBoundingSet"]).split()
    if "@privileged" in denied:  # chown, setuid and friends are filtered: granting their capabilities is a lie
        assert "CAP_CHOWN" not in capabilities
    assert unit["SystemCallErrorNumber"] == ["EPERM"]
