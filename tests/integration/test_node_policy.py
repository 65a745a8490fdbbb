"""The cluster role's admission policy (roles/cluster/templates/node-policy.yaml.j2) on a real kube-apiserver.

Agents select their VMIs by the label kubevirt.io/nodeName: an agent that could relabel its VMI to another
node would make that node's agent start a second domain of it. The policy keeps each agent identity (by group
or by user name) to VMIs whose label and status.nodeName both name its node, and changes neither."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, Kubectl, wait_until

POLICY = ROOT / "roles" / "cluster" / "templates" / "node-policy.yaml.j2"


@pytest.fixture()
def policy(kubectl, kubevirt_api):
    """The policy applied for one test, removed after it (it binds cluster-wide)."""
    kubectl("apply", "--server-side", "-f", str(POLICY))
    try:
        yield
    finally:
        kubectl("delete", "--ignore-not-found", "-f", str(POLICY))


def vmi(name: str, node: str) -> str:
    return json.dumps({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                       "metadata": {"name": name, "labels": {"kubevirt.io/nodeName": node}},
                       "spec": {"domain": {"devices": {}}},
                       "status": {"phase": "Scheduled", "nodeName": node}})


def test_an_agent_can_neither_relabel_its_vmi_nor_touch_another_nodes(lab, kubectl, namespace, policy):
    from virtops.lab import ControlPlane

    plane = ControlPlane(lab.name, lab.state_dir)
    own = Kubectl(kubectl.binary, plane.agent_kubeconfig("policy-a"))
    other = Kubectl(kubectl.binary, plane.agent_kubeconfig("policy-b"))
    kubectl("-n", namespace, "create", "-f", "-", stdin=vmi("mine", "policy-a"))

    def denied(client: Kubectl, *args: str) -> str:
        proc = client.run("-n", namespace, *args, "--dry-run=server", check=False)
        return proc.stderr if proc.returncode != 0 else ""

    # The policy takes effect once kube-apiserver has loaded it: wait for the first denial.
    relabel = wait_until(lambda: denied(own, "label", "--overwrite", "vmi", "mine", "kubevirt.io/nodeName=policy-b"),
                         attempts=600)
    assert "may not change that label" in relabel
    assert "may change only VirtualMachineInstances on node policy-b" in denied(
        other, "label", "vmi", "mine", "probe=other")
    assert "may not move" in denied(own, "patch", "vmi", "mine", "--type=merge", "-p",
                                    '{"status": {"nodeName": "policy-b"}}')
    assert denied(own, "label", "vmi", "mine", "probe=own") == ""  # its own VMI, label unchanged: allowed
    # Its own VMI's spec names the Secrets its node may read: an agent may not add one (or change anything else).
    assert "may not change the spec" in denied(own, "patch", "vmi", "mine", "--type=merge", "-p", json.dumps(
        {"spec": {"volumes": [{"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": "someone-elses"}}}]}}))

    # A VMI whose label already names another node than its status (made by an admin): no agent writes it.
    kubectl("-n", namespace, "create", "-f", "-", stdin=vmi("split", "policy-a"))
    kubectl("-n", namespace, "label", "--overwrite", "vmi", "split", "kubevirt.io/nodeName=policy-b")
    assert "labelled kubevirt.io/nodeName=policy-a" in denied(own, "label", "vmi", "split", "probe=own")
    assert "may change only VirtualMachineInstances on node policy-b" in denied(
        other, "label", "vmi", "split", "probe=other")


def test_an_agent_user_name_is_held_to_its_node_without_the_group(kubectl, namespace, policy):
    """Matched by user name too: an identity system:virtops:node:<n> outside the group virtops:nodes (here with
    RBAC rights from system:masters) still may not touch another node's VMI."""
    kubectl("-n", namespace, "create", "-f", "-", stdin=vmi("theirs", "policy-a"))
    as_b = ("--as=system:virtops:node:policy-b", "--as-group=system:masters")

    def stderr() -> str:
        proc = kubectl.run(*as_b, "-n", namespace, "label", "vmi", "theirs", "probe=b", "--dry-run=server",
                           check=False)
        return proc.stderr if proc.returncode != 0 else ""

    assert "may change only VirtualMachineInstances on node policy-b" in wait_until(stderr, attempts=600)
    assert kubectl.run("--as=someone", "--as-group=system:masters", "-n", namespace, "label", "vmi", "theirs",
                       "probe=admin", "--dry-run=server", check=False).returncode == 0  # others: not matched
