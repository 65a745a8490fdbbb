"""Kubernetes resource quantities, enough for scheduling (CPU in millicores, memory in bytes)."""

from __future__ import annotations

import re
from decimal import Decimal

_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkKMGTPE])?$")


def parse(value: str | int | float) -> Decimal:
    """A quantity as a Decimal in base units ('64Mi' -> 67108864, '500m' -> 0.5)."""
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * Decimal(_SUFFIX[suffix])


# KubeVirt's default cpuAllocationRatio: without a CPU request a vCPU asks for 1/10 of a core.
CPU_ALLOCATION_RATIO = 10


def vmi_requests(vmi: dict) -> tuple[Decimal, Decimal]:
    """(cpu cores, memory bytes) a VMI needs: requests, else guest memory and vCPUs / allocation ratio."""
    domain = (vmi.get("spec") or {}).get("domain") or {}
    requests = (domain.get("resources") or {}).get("requests") or {}
    memory = requests.get("memory") or (domain.get("memory") or {}).get("guest") or "0"
    if "cpu" in requests:
        cpu = parse(requests["cpu"])
    else:
        topo = domain.get("cpu") or {}
        vcpus = int(topo.get("cores", 1)) * int(topo.get("sockets", 1)) * int(topo.get("threads", 1))
        cpu = Decimal(vcpus) / CPU_ALLOCATION_RATIO
    return cpu, parse(memory)
