"""playbooks/site.yml (a real cluster): its syntax, a check-mode run against a lab that changes nothing, and a real
run that installs the controller on the virtops_controller host (here: this one, under the role's supervisor)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

from conftest import Kubectl, recap, run_playbook


def controller_inputs(plane, directory: Path) -> dict[str, str]:
    """What an operator gives the cluster role for the controller: its kubeconfig and the API's serving certificate."""
    from virtops.api.apiservice import serving_certificate
    from virtops.pki import CertificateAuthority, write_pair

    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority("site-subresources-ca")
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    write_pair(directory, "tls", *serving_certificate(ca, "virtops-subresources", "kubevirt"))
    node_api = plane.node_api_client_files()
    return {"cluster_controller_kubeconfig_src": plane.user_kubeconfig("site-controller", "system:virtops:controller"),
            "cluster_controller_tls_cert_src": str(directory / "tls.crt"),
            "cluster_controller_tls_key_src": str(directory / "tls.key"),
            "cluster_controller_tls_ca_src": str(directory / "ca.crt"),
            "cluster_controller_node_api_client_cert_src": node_api["cert"],
            "cluster_controller_node_api_client_key_src": node_api["key"],
            "cluster_controller_node_api_ca_src": node_api["ca"]}


def controller_paths(root: Path, name: str) -> dict[str, str]:
    return {"cluster_controller_service_name": name,
            "cluster_controller_config_dir": str(root / "etc"), "cluster_controller_state_dir": str(root / "state"),
            "cluster_controller_run_dir": str(root / "run"), "cluster_controller_venv": str(root / "venv")}


def test_site_playbook_syntax_with_the_example_inventory():
    run_playbook("playbooks/site.yml", "--syntax-check", "-i", "examples/site/inventory.yml")


def test_site_playbook_check_mode_installs_nothing(lab, tmp_path, tmp_path_factory):
    from virtops.lab import ControlPlane

    node = f"site-check-{lab.name}"
    plane = ControlPlane(lab.name, lab.state_dir)
    node_kubeconfig = plane.agent_kubeconfig(node)
    local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    controller = dict(local, ansible_become=False, **controller_inputs(plane, tmp_path_factory.mktemp("inputs")),
                      **controller_paths(tmp_path / "controller", "virtops-controller-site-check"))
    inventory = {"all": {"children": {
        "virtops_controller": {"hosts": {"localhost": controller}},
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

    assert recap(proc, "node-a")["failed"] == 0
    said = " ".join(proc.stdout.split()).replace("'", "")
    assert "runs under the roles supervisor" in said  # no systemd here: the role says how it runs
    assert "virtops-controller-site-check runs under the roles supervisor" in said
    # nothing installed on the node nor on the controller host
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]
    assert recap(proc)["failed"] == 0


def test_site_playbook_installs_the_controller_that_serves_the_aggregated_api(tmp_path, tmp_path_factory):
    """The virtops_controller host gets virtops-controller, running; the APIService turns Available; pause answers."""
    from virtops.lab import ControlPlane
    from virtops.lab.control_plane import free_port

    # A lab of its own without our controller: the role installs the only one (leader Lease, APIService).
    plane = ControlPlane(f"site-controller-{os.getpid()}")
    info = plane.up()
    root = tmp_path / "controller"
    ctl = root / "etc" / "virtops-controller-site-ctl"
    try:
        kubectl = Kubectl(Path(info.state_dir) / "bin" / "kubectl", info.kubeconfig)
        inputs = controller_inputs(plane, tmp_path_factory.mktemp("inputs"))
        local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "ansible_become": False}
        controller = dict(local, cluster_controller_api_port=free_port(), **inputs,
                          **controller_paths(root, "virtops-controller-site"))
        path = tmp_path / "inventory.json"
        path.write_text(json.dumps({"all": {"children": {"virtops_controller": {"hosts": {"localhost": controller}}}}}))
        site = ("playbooks/site.yml", "-i", str(path), "-e", f"kubeconfig={info.kubeconfig}")

        first = run_playbook(*site)

        assert recap(first)["failed"] == 0 and recap(first)["changed"] > 0
        assert subprocess.run(["/bin/sh", str(ctl), "status"], check=False).returncode == 0  # it runs
        available = "jsonpath={.status.conditions[?(@.type=='Available')].status}"
        assert kubectl("get", "apiservice", "v1.subresources.kubevirt.io", "-o", available) == "True"
        for secret in ("kubeconfig", "tls.key"):
            assert (root / "etc" / secret).stat().st_mode & 0o777 == 0o600
        key = Path(inputs["cluster_controller_tls_key_src"]).read_text().splitlines()[1]
        assert key not in first.stdout  # never printed

        # kubectl through kube-apiserver's aggregation layer to the installed controller (no node runs the VMI:
        # its phase is written as a node agent would, so the pause reaches no agent and says so).
        vmi = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
               "metadata": {"name": "sitevmi", "namespace": "default"},
               "spec": {"domain": {"resources": {"requests": {"memory": "64Mi"}}, "devices": {}}}}
        kubectl("create", "-f", "-", stdin=json.dumps(vmi))
        kubectl("patch", "vmi", "sitevmi", "--type=merge", "-p", json.dumps({"status": {"phase": "Running"}}))
        pause = "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachineinstances/sitevmi/pause"
        answer = kubectl.run("replace", "--raw", pause, "-f", "-", stdin="{}", check=False)
        # Its node API client certificate is installed (else: 500 "no node API client certificate").
        assert answer.returncode != 0 and "No virt-handler on node  found" in answer.stderr

        second = run_playbook(*site)
        assert recap(second)["changed"] == 0 and recap(second)["failed"] == 0

        # A new serving certificate from another CA: the handler restarts the controller, which publishes that CA.
        controller_inputs(plane, Path(inputs["cluster_controller_tls_ca_src"]).parent)
        third = run_playbook(*site)
        assert recap(third)["changed"] > 0 and "RUNNING HANDLER [virtops.kubevirt.cluster : Restart" in third.stdout
        bundle = kubectl("get", "apiservice", "v1.subresources.kubevirt.io", "-o", "jsonpath={.spec.caBundle}")
        assert base64.b64decode(bundle) == Path(inputs["cluster_controller_tls_ca_src"]).read_bytes()
        assert kubectl("get", "apiservice", "v1.subresources.kubevirt.io", "-o", available) == "True"
        answer = kubectl.run("replace", "--raw", pause.replace("/pause", "/unpause"), "-f", "-", stdin="{}",
                             check=False)
        assert "VMI is not paused" in answer.stderr

        # cluster_state=absent stops the controller and removes it with its APIService.
        run_playbook(*site, "-e", "cluster_state=absent")
        assert not (root / "etc").exists() and not (root / "venv").exists()
        assert kubectl.run("get", "apiservice", "v1.subresources.kubevirt.io", check=False).returncode != 0
    finally:
        if ctl.exists():
            subprocess.run(["/bin/sh", str(ctl), "stop"], check=False)
        plane.down()
