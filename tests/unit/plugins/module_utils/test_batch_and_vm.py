"""Batches (several objects in one task) and the VM definition, power and wait rules, without a server."""

from __future__ import annotations

import threading

import pytest
from ansible_collections.virtops.kubevirt.plugins.module_utils.batch import list_live, run_batch, shared_labels
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    BatchError,
    DefinitionError,
    ForbiddenError,
    KubeVirtOpsError,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.vm import (
    VM,
    NewInstance,
    VmExpectation,
    default_expectation,
    set_run_strategy,
    summarize_vm,
    vm_spec_from_options,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import VMI, build_definition, build_definitions


def obj(name, ns="n"):
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"domain": {}}}


def test_a_list_in_definition_is_a_batch_with_the_options_applied_to_each():
    docs = build_definitions(definition=[obj("a"), obj("b", ns=None)], namespace="demo", labels={"x": "1"})
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs] == [("demo", "a"), ("demo", "b")]
    assert all(d["metadata"]["labels"] == {"x": "1"} and d["kind"] == "VirtualMachineInstance" for d in docs)


def test_several_yaml_documents_are_a_batch_and_errors_name_the_document(tmp_path):
    src = tmp_path / "vmis.yaml"
    src.write_text("metadata: {name: a}\nspec: {domain: {}}\n---\nkind: Pod\nmetadata: {name: b}\n")
    with pytest.raises(DefinitionError, match=r"src .*vmis.yaml\[1\]: kind must be VirtualMachineInstance"):
        build_definitions(src=str(src))
    src.write_text("metadata: {name: a}\nspec: {domain: {}}\n---\nmetadata: {name: b}\nspec: {domain: {}}\n")
    assert [d["metadata"]["name"] for d in build_definitions(src=str(src))] == ["a", "b"]


def test_a_batch_may_not_declare_one_object_twice_nor_take_the_name_option():
    with pytest.raises(DefinitionError, match=r"definition\[1\]: VirtualMachineInstance n/a is also declared in "
                                              r"definition\[0\]"):
        build_definitions(definition=[obj("a"), obj("a")])
    with pytest.raises(DefinitionError, match="name: set metadata.name in each document"):
        build_definitions(definition=[obj("a"), obj("b")], name="c")
    with pytest.raises(DefinitionError, match="expected exactly one VirtualMachineInstance, got 2"):
        build_definition(definition=[obj("a"), obj("b")])


def test_run_batch_keeps_the_order_runs_concurrently_and_names_each_failure():
    inside, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(4, timeout=10)

    def action(o):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        barrier.wait()  # four at once, or this times out
        with lock:
            inside[0] -= 1
        if o["metadata"]["name"].startswith("bad"):
            raise KubeVirtOpsError("Failed to create VirtualMachineInstance: nope")
        return {"changed": o["metadata"]["name"] == "a", "method": "created", "diff": {"before": {}, "after": {}}}

    with pytest.raises(BatchError) as caught:
        run_batch([obj("a"), obj("bad1"), obj("c"), obj("bad2")], action, "VirtualMachineInstance", concurrency=4)
    err = caught.value
    assert peak[0] == 4
    assert str(err).startswith("2 of 4 VirtualMachineInstances failed: n/bad1: Failed to create")
    assert "n/bad2" in str(err) and "n/c" not in str(err)
    assert [r["name"] for r in err.results] == ["a", "bad1", "c", "bad2"]
    assert err.changed is True and err.results[1]["failed"] is True


def test_run_batch_result_has_a_diff_per_object():
    result = run_batch([obj("a"), obj("b")], lambda o: {"changed": False, "diff": {"before": 1, "after": 1}},
                       "VirtualMachineInstance")
    assert result["changed"] is False and len(result["diff"]) == 2
    assert all("diff" not in r for r in result["results"])


def declared(name, ns="n", **labels):
    return {"apiVersion": "kubevirt.io/v1", "metadata": {"name": name, "namespace": ns, "labels": labels}}


class ListingClient:
    """Answers LISTs from a dict of namespace -> items and records each (path, labelSelector); forbidden: the
    namespaces whose LIST RBAC refuses."""

    def __init__(self, items, forbidden=()):
        self.items, self.forbidden, self.lists = items, forbidden, []

    def list_all(self, path, query=None):
        namespace = path.split("/namespaces/")[1].split("/")[0]
        self.lists.append((path, (query or {}).get("labelSelector")))
        if namespace in self.forbidden:
            raise ForbiddenError(403, "Forbidden", "cannot list")
        return [dict(item) for item in self.items.get(namespace, [])], "1"


def test_shared_labels_are_the_labels_every_object_carries():
    assert shared_labels([declared("a", app="x", tier="1"), declared("b", app="x", tier="2")]) == {"app": "x"}
    assert shared_labels([declared("a", app="x"), declared("b")]) == {}


def test_a_batch_reads_each_namespace_with_one_list_narrowed_by_shared_labels():
    big = [declared(f"v{i}", app="web", idx=str(i)) for i in range(5)]
    small = [declared("s0", ns="few"), declared("s1", ns="few")]
    client = ListingClient({"n": [{"metadata": {"name": "v1", "namespace": "n"}}]})
    live = list_live(client, VMI, big + small)
    assert client.lists == [("/apis/kubevirt.io/v1/namespaces/n/virtualmachineinstances", "app=web")]
    # Listed: v1 exists (with apiVersion and kind as a GET has them), the others do not; "few" is left to GETs.
    assert live[("n", "v1")]["kind"] == "VirtualMachineInstance" and live[("n", "v1")]["apiVersion"]
    assert [live[("n", f"v{i}")] for i in (0, 2, 3, 4)] == [None] * 4
    assert ("few", "s0") not in live and ("few", "s1") not in live


def test_a_list_that_rbac_refuses_leaves_every_object_to_its_own_get():
    objects = [declared(f"v{i}") for i in range(6)]
    client = ListingClient({}, forbidden=("n",))
    assert list_live(client, VMI, objects) == {}
    assert client.lists == [("/apis/kubevirt.io/v1/namespaces/n/virtualmachineinstances", None)]


def test_vm_from_options_puts_spec_and_labels_on_the_template_like_kubevirt_core():
    spec = vm_spec_from_options(spec={"domain": {}}, labels={"app": "a"}, instancetype={"name": "u1.small"},
                                data_volume_templates=[{"metadata": {"name": "dv"}}])
    assert spec == {"template": {"spec": {"domain": {}}, "metadata": {"labels": {"app": "a"}}},
                    "instancetype": {"name": "u1.small"}, "dataVolumeTemplates": [{"metadata": {"name": "dv"}}]}
    doc = build_definition(name="vm1", spec=spec, need_spec=False, kind=VM)
    assert doc["kind"] == "VirtualMachine" and doc["spec"]["template"]["metadata"]["labels"] == {"app": "a"}


@pytest.mark.parametrize(("running", "strategy", "state", "field"), [
    (False, None, "started", "running"), (None, "Halted", "restarted", "run_strategy"),
    (None, "Always", "stopped", "run_strategy"), (True, None, "stopped", "running"),
])
def test_a_run_strategy_that_contradicts_the_state_names_the_option(running, strategy, state, field):
    with pytest.raises(DefinitionError, match=f"^{field}: .* conflicts with state={state}"):
        set_run_strategy({"metadata": {"name": "a", "namespace": "n"}}, running, strategy, state)


def test_run_strategy_and_running_replace_each_other():
    doc = {"metadata": {"name": "a", "namespace": "n"}, "spec": {"running": True}}
    assert set_run_strategy(doc, None, "Manual")["spec"] == {"runStrategy": "Manual"}
    assert set_run_strategy(doc, False, None, "stopped")["spec"] == {"running": False}


def test_default_waits_follow_the_state_and_strategy():
    assert default_expectation("started", None).condition == "Ready"
    assert default_expectation("present", "Always").condition == "Ready"
    assert default_expectation("stopped", "Manual").printable_status == "Stopped"
    assert default_expectation("present", "Halted").printable_status == "Stopped"
    assert default_expectation("present", "Manual").met({"metadata": {}})  # only the object
    stopped = {"metadata": {}, "status": {"printableStatus": "Stopped"}}
    assert VmExpectation(printable_status="Stopped").met(stopped)
    assert not VmExpectation(condition="Ready").met(stopped)
    assert VmExpectation(condition="Ready").impossible(None) == "it was deleted"


def test_a_restart_waits_for_another_instance():
    exp = NewInstance("old")
    assert not exp.met({"metadata": {"uid": "old"}, "status": {"phase": "Running"}})
    assert exp.impossible(None) is None and exp.impossible({"metadata": {"uid": "old"}}) is None
    assert exp.met({"metadata": {"uid": "new"}, "status": {"phase": "Running"}})


def test_vm_summary():
    vm = {"metadata": {"name": "a", "namespace": "n"}, "spec": {"running": False},
          "status": {"printableStatus": "Stopped", "ready": False}}
    assert summarize_vm(vm) == {"name": "a", "namespace": "n", "printable_status": "Stopped",
                                "run_strategy": "Halted", "ready": False, "paused": False}
