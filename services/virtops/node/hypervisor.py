"""Which libvirt domain type to use on this host.

A usable-looking /dev/kvm is not proof: on some nested hosts a KVM guest
"runs" but hangs right after the kernel decompresses. Until the project's
guest image exists (it gives a boot marker to probe with), TCG (``qemu``) is
the default and KVM is opt-in with VIRTOPS_DOMAIN_TYPE=kvm.
"""

from __future__ import annotations

import os

DOMAIN_TYPES = ("qemu", "kvm")


def domain_type() -> str:
    wanted = os.environ.get("VIRTOPS_DOMAIN_TYPE", "qemu")
    if wanted not in DOMAIN_TYPES:
        raise ValueError(f"VIRTOPS_DOMAIN_TYPE must be one of {', '.join(DOMAIN_TYPES)}, not {wanted!r}")
    if wanted == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise ValueError("VIRTOPS_DOMAIN_TYPE=kvm but /dev/kvm is not usable by this user")
    return wanted
