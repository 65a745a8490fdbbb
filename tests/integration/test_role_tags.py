"""Phases run alone by their tags, and the cluster role never falls back to ~/.kube/config."""

from __future__ import annotations

from pathlib import Path

from conftest import recap, run_playbook


def test_the_cluster_phase_of_the_lab_playbook_alone_uses_the_labs_kubeconfig(lab, kubevirt_api):
    # lab_kubeconfig comes from a fact tagged always; before, the cluster role got none and used ~/.kube/config.
    root = str(Path(lab.state_dir).parent)
    proc = run_playbook("playbooks/lab.yml", "-e", f"lab_name={lab.name}", "-e", f"lab_state_root={root}",
                        "--check", "--tags", "cluster_api")
    assert recap(proc)["failed"] == 0


def test_the_cluster_role_without_a_kubeconfig_fails_clearly(tmp_path):
    proc = run_playbook("tests/integration/playbooks/cluster.yml", "--tags", "cluster_stack", ok=False,
                        env={"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "nowhere")})
    assert "cluster_kubeconfig is not set" in " ".join(proc.stdout.split())
