"""``virtops/debian:12``: a Debian 12 cloud image built from Debian's packages, like a published one.

mmdebstrap installs bookworm with systemd, cloud-init, openssh-server, qemu-guest-agent and python3
(``lab/debian/packages``) into a directory; the disk is then assembled without mounting anything:

- partition 1 (MBR type ``ef``, active): a FAT file system written with mtools, holding the kernel, the
  initramfs, SYSLINUX (``syslinux --install``, BIOS) and systemd-boot as ``/EFI/BOOT/BOOTX64.EFI``
  (UEFI), both with the same kernel command line;
- partition 2: the root file system, ``mkfs.ext4 -d ROOTDIR``;
- SYSLINUX's ``mbr.bin`` as the boot code, so the default BIOS firmware boots the disk by itself;
- converted to a compressed qcow2 with ``qemu-img convert``.

The result is cached under ``~/.cache/virtops/debian/<key>/``, keyed by a hash of every input: the files
in ``lab/debian/`` (package list, configuration, customize script), the apt sources and ``RECIPE``.
Package versions are whatever the mirror serves at build time (``manifest.json`` lists them); a warm call
hashes a few small files and runs nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtops.lab.build import cache_root
from virtops.lab.guest import _sources, lab_source_dir
from virtops.lab.registry import Registry

DEBIAN_REPOSITORY = "virtops/debian"
DEBIAN_TAG = "12"
DEBIAN_IMAGE = f"{DEBIAN_REPOSITORY}:{DEBIAN_TAG}"
SUITE = "bookworm"
SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Fixed, so that the boot configuration can name the root file system before it exists.
ROOT_UUID = "5669724f-7073-4465-6269-616e31320001"
KERNEL_CMDLINE = f"root=UUID={ROOT_UUID} ro console=tty0 console=ttyS0,115200"
DISK_BYTES = 2 * 2**30
BOOT_START = 2**20            # partition 1 at 1 MiB, as partitioning tools align it
BOOT_BYTES = 64 * 2**20       # kernel + initramfs (about 16 MiB) with room for a second kernel
# The line the guest's getty prints on the serial console: the image has booted.
LOGIN_PROMPT = "login:"
# Bump when the build itself changes in a way the hashed inputs do not show.
RECIPE = "virtops-debian-recipe-1"
# mmdebstrap's dpkg filters: no documentation, manual pages or translations in a cloud image.
DPKG_FILTERS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
    # Kernel modules for hardware no KubeVirt VM has (sound, cameras, Wi-Fi, Bluetooth, InfiniBand,
    # sensors, staging drivers): a third of the kernel's 400 MB of modules.
    *(f"path-exclude=/lib/modules/*/kernel/{d}/*" for d in (
        "sound", "drivers/media", "drivers/net/wireless", "net/wireless", "net/mac80211", "drivers/bluetooth",
        "net/bluetooth", "drivers/infiniband", "drivers/iio", "drivers/staging")),
)
# Host tools the build runs, by the Debian package that has them (hack/setup.sh installs them).
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools",
              "mcopy": "mtools", "syslinux": "syslinux", "sfdisk": "fdisk", "qemu-img": "qemu-utils"}
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")


class DebianImageError(Exception):
    """The Debian image could not be built."""


@dataclass(frozen=True)
class DebianImage:
    """A built image: the qcow2 file and what went into it."""

    directory: Path
    key: str
    disk: Path
    manifest: dict[str, Any]


def debian_source_dir() -> Path:
    return lab_source_dir("debian", "VIRTOPS_DEBIAN_SRC")


def _say(msg: str) -> None:
    print(f"[debian build] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], env: dict[str, str] | None = None, stream: bool = False) -> str:
    """Run a build step; ``stream`` passes its output through as progress instead of capturing it."""
    try:
        if stream:
            subprocess.run(cmd, check=True, stdout=sys.stderr, env=env)
            return ""
        return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    except FileNotFoundError as exc:
        tool = Path(cmd[0]).name
        raise DebianImageError(f"{tool} is not installed (Debian package {HOST_TOOLS.get(tool, tool)}; "
                               "hack/setup.sh installs it)") from exc
    except subprocess.CalledProcessError as exc:
        detail = ((exc.stderr or "") + (exc.stdout or "")).strip()[-2000:] if not stream else "see above"
        raise DebianImageError(f"{' '.join(cmd[:3])} ... failed (exit {exc.returncode}): {detail}") from exc


def packages(sources: dict[str, bytes]) -> list[str]:
    lines = sources["packages"].decode().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def image_key(sources: dict[str, bytes]) -> str:
    """The cache key: a hash of the recipe, the apt sources, the disk layout and every file in lab/debian/."""
    digest = hashlib.sha256(f"{RECIPE}\n{SUITE}\n{KERNEL_CMDLINE}\n{DISK_BYTES}:{BOOT_BYTES}\n".encode())
    digest.update("\n".join(SOURCES + DPKG_FILTERS).encode())
    for name, data in sources.items():
        digest.update(f"\n{name}:{hashlib.sha256(data).hexdigest()}".encode())
    return digest.hexdigest()[:16]


def _mmdebstrap(rootdir: Path, src: Path, names: list[str]) -> None:
    initramfs = [
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"',
        f"upload {src / 'initramfs.conf'} /etc/initramfs-tools/conf.d/virtops",
        f"upload {src / 'initramfs-modules'} /usr/share/initramfs-tools/modules.d/virtops",
    ]
    customize = [f'sh {src / "customize.sh"} "$1" {ROOT_UUID} {src}']
    cmd = ["mmdebstrap", "--variant=apt", f"--include={','.join(names)}"]
    cmd += [f"--dpkgopt={f}" for f in DPKG_FILTERS]
    cmd += [f"--setup-hook={h}" for h in initramfs] + [f"--customize-hook={h}" for h in customize]
    cmd += [SUITE, str(rootdir), *SOURCES]
    _run(cmd, stream=True)


def _installed(rootdir: Path) -> dict[str, str]:
    out = _run(["dpkg-query", f"--admindir={rootdir}/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\n"])
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def _one(rootdir: Path, pattern: str) -> Path:
    found = sorted((rootdir / "boot").glob(pattern))
    if len(found) != 1:
        raise DebianImageError(f"expected one /boot/{pattern} in the image, found {[p.name for p in found]}")
    return found[0]


def _boot_partition(path: Path, rootdir: Path) -> None:
    """The FAT boot partition: kernel, initramfs, SYSLINUX for BIOS and systemd-boot for UEFI."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    _run(["mkfs.vfat", "-C", "-n", "BOOT", str(path), str(BOOT_BYTES // 1024)])
    kernel = _one(rootdir, "vmlinuz-*")
    initrd = rootdir / "boot" / kernel.name.replace("vmlinuz-", "initrd.img-", 1)
    if not initrd.is_file():
        raise DebianImageError(f"the image has {kernel.name} but no /boot/{initrd.name}")
    files = {
        "vmlinuz": kernel.read_bytes(),
        "initrd.img": initrd.read_bytes(),
        "syslinux.cfg": (f"SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT debian\nLABEL debian\n"
                         f"  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {KERNEL_CMDLINE}\n").encode(),
        "EFI/BOOT/BOOTX64.EFI": (rootdir / "usr/lib/systemd/boot/efi/systemd-bootx64.efi").read_bytes(),
        "loader/loader.conf": b"default debian.conf\ntimeout 0\n",
        "loader/entries/debian.conf": (f"title Debian GNU/Linux 12\nlinux /vmlinuz\ninitrd /initrd.img\n"
                                       f"options {KERNEL_CMDLINE}\n").encode(),
    }
    with tempfile.TemporaryDirectory(prefix="virtops-debian-boot-") as tmp:
        _run(["mmd", "-i", str(path), "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"], env=env)
        for name, data in files.items():
            local = Path(tmp) / name.replace("/", "_")
            local.write_bytes(data)
            _run(["mcopy", "-i", str(path), str(local), f"::/{name}"], env=env)
    _run(["syslinux", "--install", str(path)])


def _assemble(raw: Path, boot: Path, root: Path) -> None:
    """Partition table, boot code and the two file systems in one sparse raw disk."""
    sector = 512
    root_start = BOOT_START + BOOT_BYTES
    with open(raw, "wb") as disk:
        disk.truncate(DISK_BYTES)
    table = (f"label: dos\nlabel-id: 0x5669724f\n"
             f"start={BOOT_START // sector}, size={BOOT_BYTES // sector}, type=ef, bootable\n"
             f"start={root_start // sector}, type=83\n")
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], input=table, text=True,
                   check=True, capture_output=True)
    for image, offset in ((boot, BOOT_START), (root, root_start)):
        _run(["dd", f"if={image}", f"of={raw}", "bs=1M", f"seek={offset // 2**20}", "conv=notrunc,sparse",
              "status=none"])
    mbr = MBR_BIN.read_bytes()[:440]  # boot code only: bytes 440.. hold the disk id and partition table
    with open(raw, "r+b") as disk:
        disk.write(mbr)


def _build(out: Path, sources: dict[str, bytes], key: str) -> None:
    started = time.monotonic()
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        raise DebianImageError(f"missing build tools: {', '.join(missing)} (Debian packages "
                               f"{', '.join(sorted({HOST_TOOLS[t] for t in missing}))}; hack/setup.sh installs them)")
    names = packages(sources)
    src = debian_source_dir()
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=out.parent))
    try:
        rootdir = work / "root"
        _say(f"mmdebstrap {SUITE} with {', '.join(names)} (downloads about 250 MB)")
        _mmdebstrap(rootdir, src, names)
        installed = _installed(rootdir)
        _say(f"root file system ready: {len(installed)} packages, {time.monotonic() - started:.0f}s; "
             "writing the disk")
        boot, root, raw = work / "boot.vfat", work / "root.ext4", work / "disk.raw"
        _boot_partition(boot, rootdir)
        _run(["mkfs.ext4", "-q", "-F", "-L", "debian-root", "-U", ROOT_UUID, "-d", str(rootdir), str(root),
              str((DISK_BYTES - BOOT_START - BOOT_BYTES) // 1024) + "k"])
        shutil.rmtree(rootdir)
        _assemble(raw, boot, root)
        boot.unlink()
        root.unlink()
        _say(f"disk assembled, {time.monotonic() - started:.0f}s; compressing to qcow2")
        (work / "out").mkdir()
        disk = work / "out" / "disk.qcow2"
        _run(["qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(disk)])
        raw.unlink()
        with open(disk, "rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        size = disk.stat().st_size
        manifest = {
            "image": DEBIAN_IMAGE, "key": key, "recipe": RECIPE, "suite": SUITE, "sources": list(SOURCES),
            "kernelCmdline": KERNEL_CMDLINE, "rootUUID": ROOT_UUID, "virtualSize": DISK_BYTES,
            "size": size, "sha256": sha256, "packages": installed,
            "kernel": next((f"{n} {v}" for n, v in installed.items()
                            if n.startswith("linux-image-") and n[12:13].isdigit()), ""),
        }
        (work / "out" / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for path in (work / "out", disk, work / "out" / "manifest.json"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (work / "out").rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say(f"built {DEBIAN_IMAGE} ({size / 2**20:.0f} MiB qcow2, {DISK_BYTES // 2**30} GiB virtual) "
         f"in {time.monotonic() - started:.0f}s -> {out}")


def _load(directory: Path) -> DebianImage:
    manifest = json.loads((directory / "manifest.json").read_text())
    return DebianImage(directory=directory, key=manifest["key"], disk=directory / "disk.qcow2", manifest=manifest)


def cached_debian_image() -> DebianImage | None:
    """The cached image for today's inputs, or None when it has not been built."""
    sources = _sources(debian_source_dir())
    out = cache_root() / "debian" / image_key(sources)
    return _load(out) if (out / "manifest.json").exists() else None


def ensure_debian_image() -> DebianImage:
    """The cached image for today's inputs, building it first (a few minutes) when the cache lacks it."""
    sources = _sources(debian_source_dir())
    key = image_key(sources)
    root = cache_root() / "debian"
    root.mkdir(parents=True, exist_ok=True)
    out = root / key
    if (out / "manifest.json").exists():
        return _load(out)
    if os.geteuid() != 0:
        raise DebianImageError("building the Debian image needs root (mmdebstrap installs packages as root)")
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lab may be building the same image
        if not (out / "manifest.json").exists():
            _say(f"building {DEBIAN_IMAGE} (key {key}); a few minutes, once")
            _build(out, sources, key)
    return _load(out)


def push_debian(registry: Registry, image: DebianImage | None = None) -> str:
    """Push the image as the containerDisk ``<registry>/virtops/debian:12`` when the registry lacks it.

    The disk is ``/disk/disk.qcow2``; packaging is cached by the image's key, so a new lab only pushes
    (about 2 s for its 191 MiB). Returns the reference a VMI's ``containerDisk.image`` uses.
    """
    image = image or ensure_debian_image()
    return registry.ensure_container_disk(DEBIAN_REPOSITORY, DEBIAN_TAG, image.disk, key=image.key)
