"""Reading qemu's `info usernet` (the port-forward's host forwards and slirp's connections) without a domain."""

from __future__ import annotations

from virtops.agent.hypervisor import _connection_states, _host_forwards

# What qemu 7.2 printed for two interfaces while a forward of the first had one connection in the guest.
USERNET = """Hub -1 (hostua-default):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[ESTABLISHED]   17       127.0.0.1 34417       10.0.2.15     7     0     0
  TCP[HOST_FORWARD]  16       127.0.0.1 34417       10.0.2.15     7     0     0
  TCP[SYN_SENT]      19       127.0.0.1 40453       10.0.2.15    22     0     0
  TCP[HOST_FORWARD]  18       127.0.0.1 40453       10.0.2.15    22     0     0
Hub -1 (hostua-second):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[HOST_FORWARD]  20       127.0.0.1 41000       10.0.2.15     7     0     0
"""


def test_host_forwards_are_read_per_interface() -> None:
    assert _host_forwards(USERNET, "hostua-default") == [34417, 40453]
    assert _host_forwards(USERNET, "hostua-second") == [41000]
    assert _host_forwards(USERNET, "hostua-other") == []


def test_the_states_of_a_forwards_connections() -> None:
    assert _connection_states(USERNET, "hostua-default", 34417) == {"ESTABLISHED"}
    assert _connection_states(USERNET, "hostua-default", 40453) == {"SYN_SENT"}  # the guest has not answered yet
    assert _connection_states(USERNET, "hostua-second", 41000) == set()  # a listener only
