"""The virtops guest: a tiny Linux built from Debian's packages, for the demo and the tests.

Debian's kernel (``linux-image-6.1.0-*-amd64``) boots directly (libvirt ``<kernel>``/``<initrd>``,
KubeVirt ``spec.domain.firmware.kernelBoot``) into an initramfs holding ``busybox-static``, a few
kernel modules and ``lab/guest/init``. The build needs ``apt-get download`` and ``dpkg-deb`` only;
the initramfs is written here (a deterministic newc cpio, gzip with no timestamp), so the same
inputs give the same bytes.

The result is cached under ``~/.cache/virtops/guest/<key>``, keyed by a hash of every input: the
exact package versions and their SHA256 (from apt's lists), the files in ``lab/guest/`` and
``RECIPE``. A warm call reads a few files: apt's answers are remembered until its lists change.

The lab pushes it into its registry as the kernelBoot image ``<registry>/virtops/busybox-guest:1``
(``push_guest``), holding ``/boot/vmlinuz`` and ``/boot/initrd.img``; node agents pull it from there.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtops.lab.build import cache_root
from virtops.lab.registry import Registry

GUEST_VERSION = "1"
# In an OCI registry (the lab's, docs/lab.md): a kernelBoot image holding KERNEL_PATH and INITRD_PATH.
GUEST_REPOSITORY = "virtops/busybox-guest"
GUEST_IMAGE = f"{GUEST_REPOSITORY}:{GUEST_VERSION}"
KERNEL_PATH = "/boot/vmlinuz"
INITRD_PATH = "/boot/initrd.img"
KERNEL_ARGS = "console=ttyS0"
# What the guest's init prints on the serial console once it is up (ACPI button watched, network configured).
BOOTED = "virtops-guest: booted in"
# Bump when the build itself changes in a way the hashed inputs do not show.
RECIPE = "virtops-guest-recipe-1"
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"


class GuestBuildError(Exception):
    """The guest image could not be built."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    filename: str


@dataclass(frozen=True)
class GuestImage:
    """A built guest: the files and what went into them."""

    directory: Path
    key: str
    kernel: Path
    initrd: Path
    manifest: dict[str, Any]


def guest_reference(registry: str) -> str:
    """The guest's image in the registry at ``registry`` (``127.0.0.1:PORT``, ``virtops-lab status --json``)."""
    return f"{registry}/{GUEST_IMAGE}"


def kernel_boot(registry: str, extra_args: str = "") -> dict[str, Any]:
    """A VMI's ``spec.domain.firmware`` that boots this guest from the registry (KubeVirt's kernelBoot)."""
    return {"kernelBoot": {"kernelArgs": f"{KERNEL_ARGS} {extra_args}".strip(),
                           "container": {"image": guest_reference(registry), "kernelPath": KERNEL_PATH,
                                         "initrdPath": INITRD_PATH}}}


def lab_source_dir(name: str, override_env: str) -> Path:
    """The inputs of a lab image: <collection root>/lab/<name>, or the directory named by ``override_env``."""
    override = os.environ.get(override_env)
    if override:
        return Path(override)
    # services/virtops/lab/guest.py -> <collection root>/lab/<name>
    return Path(__file__).resolve().parents[3] / "lab" / name


def guest_source_dir() -> Path:
    return lab_source_dir("guest", "VIRTOPS_GUEST_SRC")


def _say(msg: str) -> None:
    print(f"[guest build] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError as exc:
        raise GuestBuildError(f"{cmd[0]} is not installed (the guest is built with apt-get and dpkg-deb)") from exc
    except subprocess.CalledProcessError as exc:
        raise GuestBuildError(f"{' '.join(cmd)} failed: {(exc.stderr or exc.stdout).strip()[-2000:]}") from exc


def _package(name: str) -> Package:
    """The candidate version of a package in apt's lists, with the checksum apt will verify."""
    out = _run(["apt-cache", "show", "--no-all-versions", name]).stdout
    fields = dict(re.findall(r"^(Package|Version|SHA256|Filename): (.+)$", out, re.M))
    if not {"Version", "SHA256", "Filename"} <= fields.keys():
        raise GuestBuildError(f"apt knows no downloadable {name}; run 'apt-get update' first")
    return Package(name=name, version=fields["Version"], sha256=fields["SHA256"], filename=fields["Filename"])


def kernel_package_name() -> str:
    """VIRTOPS_GUEST_KERNEL, else the linux-image-6.1.0-N-amd64 that Debian's linux-image-amd64 points at."""
    wanted = os.environ.get("VIRTOPS_GUEST_KERNEL")
    if wanted:
        return wanted
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE]).stdout
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)\b", out)
    if not match:
        raise GuestBuildError(f"cannot resolve {KERNEL_META_PACKAGE} to a kernel package; run 'apt-get update' first")
    return match.group(1)


def _apt_state() -> str:
    """A fingerprint of apt's lists and configuration: apt-cache's answers change only with it."""
    digest = hashlib.sha256(os.environ.get("VIRTOPS_GUEST_KERNEL", "").encode())
    paths: list[Path] = []
    for directory in (Path("/var/lib/apt/lists"), Path("/etc/apt")):
        if directory.is_dir():
            paths += sorted(p for p in directory.rglob("*") if p.is_file() and "partial" not in p.parts)
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def resolve_packages() -> list[Package]:
    """The kernel and busybox packages apt would download now (remembered until apt's lists change)."""
    memo = cache_root() / "guest" / f"packages-{_apt_state()}.json"
    try:
        return [Package(**p) for p in json.loads(memo.read_text())]
    except (OSError, ValueError, TypeError):
        pass
    packages = [_package(kernel_package_name()), _package(BUSYBOX_PACKAGE)]
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(memo.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps([p.__dict__ for p in packages]))
    tmp.replace(memo)
    return packages


def _sources(src: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(src.iterdir()) if p.is_file()}


def _key(packages: list[Package], sources: dict[str, bytes]) -> str:
    digest = hashlib.sha256(RECIPE.encode())
    for pkg in packages:
        digest.update(f"{pkg.name}={pkg.version}:{pkg.sha256}\n".encode())
    for name, data in sources.items():
        digest.update(f"{name}:{hashlib.sha256(data).hexdigest()}\n".encode())
    return digest.hexdigest()[:16]


def _modules(sources: dict[str, bytes]) -> list[str]:
    lines = sources["modules"].decode().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _download(pkg: Package, into: Path) -> Path:
    # apt drops root to _apt for downloads; the directory must be its to write.
    into.chmod(0o777)
    _run(["apt-get", "download", "-q", f"{pkg.name}={pkg.version}"], cwd=into)
    found = sorted(into.glob(f"{pkg.name}_*.deb"))
    if len(found) != 1:
        raise GuestBuildError(f"apt-get download {pkg.name} left {len(found)} files")
    digest = hashlib.sha256(found[0].read_bytes()).hexdigest()
    if digest != pkg.sha256:
        raise GuestBuildError(f"{found[0].name}: SHA256 {digest} is not apt's {pkg.sha256}")
    return found[0]


def _extract(deb: Path, wanted: dict[str, str]) -> dict[str, bytes]:
    """Members of a .deb's data archive, streamed through dpkg-deb: {archive path: wanted key}."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                for pattern, key in wanted.items():
                    if member.isfile() and re.fullmatch(pattern, name):
                        data = archive.extractfile(member)
                        assert data is not None
                        found[key] = data.read()
    finally:
        proc.stdout.close()
        proc.wait()
    missing = [key for key in wanted.values() if key not in found]
    if missing:
        raise GuestBuildError(f"{deb.name} lacks {', '.join(missing)}")
    return found


class _Cpio:
    """A newc ("070701") archive as the kernel's initramfs unpacker reads it: root-owned, mtime 0."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.out.write(header + encoded)
        self.out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self.out.write(data)
        self.out.write(b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def _initramfs(busybox: bytes, modules: dict[str, bytes], order: list[str], sources: dict[str, bytes]) -> bytes:
    cpio = _Cpio()
    for directory in ("bin", "dev", "etc", "etc/virtops", "lib", "lib/modules", "proc", "run", "sbin", "sys",
                      "tmp", "usr", "usr/bin", "usr/sbin"):
        cpio.directory(directory)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", sources["init"], 0o755)
    cpio.file("etc/virtops/udhcpc.script", sources["udhcpc.script"], 0o755)
    cpio.file("etc/virtops/modules", "".join(Path(m).name + "\n" for m in order).encode())
    cpio.file("etc/virtops/version", f"{GUEST_IMAGE}\n".encode())
    for module in order:
        cpio.file(f"lib/modules/{Path(module).name}.ko", modules[module])
    raw = cpio.finish()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return buf.getvalue()


def _build(out: Path, kernel_pkg: Package, busybox_pkg: Package, sources: dict[str, bytes], key: str) -> None:
    started = time.monotonic()
    order = _modules(sources)
    with tempfile.TemporaryDirectory(prefix="virtops-guest-") as tmp:
        work = Path(tmp)
        _say(f"downloading {kernel_pkg.name} {kernel_pkg.version} and {busybox_pkg.name} {busybox_pkg.version}")
        kernel_deb = _download(kernel_pkg, work)
        busybox_deb = _download(busybox_pkg, work)
        _say(f"downloaded in {time.monotonic() - started:.1f}s; extracting the kernel and {len(order)} modules")
        wanted = {r"boot/vmlinuz-.*": "vmlinuz"}
        wanted.update({rf"lib/modules/[^/]+/kernel/{re.escape(m)}\.ko": m for m in order})
        kernel_files = _extract(kernel_deb, wanted)
        busybox = _extract(busybox_deb, {"bin/busybox": "busybox"})["busybox"]
    _say("writing the initramfs")
    initrd = _initramfs(busybox, kernel_files, order, sources)
    tmp_out = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp_out, ignore_errors=True)
    (tmp_out / "boot").mkdir(parents=True)
    (tmp_out / "boot" / "vmlinuz").write_bytes(kernel_files["vmlinuz"])
    (tmp_out / "boot" / "initrd.img").write_bytes(initrd)
    manifest = {
        "image": GUEST_IMAGE, "key": key, "recipe": RECIPE, "kernelArgs": KERNEL_ARGS,
        "kernelPath": KERNEL_PATH, "initrdPath": INITRD_PATH,
        "packages": {p.name: {"version": p.version, "sha256": p.sha256} for p in (kernel_pkg, busybox_pkg)},
        "modules": order,
        "sizes": {"vmlinuz": len(kernel_files["vmlinuz"]), "initrd.img": len(initrd)},
        "sha256": {"vmlinuz": hashlib.sha256(kernel_files["vmlinuz"]).hexdigest(),
                   "initrd.img": hashlib.sha256(initrd).hexdigest()},
    }
    (tmp_out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for path in tmp_out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    tmp_out.chmod(0o755)
    tmp_out.rename(out)
    total = len(kernel_files["vmlinuz"]) + len(initrd)
    _say(f"built {GUEST_IMAGE} ({total / 2**20:.1f} MiB: kernel {len(kernel_files['vmlinuz']) / 2**20:.1f} MiB, "
         f"initramfs {len(initrd) / 2**20:.1f} MiB) in {time.monotonic() - started:.1f}s -> {out}")


def _load(directory: Path) -> GuestImage:
    manifest = json.loads((directory / "manifest.json").read_text())
    return GuestImage(directory=directory, key=manifest["key"], kernel=directory / "boot" / "vmlinuz",
                      initrd=directory / "boot" / "initrd.img", manifest=manifest)


def ensure_guest() -> GuestImage:
    """The cached guest for today's inputs, building it first when the cache lacks it."""
    sources = _sources(guest_source_dir())
    packages = resolve_packages()
    key = _key(packages, sources)
    root = cache_root() / "guest"
    root.mkdir(parents=True, exist_ok=True)
    out = root / key
    if (out / "manifest.json").exists():
        return _load(out)
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lab may be building the same guest
        if not (out / "manifest.json").exists():
            _say(f"building {GUEST_IMAGE} (key {key}); this takes a minute at most")
            _build(out, packages[0], packages[1], sources, key)
    return _load(out)


def push_guest(registry: Registry, guest: GuestImage | None = None) -> str:
    """Push the guest as ``<registry>/virtops/busybox-guest:<GUEST_VERSION>`` when the registry lacks it.

    A kernelBoot image: the kernel at KERNEL_PATH and the initramfs at INITRD_PATH. Returns the reference.
    """
    guest = guest or ensure_guest()
    return registry.ensure_files(GUEST_REPOSITORY, GUEST_VERSION,
                                 {KERNEL_PATH: guest.kernel, INITRD_PATH: guest.initrd}, key=guest.key)
