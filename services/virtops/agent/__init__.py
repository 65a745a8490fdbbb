"""The node agent: watches the VMIs of one node and drives libvirt (layered like KubeVirt's virt-handler).

Layers: ``main`` (entry point) -> ``agent.NodeAgent`` (watch, queue, reconcile, heartbeat) ->
``hypervisor.LibvirtHypervisor`` (libvirt calls) and ``libvirt_events.DomainEventWatcher`` (lifecycle
events), the only two modules that import libvirt; ``domain`` turns a VMI spec into libvirt domain XML.
``config`` reads settings (YAML file and flags), ``metrics`` renders /metrics. docs/node-agent.md is the guide.
"""

from pathlib import Path

VERSION = "0.1.0"
# The agent's ClusterRole/Role and bindings (least privilege); the lab and the roles apply it.
RBAC_FILE = Path(__file__).with_name("rbac.yaml")
