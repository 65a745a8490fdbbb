"""The Debian image build's pure parts: what goes in, the cache key, the boot configuration and the disk layout."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml
from virtops.lab import debian_image
from virtops.lab.debian_image import KERNEL_CMDLINE, _assemble, _sources, debian_source_dir, image_key, packages

SOURCES = _sources(debian_source_dir())


def test_the_image_has_what_a_cloud_image_needs_to_boot_and_be_reached():
    names = packages(SOURCES)
    assert {"systemd-sysv", "udev", "linux-image-amd64", "cloud-init", "openssh-server", "qemu-guest-agent",
            "python3", "systemd-boot-efi"} <= set(names)
    assert not [n for n in names if n.startswith("#") or " " in n]


def test_cloud_init_never_probes_metadata_addresses():
    config = yaml.safe_load(SOURCES["cloud.cfg"])
    assert config["datasource_list"] == ["NoCloud", "ConfigDrive", "None"]


def test_the_kernel_logs_to_the_serial_console_and_mounts_the_built_root():
    args = KERNEL_CMDLINE.split()
    assert args[-1].startswith("console=ttyS0")  # the last console= is /dev/console, where the getty runs
    assert f"root=UUID={debian_image.ROOT_UUID}" in args


def test_the_cache_key_follows_every_input():
    key = image_key(SOURCES)
    assert key == image_key(dict(SOURCES))
    assert key != image_key(dict(SOURCES, packages=SOURCES["packages"] + b"vim\n"))
    assert key != image_key(dict(SOURCES, **{"customize.sh": SOURCES["customize.sh"] + b"\n"}))
    assert key != image_key(dict(SOURCES, extra=b""))


@pytest.mark.skipif(shutil.which("sfdisk") is None or not debian_image.MBR_BIN.exists(),
                    reason="sfdisk (fdisk) and SYSLINUX's mbr.bin (syslinux-common) are installed by hack/setup.sh")
def test_the_disk_has_an_active_boot_partition_boot_code_and_both_file_systems(tmp_path, monkeypatch):
    monkeypatch.setattr(debian_image, "DISK_BYTES", 8 * 2**20)
    monkeypatch.setattr(debian_image, "BOOT_BYTES", 2 * 2**20)
    boot, root, raw = tmp_path / "boot", tmp_path / "root", tmp_path / "disk.raw"
    boot.write_bytes(b"B" * 2**20)
    root.write_bytes(b"R" * 2**20)
    _assemble(raw, boot, root)
    data = raw.read_bytes()
    assert len(data) == 8 * 2**20
    assert data[:440] == debian_image.MBR_BIN.read_bytes()[:440]
    assert data[510:512] == b"\x55\xaa"
    assert data[2**20:2 * 2**20] == boot.read_bytes()
    assert data[3 * 2**20:4 * 2**20] == root.read_bytes()
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    first, second = table["partitions"]
    assert (first["start"], first["size"], first["type"], first.get("bootable")) == (2048, 4096, "ef", True)
    assert (second["start"], second["type"]) == (6144, "83")
