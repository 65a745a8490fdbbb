"""The lab: a real etcd and kube-apiserver on loopback, built from Go modules.

One implementation, three callers: the ``virtops-lab`` command, the pytest
fixture in ``tests/conftest.py`` and the Ansible role ``lab``.
"""

from virtops.lab.control_plane import ControlPlane, LabError, LabInfo

__all__ = ["ControlPlane", "LabError", "LabInfo"]
