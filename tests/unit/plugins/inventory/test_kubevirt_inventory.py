"""The inventory plugin's file detection and host/group building from listed objects, without a server."""

from __future__ import annotations

from ansible.inventory.data import InventoryData
from ansible_collections.virtops.kubevirt.plugins.inventory.kubevirt import InventoryModule


def plugin_with(options):
    plugin = InventoryModule()
    plugin.inventory = InventoryData()
    defaults = {"host_format": "{namespace}-{name}", "create_groups": False, "state_groups": True,
                "use_service": True, "unset_ansible_port": True, "network_name": None, "kube_secondary_dns": False,
                "append_base_domain": False, "virtctl_proxy": False, "virtctl_command": "virtctl",
                "virtctl_ssh_port": 22, "kubeconfig": None, "context": None, "compose": {}, "groups": {},
                "keyed_groups": [], "strict": False, "name": None}
    defaults.update(options)
    plugin.get_option = defaults.get
    return plugin


def vmi(name, phase="Running", node="n1", paused=False, ip="10.0.2.15", labels=None):
    conditions = [{"type": "Paused", "status": "True"}] if paused else []
    return {"metadata": {"name": name, "namespace": "demo", "uid": "u-" + name, "labels": labels or {}},
            "status": {"phase": phase, "nodeName": node, "conditions": conditions,
                       "interfaces": [{"name": "default", "ipAddress": ip}]}}


def vm(name, status="Running"):
    return {"metadata": {"name": name, "namespace": "demo", "uid": "vm-" + name},
            "spec": {"runStrategy": "Always"}, "status": {"printableStatus": status}}


def test_only_kubevirt_yml_files_are_ours(tmp_path):
    ours = tmp_path / "lab.kubevirt.yml"
    ours.write_text("plugin: virtops.kubevirt.kubevirt\n")
    other = tmp_path / "lab.yml"
    other.write_text("plugin: virtops.kubevirt.kubevirt\n")
    plugin = InventoryModule()
    assert plugin.verify_file(str(ours)) is True
    assert plugin.verify_file(str(other)) is False


def test_groups_and_connection_vars():
    plugin = plugin_with({"create_groups": True})
    nodeport = {"metadata": {"name": "ssh", "namespace": "demo"},
                "spec": {"type": "NodePort", "selector": {"kubevirt.io/domain": "a"},
                         "ports": [{"targetPort": 22, "nodePort": 30022}]}}
    plugin._populate({"default_name": "127-0-0-1_6443", "base_domain": None, "namespaces": {"demo": {
        "vms": [vm("a", "Paused"), vm("b", "Stopped")],
        "vmis": [vmi("a", paused=True, labels={"kubevirt.io/domain": "a"}), vmi("c", phase="Scheduled", node="")],
        "services": [nodeport]}}})
    groups = plugin.inventory.groups
    assert sorted(h.name for h in groups["namespace_demo"].get_hosts()) == ["demo-a", "demo-b", "demo-c"]
    assert [h.name for h in groups["paused"].get_hosts()] == ["demo-a"]
    assert [h.name for h in groups["stopped"].get_hosts()] == ["demo-b"]
    assert [h.name for h in groups["phase_scheduled"].get_hosts()] == ["demo-c"]
    assert [h.name for h in groups["node_n1"].get_hosts()] == ["demo-a"]
    assert "namespace_demo" in [g.name for g in groups["_27_0_0_1_6443"].child_groups]
    a = plugin.inventory.get_host("demo-a").vars
    assert a["ansible_host"] == "n1" and a["ansible_port"] == 30022  # the NodePort Service
    assert a["vm_printable_status"] == "Paused" and a["vmi_node_name"] == "n1"


def test_virtctl_proxy_quotes_the_kubeconfig_path():
    plugin = plugin_with({"virtctl_proxy": True, "kubeconfig": "/tmp/my lab/kubeconfig", "context": "admin"})
    plugin._populate({"default_name": "x", "base_domain": None,
                      "namespaces": {"demo": {"vms": [vm("b", "Stopped")], "vmis": [], "services": []}}})
    b = plugin.inventory.get_host("demo-b").vars
    assert b["ansible_host"] == "vmi.b.demo"
    assert b["ansible_ssh_common_args"] == ("-o ProxyCommand='virtctl --kubeconfig '\"'\"'/tmp/my lab/kubeconfig'"
                                            "\"'\"' --context admin port-forward --stdio=true vmi/b/demo 22'")
