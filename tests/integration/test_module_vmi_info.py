"""Module vmi_info against the real lab: get, list by namespace, labels and fields, wait."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from conftest import run_module, wait_until


def vmi(name, namespace, **labels):
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}},
    }


@pytest.fixture
def two_namespaces(kubevirt_api):
    tag = uuid.uuid4().hex[:6]
    names = [f"info-a-{tag}", f"info-b-{tag}"]
    for ns in names:
        kubevirt_api("create", "namespace", ns)
    kubevirt_api("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        vmi("web1", names[0], app="web", run=tag),
        vmi("db1", names[0], app="db", run=tag),
        vmi("web2", names[1], app="web", run=tag),
    ]}))
    yield tag, names
    for ns in names:
        kubevirt_api("delete", "namespace", ns, "--wait=false")


def test_get_one_by_name(module, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    result = module("vmi_info", {"name": "web1", "namespace": ns_a})
    assert result["changed"] is False
    assert [s["name"] for s in result["summaries"]] == ["web1"]
    assert result["resources"][0]["metadata"]["labels"]["app"] == "web"


def test_get_missing_returns_an_empty_list(module, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    result = module("vmi_info", {"name": "nope", "namespace": ns_a})
    assert not result.get("failed")
    assert result["resources"] == [] and result["summaries"] == []


def test_list_one_namespace(module, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    result = module("vmi_info", {"namespace": ns_a})
    assert sorted(s["name"] for s in result["summaries"]) == ["db1", "web1"]


def test_list_all_namespaces_with_a_label_selector(module, two_namespaces):
    tag, (ns_a, ns_b) = two_namespaces
    result = module("vmi_info", {"label_selectors": ["app=web", f"run={tag}"]})
    assert sorted((s["namespace"], s["name"]) for s in result["summaries"]) == [(ns_a, "web1"), (ns_b, "web2")]


def test_list_with_a_field_selector_across_namespaces(module, two_namespaces):
    tag, (_ns_a, ns_b) = two_namespaces
    result = module("vmi_info", {"label_selectors": [f"run={tag}"], "field_selectors": [f"metadata.namespace={ns_b}"]})
    assert [(s["namespace"], s["name"]) for s in result["summaries"]] == [(ns_b, "web2")]


def test_info_works_the_same_in_check_mode(module, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    result = module("vmi_info", {"namespace": ns_a}, check_mode=True)
    assert result["changed"] is False and len(result["resources"]) == 2


def test_list_wait_times_out_with_the_last_state(module, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    result = module("vmi_info", {"namespace": ns_a, "wait": True, "wait_timeout": 1})
    assert result["failed"] is True
    assert "waiting for phase Running" in result["msg"]


def test_summary_reports_paused_and_ip(module, kubevirt_api, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    status = {
        "phase": "Running", "nodeName": "node-a",
        "interfaces": [{"name": "default", "ipAddress": "10.0.2.15"}],
        "conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "Paused", "status": "True", "reason": "PausedByUser", "message": "VMI was paused by user"},
        ],
    }
    kubevirt_api("-n", ns_a, "patch", "vmi", "web1", "--type=merge", "-p", json.dumps({"status": status}))
    summary = module("vmi_info", {"name": "web1", "namespace": ns_a})["summaries"][0]
    assert summary == {"name": "web1", "namespace": ns_a, "phase": "Running", "node": "node-a",
                       "ip": "10.0.2.15", "ready": False, "paused": True}


def test_managed_fields_are_left_out_unless_asked_for(module, two_namespaces):
    _tag, (ns_a, _ns_b) = two_namespaces
    default = module("vmi_info", {"namespace": ns_a})
    assert default["resources"] and all("managedFields" not in r["metadata"] for r in default["resources"])
    assert all(r["metadata"]["labels"]["app"] for r in default["resources"])  # the rest is all there
    whole = module("vmi_info", {"namespace": ns_a, "hidden_fields": []})
    assert all(r["metadata"]["managedFields"] for r in whole["resources"])
    one = module("vmi_info", {"name": "web1", "namespace": ns_a, "hidden_fields": []})
    assert one["resources"][0]["metadata"]["managedFields"]


def open_namespaced_vmi_watches(kubectl) -> float:
    """kube-apiserver's own count of VMI watches in flight that are not cluster-wide (the agent's watch is)."""
    total = 0.0
    for line in kubectl("get", "--raw", "/metrics").splitlines():
        if (line.startswith("apiserver_longrunning_requests{") and 'resource="virtualmachineinstances"' in line
                and 'scope="cluster"' not in line and 'verb="WATCH"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_wait_over_several_vmis_a_real_agent_starts(lab, kubevirt_api, namespace):
    # vmi_info lists three VMIs none of which runs yet, then waits on each in turn: every wait leaves its watch when
    # its VMI runs, and the next wait's watch must not land on the connection the last one abandoned.
    from agent_process import AgentLab

    node = AgentLab(lab, kubevirt_api, namespace)
    try:
        node.create_vmis("one", "two", "three")
        outcome: dict = {}

        def wait_for_all() -> None:
            outcome["result"] = run_module("vmi_info", {"kubeconfig": lab.kubeconfig, "namespace": namespace,
                                                        "wait": True, "wait_for": {"phase": "Running"},
                                                        "wait_timeout": 300})

        waiter = threading.Thread(target=wait_for_all)
        waiter.start()
        # Start the agent only once the module is watching the first VMI: its list then saw none of them running.
        wait_until(lambda: open_namespaced_vmi_watches(kubevirt_api) >= 1 or not waiter.is_alive(),
                   attempts=600, delay=0.1)
        assert waiter.is_alive(), outcome
        node.start_agent()
        waiter.join()
        result = outcome["result"]
        assert not result.get("failed"), result.get("msg")
        assert sorted((s["name"], s["phase"]) for s in result["summaries"]) == [
            ("one", "Running"), ("three", "Running"), ("two", "Running")]
    finally:
        node.close()
