"""The guest build's pure parts: the initramfs archive and the cache key."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest
from virtops.lab.guest import Package, _initramfs, _key, guest_source_dir

SOURCES = {p.name: p.read_bytes() for p in guest_source_dir().iterdir() if p.is_file()}
PACKAGES = [Package("linux-image-6.1.0-1-amd64", "6.1.1-1", "ab" * 32, "pool/x.deb"),
            Package("busybox-static", "1:1.35.0-4", "cd" * 32, "pool/y.deb")]


def build() -> bytes:
    return _initramfs(b"\x7fELF busybox", {"drivers/virtio/virtio": b"ko"}, ["drivers/virtio/virtio"], SOURCES)


def test_the_initramfs_is_the_same_bytes_every_time():
    assert build() == build()


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox lists the archive")
def test_the_initramfs_is_a_newc_archive_with_init_busybox_and_modules(tmp_path):
    raw = gzip.decompress(build())
    listing = subprocess.run(["busybox", "cpio", "-t"], input=raw, capture_output=True, check=True).stdout.split()
    assert {b"init", b"bin/busybox", b"lib/modules/virtio.ko", b"etc/virtops/modules",
            b"etc/virtops/udhcpc.script"} <= set(listing)
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=raw, cwd=tmp_path, capture_output=True, check=True)
    assert (tmp_path / "init").read_bytes() == SOURCES["init"]
    assert (tmp_path / "init").stat().st_mode & 0o111
    assert (tmp_path / "etc/virtops/modules").read_text() == "virtio\n"


def test_the_cache_key_follows_every_input():
    key = _key(PACKAGES, SOURCES)
    assert key == _key(PACKAGES, dict(SOURCES))
    assert key != _key(PACKAGES, dict(SOURCES, init=SOURCES["init"] + b"\n"))
    newer = [Package(PACKAGES[0].name, "6.1.1-2", "ef" * 32, "pool/z.deb"), PACKAGES[1]]
    assert key != _key(newer, SOURCES)
