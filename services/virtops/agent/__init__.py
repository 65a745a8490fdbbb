"""The node agent: watches the VMIs of one node and drives libvirt (layered like KubeVirt's virt-handler).

Layers: ``main`` (entry point) -> ``agent.NodeAgent`` (watch, queue, reconcile, heartbeat) ->
``hypervisor.LibvirtHypervisor`` (the only code that imports libvirt); ``domain`` turns a VMI spec
into libvirt domain XML.
"""

VERSION = "0.1.0"
