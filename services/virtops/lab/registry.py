"""The lab's OCI registry, and images packaged for it (KubeVirt containerDisks, kernel boot images).

The registry is Debian's ``docker-registry`` (the distribution registry 2.8), started and stopped by the
lab like etcd (``virtops.lab.control_plane``): it listens on ``127.0.0.1:PORT`` only, with a server
certificate from the lab's CA, and keeps its blobs under ``<lab state dir>/registry/``, so ``down``
leaves nothing. ``virtops-lab status --json`` names it as ``"registry": "127.0.0.1:PORT"``.

Images are built with Debian's ``umoci`` (an OCI image layout from one layer tar) and pushed with
``skopeo``; nothing here speaks registry HTTP itself. A built layout is cached under
``~/.cache/virtops/images/<key>/`` so a new lab only pushes it.

The API other parts of the lab use (docs/lab.md, "The registry")::

    registry = Registry.of_lab(state_dir)            # or ControlPlane(...).registry()
    ref = registry.ensure_container_disk("virtops/debian", "12", Path("debian.qcow2"), key="...")
    # -> "127.0.0.1:PORT/virtops/debian:12", pushed when the registry lacked it

A containerDisk is KubeVirt's layout: exactly one file under ``/disk/`` (owned by 107:107, the qemu user
KubeVirt runs as, mode 0440), qcow2 without a backing file or raw.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from virtops.lab.build import cache_root

REGISTRY_BINARY = "docker-registry"
READY_TIMEOUT = 30.0
# KubeVirt's containerDisk convention: the disk belongs to the qemu user (107) and is read-only.
DISK_UID = 107
DISK_MODE = 0o440
# Bump when the packaging itself changes in a way the callers' keys do not show.
PACKAGING = "virtops-oci-1"
_TAG = "image"  # the tag inside a cached OCI layout


class RegistryError(Exception):
    """The registry could not be started, or an image could not be packaged or pushed."""


def _say(msg: str) -> None:
    print(f"[registry] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise RegistryError(f"{what}: {cmd[0]} is not installed (hack/setup.sh installs it from Debian)") from exc
    except subprocess.CalledProcessError as exc:
        raise RegistryError(f"{what}: {(exc.stderr or exc.stdout).strip()[-1500:]}") from exc


def registry_dir(state_dir: Path, name: str = "registry") -> Path:
    return Path(state_dir) / name


def prepare(state_dir: Path, port: int, *, name: str = "registry", htpasswd: Path | None = None) -> list[str]:
    """Write a registry's configuration and certificate into the lab's state dir; its command line.

    ``<state>/<name>/certs/ca.crt`` is the lab CA, in the shape skopeo's ``--cert-dir`` wants: the
    directory a client (a node agent's ``registry_ca_dir``) trusts the registry with. ``htpasswd`` (a
    bcrypt htpasswd file) makes it a registry that wants credentials for everything, pulls included.
    """
    from virtops.lab.pki import issue_server

    root = registry_dir(state_dir, name)
    (root / "data").mkdir(parents=True, mode=0o700)
    (root / "certs").mkdir(mode=0o755)
    pki_dir = Path(state_dir) / "pki"
    issue_server(pki_dir, name, f"virtops-lab-{name}", dns_names=("localhost",), ips=("127.0.0.1",))
    shutil.copyfile(pki_dir / "ca.crt", root / "certs" / "ca.crt")
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": os.urandom(16).hex(),
                 "tls": {"certificate": str(pki_dir / f"{name}.crt"), "key": str(pki_dir / f"{name}.key")}},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": f"virtops-lab-{name}", "path": str(htpasswd)}}
    path = root / "config.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML; the secret makes it private
    path.chmod(0o600)
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        raise RegistryError(f"{REGISTRY_BINARY} is not installed (Debian's docker-registry; hack/setup.sh)")
    return [binary, "serve", str(path)]


def wait_ready(address: str, ca_file: Path, alive: object = None, timeout: float = READY_TIMEOUT) -> None:
    """Until a TLS handshake with the lab CA succeeds (the registry is listening with its certificate)."""
    host, _sep, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca_file))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2) as sock, \
                    context.wrap_socket(sock, server_hostname=host):
                return
        except (OSError, ssl.SSLError) as exc:
            if callable(alive) and not alive():
                raise RegistryError("the registry exited; see logs/registry.log") from exc
            if time.monotonic() >= deadline:
                raise RegistryError(f"the registry at {address} is not ready after {timeout:.0f}s: {exc}") from exc
            time.sleep(0.1)


# --- images -----------------------------------------------------------------------------------------------
def _file_key(files: dict[str, Path]) -> str:
    digest = hashlib.sha256(PACKAGING.encode())
    for target, source in sorted(files.items()):
        digest.update(f"{target}\n".encode())
        with open(source, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _layer_tar(files: dict[str, tuple[Path, int, int]], out: Path) -> None:
    """One layer: ``{path in image: (source, uid, mode)}``, parents as root-owned directories, mtime 0."""
    dirs: dict[str, int] = {}
    for target, (_source, uid, _mode) in files.items():
        parts = target.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            # The file's own directory is its owner's (KubeVirt's /disk/ is 107's), the ones above root's.
            dirs["/".join(parts[:i])] = uid if i == len(parts) else dirs.get("/".join(parts[:i]), 0)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, uid in sorted(dirs.items()):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode, entry.uid, entry.gid, entry.mtime = tarfile.DIRTYPE, 0o555, uid, uid, 0
            archive.addfile(entry)
        for target, (source, uid, mode) in sorted(files.items()):
            entry = tarfile.TarInfo(target.strip("/"))
            entry.size, entry.mode, entry.uid, entry.gid, entry.mtime = source.stat().st_size, mode, uid, uid, 0
            with open(source, "rb") as f:
                archive.addfile(entry, f)


def package(files: dict[str, tuple[Path, int, int]], key: str) -> Path:
    """An OCI image layout holding ``files`` as one layer, cached under ``~/.cache/virtops/images/<key>``.

    Built with umoci: ``init``, ``new``, ``raw add-layer`` (it compresses the tar), so the image is
    whatever a well-kept tool writes, not hand-made JSON.
    """
    root = cache_root() / "images"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{key}-{PACKAGING}"
    if (out / "index.json").exists():
        return out
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another lab may be packaging the same image
        if (out / "index.json").exists():
            return out
        started = time.monotonic()
        size = sum(source.stat().st_size for source, _uid, _mode in files.values())
        _say(f"packaging {', '.join(sorted(files))} ({size / 2**20:.1f} MiB) as an OCI image")
        tmp = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=root))
        try:
            layer = tmp / "layer.tar"
            _layer_tar(files, layer)
            layout = tmp / "layout"
            _run(["umoci", "init", "--layout", str(layout)], "umoci init")
            _run(["umoci", "new", "--image", f"{layout}:{_TAG}"], "umoci new")
            _run(["umoci", "raw", "add-layer", "--image", f"{layout}:{_TAG}", str(layer)], "umoci raw add-layer")
            layout.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _say(f"packaged in {time.monotonic() - started:.1f}s -> {out}")
    return out


def disk_format(disk: Path) -> str:
    """qcow2 or raw, as qemu-img sees it; a qcow2 with a backing file is refused (KubeVirt's rule)."""
    info = json.loads(_run(["qemu-img", "info", "--output=json", str(disk)], f"qemu-img info {disk}").stdout)
    fmt = info.get("format")
    if fmt not in ("qcow2", "raw"):
        raise RegistryError(f"{disk}: a containerDisk is qcow2 or raw, not {fmt}")
    if info.get("backing-filename"):
        raise RegistryError(f"{disk}: a containerDisk has no backing file (this one has {info['backing-filename']})")
    return str(fmt)


def container_disk_layout(disk: Path, key: str | None = None) -> Path:
    """``disk`` packaged as a KubeVirt containerDisk: ``/disk/<file name>``, 107:107, 0440 (cached by ``key``,
    else by the file's content)."""
    disk = Path(disk)
    disk_format(disk)
    files = {f"/disk/{disk.name}": (disk, DISK_UID, DISK_MODE)}
    return package(files, f"disk-{key}" if key else f"disk-{_file_key({k: v[0] for k, v in files.items()})}")


@dataclass(frozen=True)
class Registry:
    """A registry this host can push to: ``address`` (``127.0.0.1:PORT``) and the CA directory to trust."""

    address: str
    ca_dir: Path
    auth_file: Path | None = None  # containers-auth.json for a registry that wants credentials

    @classmethod
    def of_lab(cls, state_dir: Path | str) -> Registry:
        """The registry of the lab whose state dir this is (``virtops-lab status --json`` names the address)."""
        state = json.loads((Path(state_dir) / "state.json").read_text())
        if not state.get("registry"):
            raise RegistryError(f"the lab in {state_dir} runs no registry")
        return cls(state["registry"], registry_dir(Path(state_dir)) / "certs")

    def _auth(self, flag: str) -> list[str]:
        return [flag, str(self.auth_file)] if self.auth_file else []

    def reference(self, repository: str, tag: str) -> str:
        return f"{self.address}/{repository}:{tag}"

    def has(self, reference: str) -> bool:
        """Whether the registry serves this reference (``skopeo inspect``); other errors raise."""
        cmd = ["skopeo", "inspect", "--raw", "--cert-dir", str(self.ca_dir), *self._auth("--authfile"),
               f"docker://{reference}"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            return True
        except FileNotFoundError as exc:
            raise RegistryError("skopeo is not installed (hack/setup.sh installs it from Debian)") from exc
        except subprocess.CalledProcessError as exc:
            if "manifest unknown" in exc.stderr or "name unknown" in exc.stderr:
                return False
            raise RegistryError(f"skopeo inspect {reference}: {exc.stderr.strip()[-1500:]}") from exc

    def push(self, layout: Path, reference: str) -> None:
        """Copy an OCI layout's image to ``reference`` (skopeo copy)."""
        started = time.monotonic()
        _run(["skopeo", "copy", "--quiet", "--dest-cert-dir", str(self.ca_dir), *self._auth("--dest-authfile"),
              f"oci:{layout}:{_TAG}", f"docker://{reference}"], f"pushing {reference}")
        _say(f"pushed {reference} in {time.monotonic() - started:.1f}s")

    def ensure(self, repository: str, tag: str, layout: Path) -> tuple[str, bool]:
        """Push ``layout`` as ``repository:tag`` unless the registry has that tag; (reference, pushed)."""
        reference = self.reference(repository, tag)
        if self.has(reference):
            return reference, False
        self.push(layout, reference)
        return reference, True

    def ensure_container_disk(self, repository: str, tag: str, disk: Path, key: str | None = None) -> str:
        """Package ``disk`` (qcow2 without backing file, or raw) as a containerDisk and push it when missing.

        ``key`` names the build's inputs (cheaper than hashing a large disk); without it the content is
        hashed. Returns the reference a VMI's ``containerDisk.image`` uses.
        """
        return self.ensure(repository, tag, container_disk_layout(disk, key))[0]

    def ensure_files(self, repository: str, tag: str, files: dict[str, Path], key: str) -> str:
        """Push an image of plain files (root-owned, 0644), e.g. a kernelBoot image's kernel and initrd."""
        layout = package({target: (source, 0, 0o644) for target, source in files.items()}, f"files-{key}")
        return self.ensure(repository, tag, layout)[0]
