"""Node side: what the node agent uses to drive libvirt."""
