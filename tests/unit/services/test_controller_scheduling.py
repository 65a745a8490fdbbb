"""Scheduling rules: liveness, selectors, affinity, capacity, and the scheduler's wording."""

from __future__ import annotations

import datetime
from decimal import Decimal

from virtops.controller.quantity import vmi_requests
from virtops.controller.scheduling import Node, choose_node

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
GI = Decimal(2**30)


def node(name, memory_gi=4, cpu=2, age=0, **labels):
    return Node(name, labels, Decimal(cpu), memory_gi * GI, NOW - datetime.timedelta(seconds=age), 40)


def vmi(memory="1Gi", cpu=None, node_name=None, phase="", **spec):
    requests = {"memory": memory}
    if cpu:
        requests["cpu"] = cpu
    obj = {"metadata": {"name": "v"}, "spec": {"domain": {"resources": {"requests": requests}}, **spec},
           "status": {"phase": phase}}
    if node_name:
        obj["status"]["nodeName"] = node_name
    return obj


def test_requests_fall_back_to_guest_memory_and_vcpus_over_kubevirts_allocation_ratio():
    obj = {"spec": {"domain": {"memory": {"guest": "256Mi"}, "cpu": {"cores": 2, "sockets": 2}}}}
    assert vmi_requests(obj) == (Decimal("0.4"), 256 * 2**20)


def test_spreads_onto_the_node_with_most_free_memory():
    placed = [vmi("3Gi", node_name="a", phase="Running")]
    assert choose_node(vmi(), [node("a"), node("b")], placed, NOW) == ("b", "")


def test_finished_vmis_free_their_capacity():
    placed = [vmi("4Gi", node_name="a", phase="Succeeded")]
    assert choose_node(vmi("4Gi"), [node("a")], placed, NOW) == ("a", "")


def test_expired_lease_is_not_a_candidate():
    name, why = choose_node(vmi(), [node("a", age=41)], [], NOW)
    assert name is None
    assert why == "0/1 nodes are available: 1 node(s) were not ready (lease expired)."


def test_node_selector_and_insufficient_memory_are_explained():
    nodes = [node("a", disk="hdd"), node("b", memory_gi=1, disk="ssd"), node("c", disk="ssd")]
    placed = [vmi("3Gi", node_name="c", phase="Running")]
    name, why = choose_node(vmi("2Gi", nodeSelector={"disk": "ssd"}), nodes, placed, NOW)
    assert name is None
    assert why == ("0/3 nodes are available: 2 Insufficient memory, "
                   "1 node(s) didn't match Pod's node affinity/selector.")


def test_insufficient_cpu():
    name, why = choose_node(vmi(cpu="3"), [node("a", cpu=2)], [], NOW)
    assert (name, why) == (None, "0/1 nodes are available: 1 Insufficient cpu.")


def test_required_node_affinity_terms_are_ored_expressions_anded():
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]},
                              {"key": "gpu", "operator": "DoesNotExist"}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]},
    ]}}}
    nodes = [node("a", zone="z1", gpu="yes"), node("b", zone="z2"), node("c", zone="z9")]
    assert choose_node(vmi(affinity=affinity), nodes, [], NOW) == ("c", "")


def test_no_nodes_at_all():
    assert choose_node(vmi(), [], [], NOW) == (None, "0/0 nodes are available.")
