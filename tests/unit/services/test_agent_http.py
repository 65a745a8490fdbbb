"""The agent's /healthz, /readyz and /metrics endpoint on every loopback address the settings allow."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from virtops.agent.main import serve_http
from virtops.agent.metrics import AgentMetrics


class Agent:
    """What serve_http reads of a NodeAgent: its metrics and whether it is healthy."""

    def __init__(self, healthy: bool) -> None:
        self.metrics = AgentMetrics()
        self._healthy = healthy

    def healthy(self) -> bool:
        return self._healthy


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("address, host", [
    ("127.0.0.1:0", "127.0.0.1"),
    ("localhost:0", "127.0.0.1"),
    pytest.param("[::1]:0", "[::1]", marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")),
])
def test_every_documented_loopback_address_serves(address, host):
    agent = Agent(healthy=True)
    agent.metrics.errors.inc(kind="watch")
    server = serve_http(agent, address)
    try:
        base = f"http://{host}:{server.server_address[1]}"
        assert get(base + "/healthz") == (200, "ok\n")
        status, text = get(base + "/metrics")
        assert status == 200 and 'virtops_agent_errors_total{kind="watch"} 1' in text
        assert get(base + "/nothing")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_an_unhealthy_agent_answers_503():
    server = serve_http(Agent(healthy=False), "127.0.0.1:0")
    try:
        assert get(f"http://127.0.0.1:{server.server_address[1]}/readyz") == (503, "not ready\n")
    finally:
        server.shutdown()
        server.server_close()
