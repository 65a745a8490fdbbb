"""Inventory plugin virtops.kubevirt.kubevirt on a stack lab: real VMs and VMIs (running, stopped, paused) as
hosts and groups through ansible-inventory, the virtctl ProxyCommand, and a cache that answers without the API."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_module

pytest.importorskip("libvirt")

TEMPLATE = {"terminationGracePeriodSeconds": 1,
            "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}


def unsafe_to_plain(obj):
    """ansible-inventory --list marks strings from the API as unsafe (never templated): {"__ansible_unsafe": s}."""
    return obj.get("__ansible_unsafe", obj) if len(obj) == 1 else obj


def listing(source: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(ansible_inventory(source, "--list", *args, env=env).stdout, object_hook=unsafe_to_plain)


def ansible_inventory(source: Path, *args: str, env: dict[str, str] | None = None, ok: bool = True):
    # A source the plugin cannot read is an error, not a warning and an empty inventory.
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_INVENTORY_UNPARSED_FAILED="true", **(env or {}))
    cmd = [str(Path(sys.executable).with_name("ansible-inventory")), "-i", str(source), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def fleet(stack_lab):
    """web (running, then paused), db (stopped VM) and solo (a VMI without a VM) in a namespace of their own."""
    info, kubectl = stack_lab
    ns = f"inv-{os.urandom(3).hex()}"
    kubectl("create", "namespace", ns)
    auth = {"kubeconfig": info.kubeconfig, "namespace": ns}
    try:
        assert run_module("vm", dict(auth, name="web", labels={"app": "web"}, run_strategy="Always", spec=TEMPLATE,
                                     wait=True))["summary"]["ready"] is True
        run_module("vm", dict(auth, name="db", labels={"app": "db"}, run_strategy="Halted", spec=TEMPLATE))
        run_module("vmi", dict(auth, name="solo", spec=TEMPLATE, wait=True))
        assert run_module("vmi_power", dict(auth, name="web", state="paused"))["summary"]["paused"] is True
        # The controller writes the VMs' status a moment later.
        for vm, status in (("web", "Paused"), ("db", "Stopped")):
            kubectl("-n", ns, "wait", f"vm/{vm}", f"--for=jsonpath={{.status.printableStatus}}={status}",
                    "--timeout=60s")
        yield info, ns
    finally:
        kubectl("delete", "vms,vmis", "--all", "-n", ns, "--wait=true", "--timeout=60s")
        kubectl("delete", "namespace", ns, "--wait=false")


def source(tmp_path: Path, info, ns: str, **extra) -> Path:
    path = tmp_path / "lab.kubevirt.yml"
    path.write_text(yaml.safe_dump(dict({"plugin": "virtops.kubevirt.kubevirt", "kubeconfig": info.kubeconfig,
                                         "namespaces": [ns], "create_groups": True}, **extra)))
    return path


def test_graph_shows_namespace_label_phase_stopped_paused_and_node_groups(fleet, tmp_path):
    info, ns = fleet
    graph = ansible_inventory(source(tmp_path, info, ns), "--graph").stdout
    listed = listing(source(tmp_path, info, ns))
    web, db, solo = f"{ns}-web", f"{ns}-db", f"{ns}-solo"
    namespace_group = "namespace_" + ns.replace("-", "_")  # Ansible makes group names identifiers
    assert f"@{namespace_group}:" in graph
    assert set(listed[namespace_group]["hosts"]) == {web, db, solo}
    assert listed["label_app_web"]["hosts"] == [web]
    assert listed["label_app_db"]["hosts"] == [db]
    assert listed["paused"]["hosts"] == [web]
    assert listed["stopped"]["hosts"] == [db]  # a stopped VM is still a host
    assert set(listed["phase_running"]["hosts"]) == {web, solo}
    node = "node_" + f"{info.name}-node-1".replace("-", "_")  # the lab's one agent
    assert set(listed[node]["hosts"]) == {web, solo}
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars[web]["vm_printable_status"] == "Paused"
    assert hostvars[web]["vmi_phase"] == "Running" and hostvars[web]["vm_labels"] == {"app": "web"}
    assert "vmi_phase" not in hostvars[db] and hostvars[db]["vm_printable_status"] == "Stopped"


def test_virtctl_proxy_sets_the_proxycommand_virtctl_ssh_uses(fleet, tmp_path):
    info, ns = fleet
    path = source(tmp_path, info, ns, virtctl_proxy=True, compose={"ansible_user": "'debian'"},
                  keyed_groups=[{"key": "vm_printable_status | default('none')", "prefix": "status"}])
    listed = listing(path)
    web = listed["_meta"]["hostvars"][f"{ns}-web"]
    assert web["ansible_host"] == f"vmi.web.{ns}"
    assert web["ansible_ssh_common_args"] == (
        f"-o ProxyCommand='virtctl --kubeconfig {info.kubeconfig} port-forward --stdio=true vmi/web/{ns} 22'")
    assert web["ansible_user"] == "debian"
    assert listed["status_Paused"]["hosts"] == [f"{ns}-web"]
    assert listed["status_none"]["hosts"] == [f"{ns}-solo"]


def test_the_proxycommand_reaches_the_vmi_through_virtctl(fleet, tmp_path):
    """The ProxyCommand as ssh would run it, with the lab's virtctl: it names the right VMI (web, paused here, so
    KubeVirt's 409 comes back); the NAME.NAMESPACE form asked for a VMI "web.NS" in the default namespace."""
    info, ns = fleet
    virtctl = str(Path(info.state_dir) / "bin" / "virtctl")
    path = source(tmp_path, info, ns, virtctl_proxy=True, virtctl_command=virtctl)
    args = listing(path)["_meta"]["hostvars"][f"{ns}-web"]["ansible_ssh_common_args"]
    command = shlex.split(shlex.split(args)[1].removeprefix("ProxyCommand="))
    assert command[0] == virtctl
    proxy = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    assert proxy.returncode != 0
    assert 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "web": VMI is paused' in proxy.stderr


def test_a_cached_inventory_makes_no_request(fleet, tmp_path):
    """The second call runs with the API address pointed at a closed port: any request would fail."""
    info, ns = fleet
    path = source(tmp_path, info, ns, cache=True, cache_plugin="ansible.builtin.jsonfile",
                  cache_connection=str(tmp_path / "cache"), cache_timeout=600)
    first = listing(path)
    assert f"{ns}-web" in first["_meta"]["hostvars"]
    dead = {"K8S_AUTH_HOST": "https://127.0.0.1:1"}
    cached = listing(path, env=dead)
    assert cached == first
    # What a user types: --graph prints the groups from the cache as well.
    graph = ansible_inventory(path, "--graph", env=dead).stdout
    assert f"@namespace_{ns.replace('-', '_')}:" in graph and "@paused:" in graph and f"--{ns}-web" in graph
    # The same call without the cache does go to the closed port, so the one above made no request.
    refreshed = ansible_inventory(path, "--list", "--flush-cache", env=dead, ok=False)
    assert "Cannot reach the Kubernetes API at https://127.0.0.1:1: connection refused" in refreshed.stderr
