"""Generate the KubeVirt CRDs the cluster role installs (roles/cluster/files/crds/).

One schema for a VMI spec serves the VMI and the VM's template, so the two can
never drift. The schema validates what our stack uses, with messages that name
the field, and preserves every other KubeVirt field so any valid KubeVirt
manifest is accepted. Run it after changing this file; a unit test checks the
committed output is current.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "roles" / "cluster" / "files" / "crds"

# Kubernetes' own pattern for resource.Quantity strings (as controller-gen emits it).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Bounds keep the CEL cost of the cross-reference rules within the API server's budget.
MAX_ITEMS = 256
NAME = {"type": "string", "minLength": 1, "maxLength": 253}


def quantity() -> dict:
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }


def open_object(properties: dict | None = None, required: list[str] | None = None, **extra) -> dict:
    """An object that checks the named properties and keeps every other field."""
    schema: dict = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if properties:
        schema["properties"] = properties
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


def named_list(item_properties: dict | None = None) -> dict:
    props = {"name": NAME}
    props.update(item_properties or {})
    return {
        "type": "array",
        "maxItems": MAX_ITEMS,
        "items": open_object(props, required=["name"]),
    }


def resource_list() -> dict:
    return {"type": "object", "additionalProperties": quantity()}


def vmi_spec_schema() -> dict:
    positive = {"type": "integer", "format": "int32", "minimum": 1}
    domain = open_object(
        {
            "cpu": open_object({"cores": positive, "sockets": positive, "threads": positive}),
            "memory": open_object({"guest": quantity()}),
            "resources": open_object({"requests": resource_list(), "limits": resource_list()}),
            "devices": open_object({"disks": named_list(), "interfaces": named_list()}),
            "machine": open_object({"type": {"type": "string"}}),
        },
        required=["devices"],
    )
    return open_object(
        {
            "domain": domain,
            "volumes": named_list(),
            "networks": named_list(),
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
            "terminationGracePeriodSeconds": {"type": "integer", "format": "int64", "minimum": 0},
        },
        required=["domain"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.domain.devices.disks) || self.domain.devices.disks.all(d, "
                    "has(self.volumes) && self.volumes.exists(v, v.name == d.name))",
                    "message": "every disk in spec.domain.devices.disks must name a volume in spec.volumes",
                    "fieldPath": ".domain.devices.disks",
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": "!has(self.domain.devices.interfaces) || self.domain.devices.interfaces.all(i, "
                    "has(self.networks) && self.networks.exists(n, n.name == i.name))",
                    "message": "every interface in spec.domain.devices.interfaces must name a network in "
                    "spec.networks",
                    "fieldPath": ".domain.devices.interfaces",
                    "reason": "FieldValueInvalid",
                },
            ]
        },
    )


def top_schema(spec: dict, required_spec: bool = True) -> dict:
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": open_object(),
        },
    }
    if required_spec:
        schema["required"] = ["spec"]
    return schema


def crd(
    plural: str, kind: str, short: list[str], schema: dict, columns: list[dict], status_sub: bool
) -> dict:
    versions = []
    for name, storage in (("v1", True), ("v1alpha3", False)):
        version: dict = {
            "name": name,
            "served": True,
            "storage": storage,
            "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
            "additionalPrinterColumns": columns,
        }
        if status_sub:
            version["subresources"] = {"status": {}}
        if name == "v1alpha3":
            version["deprecated"] = True
            version["deprecationWarning"] = (
                "kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release."
            )
        versions.append(version)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.kubevirt.io",
            "labels": {"app.kubernetes.io/managed-by": "virtops.kubevirt", "kubevirt.io": ""},
        },
        "spec": {
            "group": "kubevirt.io",
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["all"],
            },
            "versions": versions,
        },
    }


def column(name: str, path: str, type_: str = "string", priority: int | None = None) -> dict:
    col = {"name": name, "jsonPath": path, "type": type_}
    if priority is not None:
        col["priority"] = priority
    return col


def build() -> list[dict]:
    vmi = crd(
        "virtualmachineinstances",
        "VirtualMachineInstance",
        ["vmi", "vmis"],
        top_schema(vmi_spec_schema()),
        [
            column("Age", ".metadata.creationTimestamp", "date"),
            column("Phase", ".status.phase"),
            column("IP", ".status.interfaces[0].ipAddress"),
            column("NodeName", ".status.nodeName"),
            column("Ready", ".status.conditions[?(@.type=='Ready')].status"),
            column("Live-Migratable", ".status.conditions[?(@.type=='LiveMigratable')].status", priority=1),
            column("Paused", ".status.conditions[?(@.type=='Paused')].status", priority=1),
        ],
        # KubeVirt's VMI has no status subresource: its handler writes status with the object.
        status_sub=False,
    )
    run_strategies = ["Always", "RerunOnFailure", "Halted", "Manual", "Once", "WaitAsReceiver"]
    vm_spec = open_object(
        {
            "running": {"type": "boolean"},
            "runStrategy": {"type": "string", "enum": run_strategies},
            "template": open_object(
                {"metadata": open_object(), "spec": vmi_spec_schema()}, required=["spec"]
            ),
        },
        required=["template"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.running) && has(self.runStrategy))",
                    "message": "spec.running and spec.runStrategy are mutually exclusive",
                    "reason": "FieldValueForbidden",
                }
            ]
        },
    )
    vm = crd(
        "virtualmachines",
        "VirtualMachine",
        ["vm", "vms"],
        top_schema(vm_spec),
        [
            column("Age", ".metadata.creationTimestamp", "date"),
            column("Status", ".status.printableStatus"),
            column("Ready", ".status.conditions[?(@.type=='Ready')].status"),
        ],
        status_sub=True,
    )
    return [vmi, vm]


class _IndentedListDumper(yaml.SafeDumper):
    """Indents a list under its key, as yamllint (and ansible-lint's yaml rule) expects in the collection."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def render() -> dict[str, str]:
    """File name -> content, one CRD per file."""
    header = "---\n# Generated by hack/gen_crds.py; do not edit by hand.\n"
    return {
        f"{doc['spec']['names']['plural']}.yaml":
            header + yaml.dump(doc, Dumper=_IndentedListDumper, sort_keys=False, width=120)
        for doc in build()
    }


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        for name in stale:
            print(f"{OUT / name} is stale: run python hack/gen_crds.py", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
