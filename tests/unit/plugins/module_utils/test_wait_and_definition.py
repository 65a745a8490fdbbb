"""module_utils.wait expectations and module_utils.vmi definitions, without a server."""

from __future__ import annotations

import pytest
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import DefinitionError
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import build_definition, summarize
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import Expectation


def vmi(phase="", conditions=()):
    return {"metadata": {"name": "a"}, "status": {"phase": phase, "conditions": list(conditions)}}


def test_phase_expectation():
    exp = Expectation.from_params(None)
    assert exp.phase == "Running"
    assert exp.met(vmi("Running")) and not exp.met(vmi("Scheduled")) and not exp.met(None)
    assert exp.impossible(vmi("Failed")) == "it reached the final phase Failed"
    assert exp.impossible(None) == "it was deleted"
    assert exp.impossible(vmi("Scheduling")) is None


def test_condition_expectation_with_reason():
    exp = Expectation.from_params({"condition": "Paused", "status": "True", "reason": "PausedByUser"})
    paused = {"type": "Paused", "status": "True", "reason": "PausedByUser"}
    assert exp.met(vmi("Running", [paused]))
    assert not exp.met(vmi("Running", [dict(paused, reason="Other")]))
    assert exp.describe() == "condition Paused=True (reason PausedByUser)"


def test_status_false_is_met_by_a_missing_condition():
    exp = Expectation.from_params({"condition": "Paused", "status": "False"})
    assert exp.met(vmi("Running"))


def test_absent_expectation():
    exp = Expectation(absent=True)
    assert exp.met(None) and not exp.met(vmi()) and exp.impossible(vmi()) is None


def test_definition_from_options_gets_kind_apiversion_and_namespace():
    doc = build_definition(name="a", spec={"domain": {}}, default_namespace="ctx-ns", labels={"x": "1"})
    assert doc["apiVersion"] == "kubevirt.io/v1" and doc["kind"] == "VirtualMachineInstance"
    assert doc["metadata"] == {"name": "a", "namespace": "ctx-ns", "labels": {"x": "1"}}


def test_options_override_and_extend_the_definition():
    definition = "metadata:\n  name: a\n  namespace: n1\n  labels: {x: '1'}\nspec: {domain: {}}\n"
    doc = build_definition(definition=definition, namespace="n2", labels={"y": "2"})
    assert doc["metadata"]["namespace"] == "n2"
    assert doc["metadata"]["labels"] == {"x": "1", "y": "2"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"definition": {"metadata": {"generateName": "a-"}, "spec": {}}}, "metadata.generateName is not supported"),
        ({"definition": "a: [unclosed"}, "definition: not valid YAML"),
        ({"definition": "- a\n- b\n"}, "definition: expected a mapping"),
        ({"definition": 3}, "definition: expected a dict, a list of dicts or YAML text"),
    ],
)
def test_bad_definitions_name_the_field(kwargs, message):
    with pytest.raises(DefinitionError, match=message.replace("[", r"\[")):
        build_definition(**kwargs)


def test_absent_needs_no_spec():
    assert build_definition(name="a", need_spec=False)["metadata"]["name"] == "a"


def test_summary_of_a_fresh_vmi_is_empty_but_complete():
    assert summarize({"metadata": {"name": "a", "namespace": "n"}}) == {
        "name": "a", "namespace": "n", "phase": "", "node": "", "ip": "", "ready": False, "paused": False,
    }
