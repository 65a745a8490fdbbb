"""Running the node agent: config file and flags, JSON logs, health and Prometheus metrics, SIGTERM that
leaves the VMs running, and the agent's own least-privilege identity (services/virtops/agent/rbac.yaml).
"""

from __future__ import annotations

import json
import re
import signal

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from agent_process import AgentLab, metric, wait_long  # noqa: E402
from virtops.agent import VERSION  # noqa: E402
from virtops.agent.agent import FINALIZER  # noqa: E402
from virtops.kube import ForbiddenError, KubeClient, path_for  # noqa: E402

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? (\d+(\.\d+)?(e[+-]?\d+)?|\+Inf)$')


@pytest.fixture
def node(lab, kubevirt_api, namespace):
    agent_lab = AgentLab(lab, kubevirt_api, namespace)
    yield agent_lab
    agent_lab.close()


def test_config_file_flags_json_logs_metrics_and_sigterm_leaves_vms_running(node):
    config = node.state_dir / "agent.yaml"
    config.write_text(f"""\
kubeconfig: {node.kubeconfig}
node_name: {node.node}
state_dir: {node.state_dir}
image_cache: {node.state_dir / 'images'}
labels: {{zone: a}}
cpu: 2
memory: 3Gi
heartbeat_seconds: 1
log_format: text
metrics_address: 127.0.0.1:{node.metrics_port}
""")
    # Flags override the file (log format) and add to its labels.
    agent = node.start_agent(argv=node.agent_argv()[:3] + [f"--config={config}", "--log-format=json",
                                                           "--labels=disk=ssd", *node.node_api_args])
    lease = node.admin.get(path_for("coordination.k8s.io/v1", "leases", "kube-node-lease", node.node))
    annotations = lease["metadata"]["annotations"]
    assert json.loads(annotations["virtops.kubevirt.io/capacity"]) == {"cpu": "2", "memory": "3Gi"}
    assert json.loads(annotations["virtops.kubevirt.io/node-labels"]) == {
        "kubernetes.io/hostname": node.node, "zone": "a", "disk": "ssd"}

    assert node.http("/healthz") == (200, "ok\n")
    assert node.http("/nothing")[0] == 404
    node.create_vmis("observed")
    wait_long(lambda: node.phase("observed") == "Running")
    node.set_power("observed", "paused")
    wait_long(lambda: (node.condition("observed", "Paused") or {}).get("status") == "True")

    # libvirt's "suspended" event comes on a connection of its own: it may land after the condition is seen.
    wait_long(lambda: metric(node.http("/metrics")[1], 'virtops_agent_libvirt_events_total{event="suspended"}'))
    status, text = node.http("/metrics")
    assert status == 200
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line
    assert metric(text, 'virtops_agent_vmis{phase="Running"}') == 1
    assert metric(text, "virtops_agent_vmis_paused") == 1
    assert metric(text, f'virtops_agent_info{{node="{node.node}",version="{VERSION}"}}') == 1
    assert metric(text, 'virtops_agent_libvirt_call_duration_seconds_count{call="pause"}') == 1
    assert metric(text, 'virtops_agent_libvirt_call_duration_seconds_bucket{call="pause",le="+Inf"}') == 1
    assert metric(text, "virtops_agent_reconcile_duration_seconds_count") >= 3
    assert metric(text, 'virtops_agent_libvirt_events_total{event="suspended"}') == 1
    assert metric(text, "virtops_agent_libvirt_connections_total") == 1
    assert "# TYPE virtops_agent_errors_total counter" in text

    node.set_power("observed", "running")
    wait_long(lambda: node.condition("observed", "Paused") is None)
    ids = node.domain_ids()
    agent.signal(signal.SIGTERM)
    assert agent.wait_exit() == 0
    # A clean stop leaves the VM running, its VMI Running and still held by the agent's finalizer.
    assert node.domain_ids() == ids
    assert node.libvirt_state("observed") == "running"
    vmi = node.vmi("observed")
    assert vmi["status"]["phase"] == "Running" and FINALIZER in vmi["metadata"]["finalizers"]

    logs = [json.loads(line) for line in agent.log().splitlines() if line.strip()]
    assert {"time", "level", "logger", "node", "msg"} <= set(logs[0])
    assert any("domains keep running" in entry["msg"] for entry in logs)
    assert any(entry["msg"] == "stopped" for entry in logs)

    node.start_agent()  # adopts the running domain, and the VMI can still be deleted
    wait_long(lambda: "virtops_agent_vmis{phase=\"Running\"} 1" in node.http("/metrics")[1])
    assert node.domain_ids() == ids
    node.delete("observed")
    wait_long(lambda: node.vmi("observed") is None)
    assert node.domain_ids() == {}


def test_agent_identity_can_do_its_job_and_nothing_more(node):
    agent = KubeClient.from_kubeconfig(node.kubeconfig)
    review = agent.create(path_for("authentication.k8s.io/v1", "selfsubjectreviews"),
                          {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    user = review["status"]["userInfo"]
    assert user["username"] == f"system:virtops:node:{node.node}"
    assert "virtops:nodes" in user["groups"]

    node.create_vmis("mine")
    node.admin.create(path_for("v1", "secrets", node.namespace),
                      {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}})

    # What the agent does: read and watch VMIs, write their status and finalizer, events, its Lease.
    items, rv = agent.list(node.vmi_path(), {"labelSelector": f"kubevirt.io/nodeName={node.node}"})
    assert [i["metadata"]["name"] for i in items] == ["mine"]
    assert next(iter(agent.watch(node.vmi_path(), {"resourceVersion": "0"}, timeout_seconds=1)), None)
    agent.merge_patch(node.vmi_path("mine"), {"status": {"phase": "Running"}})
    agent.update(node.vmi_path("mine"), dict(agent.get(node.vmi_path("mine")), status={"phase": "Scheduled"}))
    agent.create(path_for("v1", "events", node.namespace), {
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "mine."},
        "involvedObject": {"kind": "VirtualMachineInstance", "name": "mine", "namespace": node.namespace},
        "reason": "Test", "message": "allowed", "type": "Normal"})
    agent.create(path_for("coordination.k8s.io/v1", "leases", "kube-node-lease"), {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node.node},
        "spec": {"holderIdentity": node.node}})

    forbidden = {
        "delete a VMI": lambda: agent.delete(node.vmi_path("mine")),
        "create a VMI": lambda: agent.create(node.vmi_path(), node.vmi_body("new")),
        "read a secret": lambda: agent.get(path_for("v1", "secrets", node.namespace, "s")),
        "list secrets": lambda: agent.list(path_for("v1", "secrets")),
        "a Lease elsewhere": lambda: agent.create(path_for("coordination.k8s.io/v1", "leases", node.namespace), {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x"}, "spec": {}}),
        "delete its Lease": lambda: agent.delete(
            path_for("coordination.k8s.io/v1", "leases", "kube-node-lease", node.node)),
        "create a namespace": lambda: agent.create(path_for("v1", "namespaces"), {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"{node.namespace}-x"}}),
        "touch a VM": lambda: agent.list(path_for("kubevirt.io/v1", "virtualmachines", node.namespace)),
        "pause through the subresource API": lambda: agent.update(path_for(
            "subresources.kubevirt.io/v1", "virtualmachineinstances", node.namespace, "mine", "pause"), {}),
    }
    allowed = []  # every one is tried; the message names those that were let through
    for what, call in forbidden.items():
        try:
            call()
        except ForbiddenError:
            continue
        allowed.append(what)
    assert allowed == []
    assert node.vmi("mine") is not None
