"""The `host` scenario's machine: its tree has the role's packages pre-baked, and its cache key follows them."""

from __future__ import annotations

import yaml
from virtops.lab import systemd_host


def test_the_tree_has_systemd_sshd_and_every_package_the_node_agent_role_installs():
    defaults = yaml.safe_load((systemd_host._collection_root() / "roles/node_agent/defaults/main.yml").read_text())
    names = systemd_host.packages()
    assert {"systemd-sysv", "openssh-server", "python3-apt"} <= set(names)
    assert set(defaults["node_agent_packages"]) <= set(names)  # the role's install step finds them: no download
    assert len(names) == len(set(names))


def test_the_cache_key_changes_with_the_package_list(tmp_path, monkeypatch):
    before = systemd_host.image_key()
    src = tmp_path / "systemd-host"
    src.mkdir()
    (src / "packages").write_text("systemd-sysv\nopenssh-server\nvim-tiny\n")
    monkeypatch.setenv("VIRTOPS_SYSTEMD_HOST_SRC", str(src))
    assert systemd_host.image_key() != before


def test_the_wheelhouse_covers_the_services_dependencies_and_their_build():
    requirements = " ".join(systemd_host._requirements())
    for name in ("cryptography", "PyYAML", "websockets", "libvirt-python", "setuptools"):
        assert name in requirements
