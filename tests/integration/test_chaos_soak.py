"""The chaos soak (tests/integration/soak.py) on a stack lab of its own with two node agents.

In hack/test.sh it runs small (VIRTOPS_SOAK_SECONDS, default 75 s of chaos, libvirtd killed once); by hand:
    VIRTOPS_SOAK_SECONDS=600 VIRTOPS_SOAK_SEED=1234 .venv/bin/python -m pytest tests/integration/test_chaos_soak.py
It prints the seed, the faults injected by kind, the operations and each invariant, also when it passes.
"""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import CRDS, USER_ROLES, Kubectl, wait_until

pytest.importorskip("libvirt", reason="libvirt-python is installed by hack/setup.sh")

from soak import (  # noqa: E402
    INVARIANTS,
    LEASE_SECONDS,
    NO_TRACEBACK,
    NODE_GRACE_SECONDS,
    ChaosSoak,
    components_log_tracebacks,
    default_seed,
)


@pytest.fixture
def stack():
    from virtops.lab import ControlPlane

    name = f"soak-{os.getpid()}"
    plane = ControlPlane(name, stack=True, nodes=2, lease_seconds=LEASE_SECONDS,
                         node_grace_seconds=NODE_GRACE_SECONDS)
    info = plane.up()
    try:
        kubectl = Kubectl(f"{info.state_dir}/bin/kubectl", info.kubeconfig)
        kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
        kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io",
                "crd/virtualmachines.kubevirt.io", "--timeout=60s")
        nodes = [f"{name}-node-1", f"{name}-node-2"]
        wait_until(lambda: all(kubectl.run("-n", "kube-node-lease", "get", "lease", n, check=False).returncode == 0
                               for n in nodes), attempts=600, delay=0.1)
        kubectl("create", "namespace", "soak")
        yield plane, info, nodes, "soak"
    finally:
        plane.down()  # also destroys the domains its agents made


def test_chaos_soak_keeps_every_invariant(stack, capsys):
    plane, info, nodes, ns = stack
    soak = ChaosSoak(plane, info, ns, nodes, seed=default_seed(),
                     seconds=float(os.environ.get("VIRTOPS_SOAK_SECONDS", "75")),
                     libvirtd_kills=int(os.environ.get("VIRTOPS_SOAK_LIBVIRTD_KILLS", "1")),
                     say=lambda line: print(line, flush=True))
    with capsys.disabled():  # the run's log and its report show in CI's output, also when it passes
        report = soak.run()
        report.checks[NO_TRACEBACK] += 1
        for component, found in components_log_tracebacks(info.state_dir).items():
            for what in found:
                report.violate(NO_TRACEBACK, f"{component}: {what}")
        text = report.render(INVARIANTS)
        print(text, flush=True)
    if report.violations:  # the lab's state dir goes with the fixture: keep the components' logs for the reader
        kept = shutil.copytree(f"{info.state_dir}/logs", f"/tmp/virtops-soak-logs-{report.seed}-{os.getpid()}")
        text += f"\ncomponent logs kept in {kept}"
    assert not report.violations, text
