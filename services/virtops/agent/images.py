"""Container images on a node: KubeVirt containerDisks and kernel boot images, pulled from OCI registries.

Pulled with ``skopeo`` (containers/image: registry protocol, auth, TLS) and unpacked with ``umoci`` (OCI
layers, whiteouts); nothing here speaks registry HTTP itself. The cache (``image_cache`` of the agent's
settings) is shared by every VMI of the node and keyed by the image's manifest digest::

    <cache>/sha256/<hex>/rootfs/...       the image's file system (a containerDisk's disk in rootfs/disk/)
    <cache>/sha256/<hex>/meta.json        reference, digest, size; its mtime is the last use
    <cache>/refs/<hash of reference>.json the digest a tag resolved to (for imagePullPolicy IfNotPresent)

Each VMI gets its own qcow2 overlay on the cached disk, so the cache is never written by a guest.

Garbage collection (``collect``): after every pull, entries that no VMI of the node uses are removed,
least recently used first, until the cache holds at most ``image_cache_max_bytes`` (default 20Gi);
an entry in use is never removed, even above the bound.

KubeVirt's rules, kept here: ``imagePullPolicy`` defaults to Always for ``:latest`` or no tag (and no
digest), else IfNotPresent; a containerDisk is the single file under ``/disk/`` (or ``path``), qcow2
without a backing file, or raw.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("virtops.agent.images")

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


class ImagePullError(Exception):
    """The image cannot be pulled now (unreachable registry, unknown image, refused credentials): retried."""


class BadImageError(Exception):
    """The image was pulled but is not what the VMI needs (no disk, a corrupt disk): never retried."""


def default_pull_policy(image: str) -> str:
    """KubeVirt's (and Kubernetes') default: Always for ``:latest`` or no tag, IfNotPresent otherwise."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _repository(image: str) -> str:
    """The reference without its tag or digest: ``host:5000/a/b:1`` -> ``host:5000/a/b``."""
    if "@" in image:
        return image.split("@", 1)[0]
    head, sep, last = image.rpartition("/")
    return f"{head}{sep}{last.partition(':')[0]}"


def skopeo_reason(stderr: str) -> str:
    """The registry's reason from skopeo's error output, without its log prefix or the repeated image name."""
    found = _MSG.findall(stderr)
    lines = stderr.strip().splitlines()
    text = found[-1].replace('\\"', '"') if found else (lines[-1] if lines else "skopeo failed")
    text = re.sub(r'^Error parsing image name "[^"]*": ', "", text)
    text = re.sub(r"^(initializing source \S+|reading manifest \S+ in \S+): ", "", text)
    return text[:500]


@dataclass(frozen=True)
class CachedImage:
    digest: str
    rootfs: Path
    pulled: bool  # False when the cache had it already
    # Pulled with a pull secret: another VMI may use the cached copy only after the registry accepted its own
    # credentials for it (as kubelet's "ensure secret pulled images"), never just because it is on the node.
    private: bool = False


def disk_file(rootfs: Path, path: str | None) -> Path:
    """A containerDisk's disk: ``path`` inside the image, else the single file under /disk/."""
    if path:
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not path.startswith("/") or not parts or ".." in parts:
            raise BadImageError(f"path {path!r} is not an absolute file path inside the image")
        found = rootfs.joinpath(*parts)
        if not found.is_file() or found.is_symlink():
            raise BadImageError(f"the image has no file {path}")
        return found
    disk_dir = rootfs / "disk"
    files = sorted(p for p in disk_dir.iterdir() if p.is_file() and not p.is_symlink()) if disk_dir.is_dir() else []
    if len(files) != 1:
        what = "no file" if not files else f"{len(files)} files ({', '.join(p.name for p in files[:5])})"
        raise BadImageError(f"the image is not a containerDisk: /disk/ holds {what}, not exactly one disk")
    return files[0]


def disk_format(disk: Path) -> str:
    """qcow2 or raw, as qemu-img sees it (KubeVirt's rule: no backing file); BadImageError otherwise."""
    try:
        out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)], check=True, capture_output=True,
                             text=True).stdout
    except subprocess.CalledProcessError as exc:
        raise BadImageError(f"the disk {disk.name} is unreadable: {exc.stderr.strip()[-300:]}") from None
    info = json.loads(out)
    fmt = info.get("format")
    if fmt not in ("qcow2", "raw"):
        raise BadImageError(f"the disk {disk.name} is {fmt}, not qcow2 or raw")
    if info.get("backing-filename"):
        raise BadImageError(f"the disk {disk.name} is a qcow2 with a backing file, which a containerDisk cannot have")
    if fmt == "qcow2":  # metadata only: quick even for a large disk
        check = subprocess.run(["qemu-img", "check", "-U", "--output=json", str(disk)], capture_output=True, text=True,
                               check=False)  # qemu-img check exits 2/3 for corruption: read its JSON
        if check.returncode != 0:
            try:
                found = json.loads(check.stdout).get("corruptions", "some")
            except ValueError:
                found = "some"
            raise BadImageError(f"the qcow2 disk {disk.name} is corrupt ({found} corruptions found by qemu-img check)")
    return str(fmt)


class ImageCache:
    """The node's image cache; ``pull`` blocks (callers run it on the agent's pull workers)."""

    def __init__(self, root: Path | str, *, ca_dir: str = "", auth_file: str = "", max_bytes: int = 20 * 2**30,
                 timeout_seconds: float = 1800.0) -> None:
        self.root = Path(root)
        self.ca_dir = ca_dir
        self.auth_file = auth_file  # the node's own credentials (containers-auth.json), when set
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def clean_partial(self) -> None:
        """Remove what pulls interrupted by an agent restart left (half-downloaded layouts, GC leftovers)."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        for trash in (self.root / "sha256").glob("*.gc") if (self.root / "sha256").is_dir() else []:
            shutil.rmtree(trash, ignore_errors=True)

    # --- layout -------------------------------------------------------------
    def _entry(self, digest: str) -> Path:
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def _ref_file(self, image: str) -> Path:
        return self.root / "refs" / (hashlib.sha256(image.encode()).hexdigest()[:32] + ".json")

    def _lock(self, name: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

    def entries(self) -> list[Path]:
        base = self.root / "sha256"
        return sorted(p for p in base.iterdir() if (p / "meta.json").is_file()) if base.is_dir() else []

    def lookup(self, image: str) -> CachedImage | None:
        """What ``image`` resolved to when it was last pulled, if that is still cached (IfNotPresent)."""
        try:
            ref = json.loads(self._ref_file(image).read_text())
            digest = ref["digest"]
        except (OSError, ValueError, KeyError):
            return None
        entry = self._entry(digest)
        if not (entry / "meta.json").is_file():
            return None
        return CachedImage(digest, entry / "rootfs", pulled=False, private=bool(ref.get("private")))

    def touch(self, digest: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._entry(digest) / "meta.json")

    # --- pulling ------------------------------------------------------------
    def _skopeo(self, args: list[str], auth_file: str | None, cert_flag: str, auth_flag: str) -> str:
        cmd = ["skopeo", *args[:1]]
        if self.ca_dir:
            cmd += [cert_flag, self.ca_dir]
        auth = auth_file or self.auth_file
        if auth:
            cmd += [auth_flag, auth]
        cmd += args[1:]
        try:
            return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=self.timeout_seconds,
                                  stdin=subprocess.DEVNULL).stdout
        except FileNotFoundError:
            raise ImagePullError("skopeo is not installed on this node") from None
        except subprocess.TimeoutExpired:
            raise ImagePullError(f"no answer from the registry within {self.timeout_seconds:.0f}s") from None
        except subprocess.CalledProcessError as exc:
            raise ImagePullError(skopeo_reason(exc.stderr)) from None

    def resolve(self, image: str, auth_file: str | None = None) -> str:
        """The manifest digest the registry serves for ``image`` now (``skopeo inspect``)."""
        digest = self._skopeo(["inspect", "--format", "{{.Digest}}", f"docker://{image}"], auth_file,
                              "--cert-dir", "--authfile").strip()
        if not _DIGEST.match(digest):
            raise ImagePullError(f"the registry answered no usable digest for {image} ({digest[:80]!r})")
        return digest

    def pull(self, image: str, auth_file: str | None = None) -> CachedImage:
        """Resolve ``image`` and download it unless the cache holds that digest; remember the tag's digest."""
        digest = self.resolve(image, auth_file)
        with self._lock(digest):  # two VMIs asking for one image at once: the second finds the first's copy
            entry = self._entry(digest)
            pulled = False
            if not (entry / "meta.json").is_file():
                self._download(image, digest, auth_file, entry)
                pulled = True
            else:
                self.touch(digest)
        known = self.lookup(image)
        private = auth_file is not None or (known is not None and known.digest == digest and known.private)
        self._remember(image, digest, private)
        return CachedImage(digest, entry / "rootfs", pulled=pulled, private=private)

    def _remember(self, image: str, digest: str, private: bool) -> None:
        ref = self._ref_file(image)
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(ref.name + f".{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"image": image, "digest": digest, "private": private}))
        tmp.replace(ref)

    def _download(self, image: str, digest: str, auth_file: str | None, entry: Path) -> None:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="pull-", dir=self.root / "tmp"))
        try:
            layout = work / "layout"
            self._skopeo(["copy", "--quiet", f"docker://{_repository(image)}@{digest}", f"oci:{layout}:image"],
                         auth_file, "--src-cert-dir", "--src-authfile")
            try:
                # --rootless: no chown or mknod of the layers' owners and devices. The disk file is all a node uses,
                # and the agent's hardened unit has no CAP_CHOWN (chown is also in its filtered @privileged set).
                subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:image", str(work / "bundle")],
                               check=True, capture_output=True, text=True)
            except FileNotFoundError:
                raise ImagePullError("umoci is not installed on this node") from None
            except subprocess.CalledProcessError as exc:
                raise BadImageError(f"its layers cannot be unpacked: {exc.stderr.strip()[-300:]}") from None
            rootfs = work / "bundle" / "rootfs"
            size = 0
            for path in [rootfs, *rootfs.rglob("*")]:
                if path.is_symlink():
                    continue
                # qemu runs as its own user and reads the cached disks (the overlays' backing files).
                path.chmod(0o555 if path.is_dir() else 0o444)
                if path.is_file():
                    size += path.stat().st_blocks * 512
            staged = work / "entry"
            staged.mkdir(mode=0o755)
            rootfs.rename(staged / "rootfs")
            (staged / "meta.json").write_text(json.dumps({"image": image, "digest": digest, "size": size}))
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.parent.chmod(0o755)
            staged.rename(entry)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # --- garbage collection -------------------------------------------------
    def size(self, entry: Path) -> int:
        try:
            return int(json.loads((entry / "meta.json").read_text()).get("size", 0))
        except (OSError, ValueError):
            return 0

    def collect(self, in_use: set[str]) -> list[str]:
        """Remove unused entries, least recently used first, until the cache is within ``max_bytes``."""
        entries = self.entries()
        total = sum(self.size(e) for e in entries)
        removed = []
        by_age = sorted(entries, key=lambda e: (e / "meta.json").stat().st_mtime)
        for entry in by_age:
            if total <= self.max_bytes:
                break
            digest = f"sha256:{entry.name}"
            if digest in in_use:
                continue
            with self._lock(digest):
                total -= self.size(entry)
                trash = entry.with_name(entry.name + ".gc")
                entry.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            removed.append(digest)
            log.info("image cache: removed %s (unused; cache above %d bytes)", digest, self.max_bytes)
        return removed


@contextlib.contextmanager
def auth_file(directory: Path, dockerconfigjson: bytes) -> Iterator[str]:
    """A pull secret's ``.dockerconfigjson`` as a private file (0600) for skopeo, removed afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    fd, path = tempfile.mkstemp(prefix="auth-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(dockerconfigjson)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def wait_seconds(failures: int, cap: float) -> float:
    """Back-off after the n-th failed pull in a row: 1, 2, 4, ... seconds, at most ``cap``."""
    return float(min(cap, 2 ** max(0, failures - 1)))
