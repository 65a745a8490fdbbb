"""Choosing a node for a VMI: liveness, nodeSelector, required node affinity, CPU and memory.

Pure functions over plain data, so the rules are unit-tested without a cluster.
The failure text follows the Kubernetes scheduler's ("0/3 nodes are available: ...").
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from virtops.controller.quantity import vmi_requests
from virtops.kubevirt import FINAL_PHASES


@dataclass
class Node:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    cpu: Decimal = Decimal(0)
    memory: Decimal = Decimal(0)
    renewed: datetime.datetime | None = None
    lease_seconds: int = 40

    def alive(self, now: datetime.datetime) -> bool:
        return self.renewed is not None and now < self.renewed + datetime.timedelta(seconds=self.lease_seconds)

    def expired_since(self, now: datetime.datetime) -> float:
        if self.renewed is None:
            return float("inf")
        return (now - (self.renewed + datetime.timedelta(seconds=self.lease_seconds))).total_seconds()


def _expression_matches(expr: dict, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels:
        try:
            have, want = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def selector_matches(vmi: dict, labels: dict[str, str]) -> bool:
    spec = vmi.get("spec") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if terms:
        # Terms are ORed, the expressions inside a term ANDed (as in Kubernetes).
        return any(all(_expression_matches(e, labels) for e in t.get("matchExpressions") or []) for t in terms)
    return True


def choose_node(vmi: dict, nodes: list[Node], placed: list[dict], now: datetime.datetime) -> tuple[str | None, str]:
    """(node name, "") or (None, why not). ``placed`` are VMIs already bound to nodes."""
    cpu, memory = vmi_requests(vmi)
    used: dict[str, list[Decimal]] = {}
    for other in placed:
        node = (other.get("status") or {}).get("nodeName")
        if node and (other.get("status") or {}).get("phase") not in FINAL_PHASES:
            c, m = vmi_requests(other)
            u = used.setdefault(node, [Decimal(0), Decimal(0)])
            u[0] += c
            u[1] += m
    reasons: Counter[str] = Counter()
    fits: list[tuple[Decimal, str]] = []
    for node in nodes:
        u_cpu, u_mem = used.get(node.name, [Decimal(0), Decimal(0)])
        if not node.alive(now):
            reasons["node(s) were not ready (lease expired)"] += 1
        elif not selector_matches(vmi, node.labels):
            reasons["node(s) didn't match Pod's node affinity/selector"] += 1
        elif node.cpu and u_cpu + cpu > node.cpu:
            reasons["Insufficient cpu"] += 1
        elif node.memory and u_mem + memory > node.memory:
            reasons["Insufficient memory"] += 1
        else:
            # Spread: the node with the most free memory left afterwards wins.
            fits.append((node.memory - u_mem - memory if node.memory else Decimal(0), node.name))
    if fits:
        fits.sort(key=lambda f: (-f[0], f[1]))
        return fits[0][1], ""
    detail = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
    return None, f"0/{len(nodes)} nodes are available" + (f": {detail}." if detail else ".")
