"""The node API's protocol, shared by its server (virtops.agent.nodeapi) and its client (virtops.api.nodes)."""

from __future__ import annotations

# Where an agent's node API listens, in the annotations of its node Lease: "https://HOST:PORT".
NODE_API_ANNOTATION = "virtops.kubevirt.io/node-api"
# The subresource API's client identity (CN of its client certificate), the only one agents accept by default.
DEFAULT_CLIENT_NAME = "virtops-subresource-api"
# Power operations the node API serves, as virt-handler's paths name them.
POWER_OPERATIONS = ("pause", "unpause")
# Streams: GET with this Upgrade header; after "101 Switching Protocols" the connection carries raw bytes.
# portforward takes the guest's TCP port as the query parameter "port".
STREAM_OPERATIONS = ("console", "vnc", "portforward")
STREAM_UPGRADE = "plain.kubevirt.io"
# Guest agent queries: GET, answered with KubeVirt's JSON (VirtualMachineInstanceGuestAgentInfo,
# VirtualMachineInstanceGuestOSUserList, VirtualMachineInstanceFileSystemList).
INFO_OPERATIONS = ("guestosinfo", "userlist", "filesystemlist")


def operation_path(namespace: str, name: str, op: str) -> str:
    return f"/v1/namespaces/{namespace}/virtualmachineinstances/{name}/{op}"
