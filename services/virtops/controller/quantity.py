"""What a VMI asks of a node for scheduling: CPU in cores, memory in bytes (parsed by virtops.quantity)."""

from __future__ import annotations

from decimal import Decimal

from virtops.quantity import parse_quantity

# KubeVirt's default cpuAllocationRatio: without a CPU request a vCPU asks for 1/10 of a core.
CPU_ALLOCATION_RATIO = 10


def vmi_requests(vmi: dict) -> tuple[Decimal, Decimal]:
    """(cpu cores, memory bytes) a VMI needs: requests, else guest memory and vCPUs / allocation ratio."""
    domain = (vmi.get("spec") or {}).get("domain") or {}
    requests = (domain.get("resources") or {}).get("requests") or {}
    memory = requests.get("memory") or (domain.get("memory") or {}).get("guest") or "0"
    if "cpu" in requests:
        cpu = parse_quantity(requests["cpu"])
    else:
        topo = domain.get("cpu") or {}
        vcpus = int(topo.get("cores", 1)) * int(topo.get("sockets", 1)) * int(topo.get("threads", 1))
        cpu = Decimal(vcpus) / CPU_ALLOCATION_RATIO
    return cpu, parse_quantity(memory)
