"""What a KubeVirt object's fields mean, where more than one service reads them (one reader each)."""

from __future__ import annotations

from typing import Any

# The phases a VMI never leaves (KubeVirt's VirtualMachineInstance.IsFinal).
FINAL_PHASES = ("Succeeded", "Failed")


def run_strategy(vm: dict[str, Any]) -> str:
    """The VM's run strategy: ``spec.runStrategy`` when set, else ``spec.running`` (true: Always, else Halted).

    As in KubeVirt (VirtualMachine.RunStrategy), a null ``runStrategy`` is unset and ``running`` decides; an empty
    one is unset too (the CRD's enum refuses it, so only a hand-made object has it).
    """
    spec = vm.get("spec") or {}
    if spec.get("runStrategy"):
        return spec["runStrategy"]
    return "Always" if spec.get("running") else "Halted"
