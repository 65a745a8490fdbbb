"""An agent that starts while the API server is unreachable keeps trying (as it does when the API goes
away later) instead of ending with a traceback. A real client against a loopback port nobody listens on."""

from __future__ import annotations

import time

from virtops.agent.agent import NodeAgent
from virtops.kube import KubeClient
from virtops.lab.control_plane import free_port


class NoHypervisor:
    """Never reached: without a VMI list there is nothing to look up in libvirt."""


def test_an_api_server_away_at_start_is_retried_not_fatal(tmp_path):
    client = KubeClient(f"https://127.0.0.1:{free_port()}")
    node = NodeAgent(client, "node-a", NoHypervisor(), state_dir=tmp_path / "state", image_cache=tmp_path,
                     domain_type="qemu", heartbeat_seconds=0.1, workers=1)
    node.start()  # it used to raise urllib3's NewConnectionError from creating the Lease namespace
    try:
        for _try in range(200):  # a bounded count of tries
            if node.metrics.errors.value(kind="heartbeat") >= 2 and node.metrics.errors.value(kind="watch") >= 2:
                break
            time.sleep(0.05)
        assert node.metrics.errors.value(kind="heartbeat") >= 2  # still beating, still listing
        assert node.metrics.errors.value(kind="watch") >= 2
        assert not node.healthy()
    finally:
        node.stop()
