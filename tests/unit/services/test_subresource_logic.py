"""The subresource API's rules without a cluster: a fake KubeClient is the one boundary."""

from __future__ import annotations

import copy
import json
from email.message import Message
from typing import Any

import pytest
from virtops.api.auth import FrontProxyConfig, User, authorize, check_identity, user_from_headers
from virtops.api.server import resource_list
from virtops.api.status import StatusError
from virtops.api.subresources import Subresources, change_request_patch, is_paused, parse_dry_run, run_strategy
from virtops.kube import ConflictError, InvalidError, NotFoundError


class FakeClient:
    """Objects by path; merge patches honour metadata.resourceVersion like kube-apiserver."""

    def __init__(self, *objects: dict, sar_allowed: bool = True) -> None:
        self.objects = {self.path_of(o): copy.deepcopy(o) for o in objects}
        self.sar_allowed = sar_allowed
        self.patches: list[tuple[str, dict]] = []
        self.reviews: list[dict] = []

    @staticmethod
    def path_of(obj: dict) -> str:
        plural = {"VirtualMachineInstance": "virtualmachineinstances", "VirtualMachine": "virtualmachines"}[obj["kind"]]
        return f"/apis/kubevirt.io/v1/namespaces/ns/{plural}/{obj['metadata']['name']}"

    def get(self, path: str) -> dict:
        if path not in self.objects:
            raise NotFoundError(404, {"message": "not found"})
        return copy.deepcopy(self.objects[path])

    def merge_patch(self, path: str, patch: dict) -> dict:
        return self.request("PATCH", path, None, patch)

    def request(self, method: str, path: str, query: Any = None, body: Any = None, *args: Any) -> dict:
        if isinstance(body, list):  # a JSON patch of the status subresource: recorded, not applied
            self.patches.append((path, {"json-patch": body, "dryRun": (query or {}).get("dryRun")}))
            return self.objects[path.removesuffix("/status")]
        obj = self.objects[path]
        if body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            raise ConflictError(409, {"message": "the object has been modified"})
        self.patches.append((path, body))
        if (query or {}).get("dryRun"):
            return obj
        obj["metadata"].setdefault("annotations", {}).update(body["metadata"].get("annotations") or {})
        for key, value in (body.get("spec") or {}).items():
            if value is None:
                obj["spec"].pop(key, None)
            else:
                obj["spec"][key] = value
        return obj

    def create(self, path: str, body: dict) -> dict:
        self.reviews.append(body["spec"])
        return dict(body, status={"allowed": self.sar_allowed})


def vmi(phase: str = "Running", paused_condition: bool = False, annotations: dict | None = None) -> dict:
    meta = {"name": "v", "namespace": "ns", "resourceVersion": "1", "uid": "u1", "annotations": annotations or {}}
    obj: dict = {"kind": "VirtualMachineInstance", "metadata": meta,
                 "status": {"phase": phase, "nodeName": "node-a"}}
    if paused_condition:
        obj["status"]["conditions"] = [{"type": "Paused", "status": "True", "reason": "PausedByUser"}]
    return obj


def vm(**spec: Any) -> dict:
    return {"kind": "VirtualMachine", "metadata": {"name": "v", "namespace": "ns", "resourceVersion": "1"},
            "spec": spec}


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    with pytest.raises(StatusError) as info:
        call(*args, **kwargs)
    return info.value.code, info.value.message


class FakeNodes:
    """The node API client: records calls, or raises what an agent (or its absence) would."""

    def __init__(self, error: StatusError | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.error = error

    def put(self, obj: dict, op: str) -> None:
        self.calls.append((obj["metadata"]["name"], op))
        if self.error:
            raise self.error

    def get(self, obj: dict, op: str) -> dict:
        self.put(obj, op)
        return {"metadata": {}, "items": []}


@pytest.mark.parametrize(("obj", "paused"), [
    (vmi(), False),
    (vmi(paused_condition=True), True),
    # The retired intent annotation means nothing: a plain patch of the VMI pauses nothing.
    (vmi(annotations={"virtops.kubevirt.io/power-state": "paused"}), False),
])
def test_what_counts_as_paused(obj, paused) -> None:
    assert is_paused(obj) is paused


def test_pause_calls_the_node_api_and_writes_nothing() -> None:
    client, nodes = FakeClient(vmi()), FakeNodes()
    Subresources(client, nodes).pause("ns", "v")  # type: ignore[arg-type]
    Subresources(client, nodes).pause("ns", "v", dry_run=True)  # type: ignore[arg-type]
    assert nodes.calls == [("v", "pause")]
    assert client.patches == []


def test_the_agents_answer_is_the_answer() -> None:
    refusal = StatusError(409, "Conflict", 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "v": '
                                           "VMI is already paused")
    client = FakeClient(vmi())
    assert error_of(Subresources(client, FakeNodes(refusal)).pause, "ns", "v") == (  # type: ignore[arg-type]
        409, refusal.message)


def test_without_node_api_credentials_pause_is_an_error_not_a_200() -> None:
    client = FakeClient(vmi())
    code, text = error_of(Subresources(client).pause, "ns", "v")  # type: ignore[arg-type]
    assert code == 500
    assert "node API client certificate" in text


@pytest.mark.parametrize(("obj", "op", "message"), [
    (vmi(phase="Scheduled"), "pause", "VM is not running"),
    (vmi(paused_condition=True), "pause", "VMI is already paused"),
    (vmi(phase="Scheduled", paused_condition=True), "unpause", "VMI is not running"),
    (vmi(), "unpause", "VMI is not paused"),
])
def test_kubevirts_conflicts(obj, op, message) -> None:
    client, nodes = FakeClient(obj), FakeNodes()
    code, text = error_of(getattr(Subresources(client, nodes), op), "ns", "v")  # type: ignore[arg-type]
    assert (code, text) == (409, f'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "v": {message}')
    assert client.patches == [] and nodes.calls == []


def test_dry_run_writes_nothing_and_missing_is_404() -> None:
    client, nodes = FakeClient(vmi()), FakeNodes()
    Subresources(client, nodes).pause("ns", "v", dry_run=True)  # type: ignore[arg-type]
    assert client.patches == [] and nodes.calls == []
    assert error_of(Subresources(client).pause, "ns", "gone") == (
        404, 'virtualmachineinstance.kubevirt.io "gone" not found')


@pytest.mark.parametrize(("body", "query", "dry"), [
    (None, {}, False), ({}, {}, False), ({"dryRun": ["All"]}, {}, True), (None, {"dryRun": ["All"]}, True),
])
def test_dry_run_from_body_or_query(body, query, dry) -> None:
    assert parse_dry_run(body, query) is dry


@pytest.mark.parametrize("body", [[], {"dryRun": "All"}, {"dryRun": ["Some"]}])
def test_bad_dry_run_is_400(body) -> None:
    assert error_of(parse_dry_run, body, {})[0] == 400


def test_vm_start_and_stop_change_the_field_the_vm_uses() -> None:
    client = FakeClient(vm(runStrategy="Halted"))
    Subresources(client).start("ns", "v")
    assert client.objects[FakeClient.path_of(vm())]["spec"] == {"runStrategy": "Always"}
    client = FakeClient(vm(running=True))
    Subresources(client).stop("ns", "v")
    assert client.objects[FakeClient.path_of(vm())]["spec"] == {"running": False}
    assert run_strategy(vm()) == "Halted"


def test_vm_errors() -> None:
    code, text = error_of(Subresources(FakeClient(vm(runStrategy="Halted"))).stop, "ns", "v")
    assert (code, text) == (409, 'Operation cannot be fulfilled on virtualmachine.kubevirt.io "v": VM is not running')
    code, text = error_of(Subresources(FakeClient(vm(runStrategy="Always"), vmi())).start, "ns", "v")
    assert text.endswith(": VM is already running")
    assert error_of(Subresources(FakeClient()).restart, "ns", "v") == (
        404, 'virtualmachine.kubevirt.io "v" not found')


def vmi_of(uid: str, phase: str = "Running") -> dict:
    made = vmi(phase)
    made["metadata"]["uid"] = uid
    return made


def vm_of(strategy: str) -> dict:
    """A VM the controller has seen: it has a status (what the first request's patch tests)."""
    return dict(vm(runStrategy=strategy), status={"printableStatus": "Stopped"})


def sent_patch(client: FakeClient) -> list[dict]:
    path, body = client.patches[-1]
    assert path.endswith("/virtualmachines/v/status")
    return body["json-patch"]


START, STOP_A = {"action": "Start"}, {"action": "Stop", "uid": "a"}


@pytest.mark.parametrize(("strategy", "current", "requests"), [
    ("Manual", None, [START]),
    ("Manual", vmi_of("a", "Succeeded"), [STOP_A, START]),  # a finished VMI is stopped, then a new one starts
    ("RerunOnFailure", None, [START]),
    ("RerunOnFailure", vmi_of("a", "Succeeded"), [STOP_A, START]),
])
def test_start_of_manual_and_rerun_on_failure_is_a_start_request(strategy, current, requests) -> None:
    objects = [vm_of(strategy)] + ([current] if current else [])
    client = FakeClient(*objects)
    Subresources(client).start("ns", "v")  # type: ignore[arg-type]
    assert sent_patch(client) == [
        {"op": "test", "path": "/status/stateChangeRequests", "value": None},
        {"op": "add", "path": "/status/stateChangeRequests", "value": requests}]


def test_stop_and_restart_name_the_vmi_by_uid() -> None:
    client = FakeClient(vm_of("Manual"), vmi_of("a"))
    Subresources(client).stop("ns", "v")  # type: ignore[arg-type]
    assert sent_patch(client)[-1]["value"] == [STOP_A]
    Subresources(client).restart("ns", "v", dry_run=True)  # type: ignore[arg-type]
    assert sent_patch(client)[-1]["value"] == [STOP_A, START]
    assert client.patches[-1][1]["dryRun"] == "All"


def test_a_pending_request_refuses_a_start_and_a_stop_replaces_it() -> None:
    pending = vm_of("Manual")
    pending["status"]["stateChangeRequests"] = [START]
    assert error_of(change_request_patch, pending, START) == (
        500, "Internal error occurred: unable to complete request: stop/start already underway")
    assert change_request_patch(pending, STOP_A) == [
        {"op": "test", "path": "/status/stateChangeRequests", "value": [START]},
        {"op": "replace", "path": "/status/stateChangeRequests", "value": [STOP_A]}]
    assert change_request_patch({"status": {}}, START) == [
        {"op": "add", "path": "/status", "value": {"stateChangeRequests": [START]}}]


def with_agent(obj: dict) -> dict:
    obj["status"]["conditions"] = [{"type": "AgentConnected", "status": "True"}]
    return obj


@pytest.mark.parametrize(("obj", "message"), [
    (vmi(phase="Scheduled"), "VMI is not running"),
    (vmi(), "VMI does not have guest agent connected"),
])
def test_guest_agent_queries_need_a_running_vmi_with_its_agent_connected(obj, message) -> None:
    client, nodes = FakeClient(obj), FakeNodes()
    code, text = error_of(Subresources(client, nodes).guest_info, "ns", "v", "userlist")  # type: ignore[arg-type]
    assert (code, text) == (409, f'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "v": {message}')
    assert nodes.calls == []
    answer = Subresources(FakeClient(with_agent(vmi())), nodes).guest_info("ns", "v", "userlist")  # type: ignore[arg-type]
    assert (answer, nodes.calls) == ({"metadata": {}, "items": []}, [("v", "userlist")])


def test_a_failed_test_operation_is_a_conflict() -> None:
    class Raced(FakeClient):
        def request(self, method: str, path: str, query: Any = None, body: Any = None, *args: Any) -> dict:
            # kube-apiserver's whole answer when the test operation of a JSON patch fails
            raise InvalidError(422, {"message": "the server rejected our request due to an error in our request",
                                     "reason": "Invalid", "details": {}})

    code, text = error_of(Subresources(Raced(vm_of("Manual"))).start, "ns", "v")  # type: ignore[arg-type]
    assert (code, text) == (409, 'Operation cannot be fulfilled on virtualmachine.kubevirt.io "v": '
                                 "the server rejected our request due to an error in our request")


@pytest.mark.parametrize(("strategy", "current", "op", "message"), [
    ("Manual", vmi_of("a"), "start", "VM is already running"),
    ("RerunOnFailure", vmi_of("a", "Failed"), "start", "RerunOnFailure does not support starting VM from failed state"),
    ("Manual", None, "stop", "VM is not running"),
    ("RerunOnFailure", vmi_of("a", "Succeeded"), "stop", "VM is not running"),
    ("Manual", None, "restart", "VM is not running: Halted"),
])
def test_manual_and_rerun_on_failure_conflicts(strategy, current, op, message) -> None:
    client = FakeClient(*[vm_of(strategy)] + ([current] if current else []))
    code, text = error_of(getattr(Subresources(client), op), "ns", "v")  # type: ignore[arg-type]
    assert (code, text) == (409, f'Operation cannot be fulfilled on virtualmachine.kubevirt.io "v": {message}')
    assert client.patches == []


CONFIGMAP = {
    "client-ca-file": "ignored",
    "requestheader-client-ca-file": "-----BEGIN CERTIFICATE-----\n...",
    "requestheader-allowed-names": json.dumps(["front-proxy-client"]),
    "requestheader-username-headers": json.dumps(["X-Remote-User"]),
    "requestheader-group-headers": json.dumps(["X-Remote-Group"]),
    "requestheader-extra-headers-prefix": json.dumps(["X-Remote-Extra-"]),
}


def headers(*pairs: tuple[str, str]) -> Message:
    msg = Message()
    for key, value in pairs:
        msg[key] = value
    return msg


def test_front_proxy_headers_become_the_user() -> None:
    config = FrontProxyConfig.from_configmap(CONFIGMAP)
    user = check_identity(config, "front-proxy-client", headers(
        ("X-Remote-User", "alice"), ("X-Remote-Group", "dev"), ("X-Remote-Group", "system:authenticated"),
        ("X-Remote-Extra-Scopes%2FOne", "a"), ("X-Remote-Extra-scopes%2fone", "b")))
    assert user == User("alice", ("dev", "system:authenticated"), {"scopes/one": ["a", "b"]})


@pytest.mark.parametrize(("cn", "pairs"), [
    (None, [("X-Remote-User", "alice")]),
    ("someone-else", [("X-Remote-User", "alice")]),
    ("front-proxy-client", []),
])
def test_anyone_but_the_front_proxy_with_a_user_is_401(cn, pairs) -> None:
    config = FrontProxyConfig.from_configmap(CONFIGMAP)
    assert error_of(check_identity, config, cn, headers(*pairs))[0] == 401


def test_empty_allowed_names_trust_any_cn_of_the_ca() -> None:
    config = FrontProxyConfig.from_configmap(dict(CONFIGMAP, **{"requestheader-allowed-names": "[]"}))
    assert user_from_headers(config, headers(("X-Remote-User", "u"))) == User("u")
    assert config.cn_allowed("anything")


def test_no_front_proxy_ca_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="requestheader-client-ca-file"):
        FrontProxyConfig.from_configmap({})


def test_denied_review_is_kubernetes_forbidden_wording() -> None:
    client = FakeClient(sar_allowed=False)
    code, text = error_of(authorize, client, User("bob", ("g",)), namespace="ns", resource="virtualmachines",
                          subresource="start", name="v")
    assert (code, text) == (403, 'virtualmachines.subresources.kubevirt.io "v" is forbidden: User "bob" cannot '
                                 'update resource "virtualmachines/start" in API group "subresources.kubevirt.io" '
                                 'in the namespace "ns"')
    assert client.reviews == [{"user": "bob", "groups": ["g"], "resourceAttributes": {
        "namespace": "ns", "verb": "update", "group": "subresources.kubevirt.io", "version": "v1",
        "resource": "virtualmachines", "subresource": "start", "name": "v"}}]


def test_discovery_document() -> None:
    names = [r["name"] for r in resource_list()["resources"]]
    assert names == ["virtualmachineinstances/pause", "virtualmachineinstances/unpause", "virtualmachines/start",
                     "virtualmachines/stop", "virtualmachines/restart", "virtualmachineinstances/console",
                     "virtualmachineinstances/filesystemlist", "virtualmachineinstances/guestosinfo",
                     "virtualmachineinstances/portforward", "virtualmachineinstances/userlist",
                     "virtualmachineinstances/vnc", "virtualmachines/portforward"]
    verbs = {r["name"]: r["verbs"] for r in resource_list()["resources"]}
    assert verbs["virtualmachineinstances/console"] == verbs["virtualmachineinstances/vnc"] == ["get"]
    assert verbs["virtualmachineinstances/portforward"] == verbs["virtualmachines/portforward"] == ["get"]
    assert verbs["virtualmachineinstances/guestosinfo"] == verbs["virtualmachineinstances/userlist"] == ["get"]
