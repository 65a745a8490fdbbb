"""Module vmi against the real lab: create, idempotence, check mode, diff, patch, recreate, delete, wait."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vmi-testvmi.yaml"


def manifest(name="testvmi", memory="64Mi", **labels):
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["domain"]["resources"]["requests"]["memory"] = memory
    doc["metadata"]["labels"].update(labels)
    return doc


def play_controller(kubectl, namespace, name, status, delay=0.5):
    """Write a VMI's status as the controller/agent would (the CRD has no status subresource)."""

    def write():
        time.sleep(delay)
        kubectl("-n", namespace, "patch", "vmi", name, "--type=merge", "-p", json.dumps({"status": status}))

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def uid_of(kubectl, namespace, name):
    return kubectl("-n", namespace, "get", "vmi", name, "-o", "jsonpath={.metadata.uid}")


def test_create_then_create_again_is_unchanged(module, kubevirt_api, namespace):
    first = module("vmi", {"src": str(EXAMPLE), "namespace": namespace})
    assert first["changed"] is True and first["method"] == "created"
    assert first["summary"]["name"] == "testvmi"
    again = module("vmi", {"src": str(EXAMPLE), "namespace": namespace})
    assert again["changed"] is False and again["method"] == "unchanged"


def test_check_run_then_real_run_then_check_run(module, kubevirt_api, namespace):
    args = {"definition": manifest(), "namespace": namespace}
    check = module("vmi", args, check_mode=True)
    assert check["changed"] is True
    assert kubevirt_api.run("-n", namespace, "get", "vmi", "testvmi", check=False).returncode != 0
    assert module("vmi", args)["changed"] is True
    assert module("vmi", args, check_mode=True)["changed"] is False


def test_check_mode_sees_the_servers_validation(module, kubevirt_api, namespace):
    result = module("vmi", {"definition": manifest(memory="lots"), "namespace": namespace}, check_mode=True)
    assert result["failed"] is True
    assert "spec.domain.resources.requests.memory" in result["msg"]
    assert result["msg"].startswith(f"Failed to create VirtualMachineInstance {namespace}/testvmi:")


def test_diff_ignores_server_bookkeeping(module, kubevirt_api, namespace):
    result = module("vmi", {"definition": manifest(), "namespace": namespace}, diff=True)
    assert result["diff"]["before"] == {}
    after = result["diff"]["after"]
    assert after["spec"]["domain"]["resources"]["requests"]["memory"] == "64Mi"
    for volatile in ("resourceVersion", "uid", "managedFields", "generation", "creationTimestamp"):
        assert volatile not in after["metadata"]


def test_label_change_is_patched_in_place(module, kubevirt_api, namespace):
    module("vmi", {"definition": manifest(), "namespace": namespace})
    uid = uid_of(kubevirt_api, namespace, "testvmi")
    result = module("vmi", {"definition": manifest(tier="web"), "namespace": namespace}, diff=True)
    assert result["changed"] is True and result["method"] == "patched"
    assert result["diff"]["after"]["metadata"]["labels"]["tier"] == "web"
    assert "tier" not in result["diff"]["before"]["metadata"]["labels"]
    assert uid_of(kubevirt_api, namespace, "testvmi") == uid
    assert module("vmi", {"definition": manifest(tier="web"), "namespace": namespace})["changed"] is False


def test_label_patch_in_check_mode_changes_nothing(module, kubevirt_api, namespace):
    module("vmi", {"definition": manifest(), "namespace": namespace})
    result = module("vmi", {"definition": manifest(tier="db"), "namespace": namespace}, check_mode=True)
    assert result["changed"] is True
    labels = json.loads(kubevirt_api("-n", namespace, "get", "vmi", "testvmi", "-o", "jsonpath={.metadata.labels}"))
    assert "tier" not in labels


def test_spec_change_is_refused_naming_the_field(module, kubevirt_api, namespace):
    module("vmi", {"definition": manifest(), "namespace": namespace})
    result = module("vmi", {"definition": manifest(memory="128Mi"), "namespace": namespace})
    assert result["failed"] is True
    assert "spec.domain.resources.requests.memory: wanted '128Mi', live '64Mi'" in result["msg"]
    assert "recreate: true" in result["msg"]


def test_recreate_replaces_a_vmi_whose_spec_differs(module, kubevirt_api, namespace):
    module("vmi", {"definition": manifest(), "namespace": namespace})
    old_uid = uid_of(kubevirt_api, namespace, "testvmi")
    check = module("vmi", {"definition": manifest(memory="128Mi"), "namespace": namespace, "recreate": True},
                   check_mode=True)
    assert check["changed"] is True and uid_of(kubevirt_api, namespace, "testvmi") == old_uid
    result = module("vmi", {"definition": manifest(memory="128Mi"), "namespace": namespace, "recreate": True})
    assert result["changed"] is True and result["method"] == "recreated"
    assert uid_of(kubevirt_api, namespace, "testvmi") != old_uid
    assert result["vmi"]["spec"]["domain"]["resources"]["requests"]["memory"] == "128Mi"


def test_delete_then_delete_again_is_ok(module, kubevirt_api, namespace):
    module("vmi", {"definition": manifest(), "namespace": namespace})
    check = module("vmi", {"name": "testvmi", "namespace": namespace, "state": "absent"}, check_mode=True)
    assert check["changed"] is True
    assert kubevirt_api.run("-n", namespace, "get", "vmi", "testvmi", check=False).returncode == 0
    gone = module("vmi", {"name": "testvmi", "namespace": namespace, "state": "absent", "wait": True,
                          "delete_options": {"grace_period_seconds": 0}})
    assert gone["changed"] is True and gone["method"] == "deleted"
    assert kubevirt_api.run("-n", namespace, "get", "vmi", "testvmi", check=False).returncode != 0
    again = module("vmi", {"name": "testvmi", "namespace": namespace, "state": "absent"})
    assert again["changed"] is False


def test_delete_by_the_same_manifest(module, kubevirt_api, namespace):
    module("vmi", {"src": str(EXAMPLE), "namespace": namespace})
    assert module("vmi", {"src": str(EXAMPLE), "namespace": namespace, "state": "absent"})["changed"] is True


def test_wait_for_phase_running(module, kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "-f", str(EXAMPLE))
    writer = play_controller(kubevirt_api, namespace, "testvmi", {"phase": "Running", "nodeName": "node-a"})
    result = module("vmi", {"src": str(EXAMPLE), "namespace": namespace, "wait": True, "wait_timeout": 30})
    writer.join()
    assert result["changed"] is False
    assert result["summary"]["phase"] == "Running" and result["summary"]["node"] == "node-a"


def test_wait_for_a_condition(module, kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "-f", str(EXAMPLE))
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    writer = play_controller(kubevirt_api, namespace, "testvmi", status)
    result = module("vmi_info", {"name": "testvmi", "namespace": namespace, "wait": True,
                                 "wait_for": {"condition": "Ready"}, "wait_timeout": 30})
    writer.join()
    assert result["summaries"][0]["ready"] is True


def test_wait_timeout_reports_the_last_state_and_events(module, kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "-f", str(EXAMPLE))
    kubevirt_api("-n", namespace, "patch", "vmi", "testvmi", "--type=merge", "-p",
                 json.dumps({"status": {"phase": "Scheduling"}}))
    event = {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "testvmi.1"}, "type": "Warning",
        "reason": "FailedScheduling", "message": "0/0 nodes are available",
        "involvedObject": {"kind": "VirtualMachineInstance", "name": "testvmi", "namespace": namespace},
    }
    kubevirt_api("-n", namespace, "create", "-f", "-", stdin=json.dumps(event))
    result = module("vmi", {"src": str(EXAMPLE), "namespace": namespace, "wait": True, "wait_timeout": 2})
    assert result["failed"] is True
    assert "timed out after 2s waiting for phase Running" in result["msg"]
    assert "last seen: phase 'Scheduling'" in result["msg"]
    assert "FailedScheduling: 0/0 nodes are available" in result["msg"]
    assert result["last_seen"]["status"]["phase"] == "Scheduling"


def test_waiting_for_running_stops_at_a_final_phase(module, kubevirt_api, namespace):
    kubevirt_api("-n", namespace, "create", "-f", str(EXAMPLE))
    writer = play_controller(kubevirt_api, namespace, "testvmi", {"phase": "Failed"})
    result = module("vmi", {"src": str(EXAMPLE), "namespace": namespace, "wait": True, "wait_timeout": 60})
    writer.join()
    assert result["failed"] is True
    assert "will never reach phase Running: it reached the final phase Failed" in result["msg"]


def test_create_from_options_with_hidden_fields(module, kubevirt_api, namespace):
    spec = manifest()["spec"]
    result = module("vmi", {
        "name": "fromopts", "namespace": namespace, "labels": {"app": "demo"},
        "annotations": {"example.com/owner": "team-a"}, "spec": spec,
        "hidden_fields": ["metadata.managedFields", "metadata.annotations[example.com/owner]"],
    })
    assert result["changed"] is True
    assert "example.com/owner" not in (result["vmi"]["metadata"].get("annotations") or {})
    assert "managedFields" not in result["vmi"]["metadata"]
    got = json.loads(kubevirt_api("-n", namespace, "get", "vmi", "fromopts", "-o", "json"))
    assert got["metadata"]["annotations"]["example.com/owner"] == "team-a"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"spec": {"domain": {"devices": {}}}}, "name is required"),
        ({"definition": {"kind": "Pod", "metadata": {"name": "x"}}}, "kind must be VirtualMachineInstance, not 'Pod'"),
        ({"definition": {"apiVersion": "kubevirt.io/v2", "metadata": {"name": "x"}, "spec": {}}},
         "apiVersion must be one of kubevirt.io/v1, kubevirt.io/v1alpha3, not 'kubevirt.io/v2'"),
        ({"definition": "kind: VirtualMachineInstance\n---\nkind: VirtualMachineInstance\n"},
         "definition[0]: name is required"),
        ({"src": "/nonexistent/vmi.yaml"}, "src: cannot read /nonexistent/vmi.yaml"),
        ({"name": "nospec"}, "spec is required to create VirtualMachineInstance"),
    ],
    ids=["missing-name", "wrong-kind", "wrong-apiversion", "two-documents-no-name", "missing-src", "missing-spec"],
)
def test_bad_input_names_the_field(module, kubevirt_api, namespace, args, message):
    result = module("vmi", dict(args, namespace=namespace))
    assert result["failed"] is True
    assert message in result["msg"]
    assert json.loads(kubevirt_api("-n", namespace, "get", "vmis", "-o", "json"))["items"] == []


def test_unreachable_api_names_the_host():
    from conftest import run_module

    result = run_module("vmi", {"host": "https://127.0.0.1:1", "api_key": "sekrit-token", "name": "x",
                                "namespace": "default", "state": "absent"})
    assert result["failed"] is True
    assert "Cannot reach the Kubernetes API at https://127.0.0.1:1: connection refused" in result["msg"]
    assert "sekrit-token" not in json.dumps(result)


def test_rbac_forbidden_create_says_which_verb_on_which_resource(module, kubevirt_api, namespace):
    result = module("vmi", {"src": str(EXAMPLE), "namespace": namespace, "impersonate_user": "mallory"})
    assert result["failed"] is True
    assert 'User "mallory" cannot get resource "virtualmachineinstances" in API group "kubevirt.io"' in result["msg"]
    kubevirt_api("-n", namespace, "create", "rolebinding", "mallory-view", "--clusterrole=kubevirt.io:view",
                 "--user=mallory")
    result = module("vmi", {"src": str(EXAMPLE), "namespace": namespace, "impersonate_user": "mallory"})
    assert result["failed"] is True
    assert 'cannot create resource "virtualmachineinstances"' in result["msg"]
    assert "RBAC denied" in result["msg"]


def test_a_batch_from_a_list_then_again_is_unchanged(module, kubevirt_api, namespace):
    vmis = [manifest(name=f"b{i}") for i in range(5)]
    first = module("vmi", {"definition": vmis, "namespace": namespace, "concurrency": 3}, diff=True)
    assert first["changed"] is True
    assert [(r["name"], r["method"]) for r in first["results"]] == [(f"b{i}", "created") for i in range(5)]
    assert len(first["diff"]) == 5 and "managedFields" not in first["results"][0]["vmi"]["metadata"]
    names = kubevirt_api("-n", namespace, "get", "vmis", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert sorted(names) == [f"b{i}" for i in range(5)]
    again = module("vmi", {"definition": vmis, "namespace": namespace})
    assert again["changed"] is False and {r["method"] for r in again["results"]} == {"unchanged"}


def test_a_batch_from_a_multi_document_src_fails_naming_only_the_bad_ones(
        module, kubevirt_api, namespace, tmp_path):
    docs = [manifest(name="good1"), manifest(name="bad", memory="lots"), manifest(name="good2")]
    src = tmp_path / "vmis.yaml"
    src.write_text(yaml.safe_dump_all(docs))
    result = module("vmi", {"src": str(src), "namespace": namespace})
    assert result["failed"] is True and result["changed"] is True
    assert result["msg"].startswith(f"1 of 3 VirtualMachineInstances failed: {namespace}/bad: "
                                    f"Failed to create VirtualMachineInstance {namespace}/bad:")
    assert "spec.domain.resources.requests.memory" in result["msg"]
    assert [r.get("failed", False) for r in result["results"]] == [False, True, False]
    names = kubevirt_api("-n", namespace, "get", "vmis", "-o", "jsonpath={.items[*].metadata.name}").split()
    assert sorted(names) == ["good1", "good2"]


def test_a_batch_in_check_mode_changes_nothing_and_deletes_as_a_batch(module, kubevirt_api, namespace):
    vmis = [manifest(name=f"c{i}") for i in range(3)]
    check = module("vmi", {"definition": vmis, "namespace": namespace}, check_mode=True)
    assert check["changed"] is True and {r["method"] for r in check["results"]} == {"created"}
    assert json.loads(kubevirt_api("-n", namespace, "get", "vmis", "-o", "json"))["items"] == []
    module("vmi", {"definition": vmis, "namespace": namespace})
    gone = module("vmi", {"definition": vmis, "namespace": namespace, "state": "absent", "wait": True})
    assert gone["changed"] is True and {r["method"] for r in gone["results"]} == {"deleted"}
    assert json.loads(kubevirt_api("-n", namespace, "get", "vmis", "-o", "json"))["items"] == []


def sent(api_requests):
    """The requests recorded by api_requests as (method, path, labelSelector or None)."""
    return [(method, path, query.get("labelSelector")) for method, path, query in api_requests]


def test_a_no_op_batch_sends_one_list_and_nothing_else(module, kubevirt_api, namespace, api_requests):
    vmis = [manifest(name=f"n{i}", index=str(i)) for i in range(6)]  # they share only special=testvmi
    collection = f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances"
    created = module("vmi", {"definition": vmis, "namespace": namespace})
    assert [r["method"] for r in created["results"]] == ["created"] * 6
    assert sent(api_requests)[0] == ("GET", collection, "special=testvmi")
    for check_mode in (True, False):
        api_requests.clear()
        again = module("vmi", {"definition": vmis, "namespace": namespace}, check_mode=check_mode)
        assert again["changed"] is False and [r["method"] for r in again["results"]] == ["unchanged"] * 6
        assert again["results"][5]["vmi"]["metadata"]["name"] == "n5"  # the listed object, as a GET returns it
        assert again["results"][5]["vmi"]["kind"] == "VirtualMachineInstance"
        assert sent(api_requests) == [("GET", collection, "special=testvmi")]
    api_requests.clear()
    gone = module("vmi", {"definition": vmis, "namespace": namespace, "state": "absent"})
    assert [r["method"] for r in gone["results"]] == ["deleted"] * 6
    assert sorted(m for m, _p, _s in sent(api_requests)) == ["DELETE"] * 6 + ["GET"]
    api_requests.clear()
    assert module("vmi", {"definition": vmis, "namespace": namespace, "state": "absent"})["changed"] is False
    assert sent(api_requests) == [("GET", collection, "special=testvmi")]


def test_a_batch_patches_only_what_differs_and_finds_a_vmi_the_narrowed_list_missed(
        module, kubevirt_api, namespace, api_requests):
    vmis = [manifest(name=f"p{i}") for i in range(5)]
    module("vmi", {"definition": vmis, "namespace": namespace})
    # p2's label no longer matches the shared selector (special=testvmi), so the LIST does not return it; p3 is
    # declared with one more label.
    kubevirt_api("-n", namespace, "label", "vmi", "p2", "special=elsewhere", "--overwrite")
    vmis[3]["metadata"]["labels"]["tier"] = "db"
    api_requests.clear()
    result = module("vmi", {"definition": vmis, "namespace": namespace, "concurrency": 1})
    assert [r["method"] for r in result["results"]] == ["unchanged", "unchanged", "patched", "patched", "unchanged"]
    assert result["changed"] is True
    p2 = f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/p2"
    assert [(m, p) for m, p, _s in sent(api_requests)][1:] == [
        ("POST", p2.rsplit("/", 1)[0]), ("GET", p2), ("PATCH", p2), ("PATCH", p2.replace("p2", "p3"))]
    assert kubevirt_api("-n", namespace, "get", "vmi", "p2", "-o", "jsonpath={.metadata.labels.special}") == "testvmi"
    api_requests.clear()
    again = module("vmi", {"definition": vmis, "namespace": namespace})
    assert again["changed"] is False and len(api_requests) == 1


def test_a_small_batch_or_a_refused_list_reads_each_vmi_with_a_get(module, kubevirt_api, namespace, api_requests):
    # RBAC that grants get, create and patch but not list: the LIST gets 403, each VMI then gets its own GET.
    kubevirt_api("-n", namespace, "create", "role", "no-list", "--verb=get,create,patch",
                 "--resource=virtualmachineinstances.kubevirt.io")
    kubevirt_api("-n", namespace, "create", "rolebinding", "no-list", "--role=no-list", "--user=lister")
    vmis = [manifest(name=f"g{i}") for i in range(5)]
    first = module("vmi", {"definition": vmis, "namespace": namespace, "impersonate_user": "lister"})
    assert first["changed"] is True and [r["method"] for r in first["results"]] == ["created"] * 5
    api_requests.clear()
    again = module("vmi", {"definition": vmis, "namespace": namespace, "impersonate_user": "lister"})
    assert again["changed"] is False
    collection = f"/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances"
    assert [s for _m, p, s in sent(api_requests) if p == collection] == ["special=testvmi"]  # the refused LIST
    assert sorted(p for m, p, _s in sent(api_requests) if p != collection) == [
        f"{collection}/g{i}" for i in range(5)]
    api_requests.clear()
    module("vmi", {"definition": vmis[:2], "namespace": namespace})
    assert [m for m, _p, _s in sent(api_requests)] == ["GET", "GET"]  # two objects: no LIST


@pytest.fixture
def node(lab, kubevirt_api, namespace):
    """A real node agent on this host's libvirt, serving the test's namespace."""
    from agent_process import AgentLab

    agent_lab = AgentLab(lab, kubevirt_api, namespace)
    yield agent_lab
    agent_lab.close()


def test_recreate_of_a_vmi_its_agent_holds_with_the_finalizer(module, node):
    # The wait for the old VMI to be gone watches until the agent has stopped the domain and dropped its
    # finalizer, and leaves that watch as soon as the DELETED event arrives; the create that follows must get an
    # answer of its own, not the rest of the abandoned stream on a connection handed back to the pool.
    from virtops.agent.agent import FINALIZER

    node.start_agent()
    definition = node.vmi_body("held")
    first = module("vmi", {"definition": definition, "wait": True})
    assert first["changed"] is True and first["vmi"]["status"]["phase"] == "Running", first
    assert FINALIZER in node.vmi("held")["metadata"]["finalizers"]
    old_uid = first["vmi"]["metadata"]["uid"]

    definition["spec"]["domain"]["resources"]["requests"]["memory"] = "96Mi"
    result = module("vmi", {"definition": definition, "recreate": True, "wait": True})
    assert not result.get("failed"), result.get("msg")
    assert result["method"] == "recreated" and result["vmi"]["metadata"]["uid"] != old_uid
    assert result["vmi"]["status"]["phase"] == "Running"
    assert result["vmi"]["spec"]["domain"]["resources"]["requests"]["memory"] == "96Mi"
