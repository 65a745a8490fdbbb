"""The committed CRDs are what hack/gen_crds.py generates, and match KubeVirt's contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "hack" / "gen_crds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_crds_are_current():
    assert load_generator().main(["--check"]) == 0


def test_vmi_printer_columns_follow_kubevirt():
    vmi = load_generator().build()[0]
    columns = vmi["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in columns] == [
        ("Age", ".metadata.creationTimestamp", 0),
        ("Phase", ".status.phase", 0),
        ("IP", ".status.interfaces[0].ipAddress", 0),
        ("NodeName", ".status.nodeName", 0),
        ("Ready", ".status.conditions[?(@.type=='Ready')].status", 0),
        ("Live-Migratable", ".status.conditions[?(@.type=='LiveMigratable')].status", 1),
        ("Paused", ".status.conditions[?(@.type=='Paused')].status", 1),
    ]


def test_vm_template_uses_the_same_spec_schema_as_the_vmi():
    gen = load_generator()
    vmi, vm = gen.build()
    vmi_spec = vmi["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    vm_template = vm["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "template"
    ]["properties"]["spec"]
    assert vmi_spec == vm_template
