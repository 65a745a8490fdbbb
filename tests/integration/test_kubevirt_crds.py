"""KubeVirt's CRDs as KubeVirt defines them: names, versions, columns, validation, roles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def vmi(name: str = "testvmi", **spec_overrides) -> dict:
    doc = yaml.safe_load((EXAMPLES / "vmi-testvmi.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"].update(spec_overrides)
    return doc


def test_kubevirt_example_with_containerdisk_and_cloudinit_is_accepted(kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "-f", str(EXAMPLES / "vmi-testvmi.yaml"))
    got = json.loads(kubevirt_api("-n", namespace, "get", "vmi", "testvmi", "-o", "json"))
    volumes = {v["name"]: v for v in got["spec"]["volumes"]}
    assert volumes["containerdisk"]["containerDisk"]["image"].startswith("quay.io/kubevirt/")
    assert "cloudInitNoCloud" in volumes["cloudinitdisk"]
    # Fields our schema does not describe are kept, not pruned.
    assert got["spec"]["networks"] == [{"name": "default", "pod": {}}]
    assert got["spec"]["domain"]["devices"]["interfaces"][0]["masquerade"] == {}


def test_printer_columns_match_kubevirt(kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "-f", str(EXAMPLES / "vmi-testvmi.yaml"))
    header = kubevirt_api("-n", namespace, "get", "vmis").splitlines()[0].split()
    assert header == ["NAME", "AGE", "PHASE", "IP", "NODENAME", "READY"]
    wide = kubevirt_api("-n", namespace, "get", "vmi", "-o", "wide").splitlines()[0].split()
    assert wide[-2:] == ["LIVE-MIGRATABLE", "PAUSED"]


def test_names_short_names_and_categories(kubevirt_api):
    crd = json.loads(kubevirt_api("get", "crd", "virtualmachineinstances.kubevirt.io", "-o", "json"))
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "VirtualMachineInstance",
        ["vmi", "vmis"],
        ["all"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions["v1"]["storage"] and versions["v1"]["served"]
    assert versions["v1alpha3"]["served"] and versions["v1alpha3"]["deprecated"]
    vm = json.loads(kubevirt_api("get", "crd", "virtualmachines.kubevirt.io", "-o", "json"))
    assert vm["spec"]["names"]["shortNames"] == ["vm", "vms"]
    assert [c["name"] for c in vm["spec"]["versions"][0]["additionalPrinterColumns"]] == [
        "Age",
        "Status",
        "Ready",
    ]


def test_v1alpha3_is_served_with_a_deprecation_warning(kubevirt_api, namespace):
    doc = vmi("oldapi")
    doc["apiVersion"] = "kubevirt.io/v1alpha3"
    proc = kubevirt_api.run("-n", namespace, "create", "-f", "-", stdin=json.dumps(doc))
    assert "v1alpha3 is now deprecated" in proc.stderr


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["spec"].pop("domain"), "spec.domain: Required value"),
        (lambda d: d["spec"]["domain"].pop("devices"), "spec.domain.devices: Required value"),
        (
            lambda d: d["spec"]["domain"]["resources"]["requests"].update(memory="lots"),
            "spec.domain.resources.requests.memory",
        ),
        (lambda d: d["spec"]["domain"]["cpu"].update(cores=0), "spec.domain.cpu.cores"),
        (
            lambda d: d["spec"]["domain"]["devices"]["disks"].append({"name": "nodisk", "disk": {}}),
            "spec.domain.devices.disks: Invalid value: every disk in spec.domain.devices.disks must name a "
            "volume in spec.volumes",
        ),
        (
            lambda d: d["spec"]["networks"].clear(),
            "spec.domain.devices.interfaces",
        ),
    ],
    ids=["no-domain", "no-devices", "bad-memory-quantity", "zero-cores", "disk-without-volume",
         "interface-without-network"],
)
def test_invalid_vmi_is_rejected_naming_the_field(kubevirt_api, namespace, mutate, field):
    doc = vmi("invalid")
    mutate(doc)
    proc = kubevirt_api.run("-n", namespace, "create", "-f", "-", stdin=json.dumps(doc), check=False)
    assert proc.returncode != 0
    assert field in proc.stderr
    assert kubevirt_api.run("-n", namespace, "get", "vmi", "invalid", check=False).returncode != 0


def test_vm_running_and_run_strategy_are_exclusive(kubevirt_api, namespace):
    vm = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "vm1"},
        "spec": {"running": True, "runStrategy": "Always", "template": {"spec": vmi()["spec"]}},
    }
    proc = kubevirt_api.run("-n", namespace, "create", "-f", "-", stdin=json.dumps(vm), check=False)
    assert "spec.running and spec.runStrategy are mutually exclusive" in proc.stderr


def test_user_roles_aggregate_into_builtin_edit_and_view(kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice")
    kubevirt_api("-n", namespace, "create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob")

    def can(user: str, verb: str, resource: str) -> bool:
        """Ask as the subresource API server will: a SubjectAccessReview (kubectl cannot
        resolve subresources.kubevirt.io before its APIService exists)."""
        resource, _slash, sub = resource.partition("/")
        plural, _dot, group = resource.partition(".")
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": plural,
                    "subresource": sub,
                },
            },
        }
        out = kubevirt_api("create", "-o", "json", "-f", "-", stdin=json.dumps(review))
        return json.loads(out)["status"].get("allowed", False)

    # The clusterrole-aggregation controller fills the built-in roles asynchronously.
    for _attempt in range(100):
        if can("alice", "create", "virtualmachineinstances.kubevirt.io"):
            break
        time.sleep(0.1)
    assert can("alice", "create", "virtualmachineinstances.kubevirt.io")
    assert can("alice", "update", "virtualmachineinstances.subresources.kubevirt.io/pause")
    assert can("bob", "list", "virtualmachineinstances.kubevirt.io")
    assert not can("bob", "delete", "virtualmachineinstances.kubevirt.io")
    assert not can("bob", "update", "virtualmachineinstances.subresources.kubevirt.io/pause")
