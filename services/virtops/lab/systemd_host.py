"""A fresh Debian 12 host with systemd as PID 1, reached over SSH: the ``host`` molecule scenario's machine.

A ``systemd-nspawn --boot`` container of a tree mmdebstrap installs (``lab/systemd-host/packages`` plus the
``node_agent`` role's ``node_agent_packages``, so the role's package step finds them installed and is checked
without a download), with a wheelhouse of the services package's dependencies under
``/var/cache/virtops-wheels`` (the scenario installs with ``--no-index``). The container shares the host's
network (loopback only is used: its sshd listens on ``127.0.0.1:PORT``; the agent reaches the lab's API on
loopback), has its own PID, mount and UTS namespaces, its own ``/run`` and its own libvirtd.

The tree is built once and cached as ``~/.cache/virtops/systemd-host/<key>/root.tar`` (the key hashes the
package lists and ``RECIPE``); each host unpacks a fresh copy under ``/tmp/virtops-host/<name>/root``.

    python -m virtops.lab.systemd_host up NAME PORT PUBKEY_FILE   # prints the root directory
    python -m virtops.lab.systemd_host down NAME
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

from virtops.lab.build import cache_root
from virtops.lab.control_plane import _start_ticks, stop_process
from virtops.lab.debian_image import DPKG_FILTERS, SOURCES, SUITE
from virtops.lab.guest import lab_source_dir

RECIPE = "virtops-systemd-host-1"
HOSTS_ROOT = Path("/tmp/virtops-host")
WHEELS = "/var/cache/virtops-wheels"
BOOT_TIMEOUT_SECONDS = 120
# An orderly shutdown of the container (its agent, libvirtd and guests) takes a few seconds here.
SHUTDOWN_TIMEOUT_SECONDS = 30.0


class SystemdHostError(Exception):
    """The host could not be built or booted."""


def _say(msg: str) -> None:
    print(f"[systemd host] {msg}", file=sys.stderr, flush=True)


def _collection_root() -> Path:
    return Path(__file__).resolve().parents[3]


def packages() -> list[str]:
    """This image's own packages and the node_agent role's, in that order, without repeats."""
    own = (lab_source_dir("systemd-host", "VIRTOPS_SYSTEMD_HOST_SRC") / "packages").read_text().splitlines()
    defaults = yaml.safe_load((_collection_root() / "roles" / "node_agent" / "defaults" / "main.yml").read_text())
    names = [n.strip() for n in own if n.strip() and not n.lstrip().startswith("#")]
    return list(dict.fromkeys(names + list(defaults["node_agent_packages"])))


def _requirements() -> list[str]:
    """The services package's dependencies with the node extra, and what builds it (setuptools)."""
    with open(_collection_root() / "services" / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    deps = project["project"]["dependencies"] + project["project"].get("optional-dependencies", {}).get("node", [])
    return [*deps, *project["build-system"]["requires"], "wheel"]


def image_key() -> str:
    digest = hashlib.sha256(f"{RECIPE}\n{SUITE}\n".encode())
    digest.update("\n".join((*SOURCES, *DPKG_FILTERS, *packages(), *_requirements())).encode())
    return digest.hexdigest()[:16]


def _build(out: Path) -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out.parent))
    try:
        wheels = work / "wheels"
        _say(f"building wheels of {len(_requirements())} requirements (pip, from PyPI)")
        # libvirt-python has no wheel on PyPI: pip builds it here, against the same Debian's libvirt-dev.
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
                        *_requirements()], check=True, stdout=sys.stderr)
        names = packages()
        _say(f"mmdebstrap {SUITE} with {len(names)} packages (downloads about 400 MB)")
        hooks = [f'mkdir -p "$1{WHEELS}"', f'cp {wheels}/*.whl "$1{WHEELS}/"',
                 # libvirt's default NAT network would make a bridge with a private-range address on the shared
                 # network: the agent does not use it (guests use user-mode networking).
                 'rm -f "$1/etc/libvirt/qemu/networks/autostart/default.xml"',
                 # nspawn mounts the host's cgroup v1 controllers read-only: libvirt would fail every domain start
                 # ("Failed to create v1 controller cpu for group"). A host of its own has them; this one cannot.
                 'echo "cgroup_controllers = [ ]" >> "$1/etc/libvirt/qemu.conf"',
                 # A container boots no kernel: nothing to wait for from udev's settle or a getty on a tty.
                 'systemctl --root="$1" mask systemd-udev-settle.service getty@tty1.service']
        cmd = ["mmdebstrap", "--variant=apt", f"--include={','.join(names)}",
               *(f"--dpkgopt={f}" for f in DPKG_FILTERS), *(f"--customize-hook={h}" for h in hooks),
               SUITE, str(work / "root.tar"), *SOURCES]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        (work / "out").mkdir()
        (work / "root.tar").rename(work / "out" / "root.tar")
        (work / "out").rename(out)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemdHostError(f"building the systemd host's tree failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say(f"built in {time.monotonic() - started:.0f}s -> {out}")


def ensure_tree() -> Path:
    """The cached root.tar for today's inputs, built first (a few minutes, once) when missing."""
    root = cache_root() / "systemd-host"
    root.mkdir(parents=True, exist_ok=True)
    out = root / image_key()
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "root.tar").exists():
            _build(out)
    return out / "root.tar"


def _ssh_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def up(name: str, port: int, pubkey: str) -> Path:
    """Unpack a fresh host, let ``pubkey`` log in as root on 127.0.0.1:``port``, boot it; its root directory."""
    down(name)
    tree = ensure_tree()
    base = HOSTS_ROOT / name
    root = base / "root"
    root.mkdir(parents=True)
    _say(f"unpacking {tree.name} for {name}")
    subprocess.run(["tar", "-xf", str(tree), "-C", str(root)], check=True)
    (root / "etc" / "hostname").write_text(name + "\n")
    ssh = root / "root" / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(pubkey.strip() + "\n")
    (ssh / "authorized_keys").chmod(0o600)
    (root / "etc" / "ssh" / "sshd_config.d" / "virtops.conf").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n")
    log = open(base / "console.log", "w")
    # No systemd on this machine (PID 1 is not systemd): no machined to register with (--register=no), no manager
    # to make a scope for it (--keep-unit; without it nspawn fails with "Failed to open system bus").
    proc = subprocess.Popen(["systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
                             f"--machine={name}",
                             f"--directory={root}", "--console=passive"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    # With its start time: down() leaves alone a process that took the pid after this one ended.
    (base / "pid").write_text(f"{proc.pid} {_start_ticks(proc.pid, zombies=True)}\n")
    deadline = time.monotonic() + BOOT_TIMEOUT_SECONDS
    while not _ssh_answers(port):
        if proc.poll() is not None:
            raise SystemdHostError(f"systemd-nspawn exited ({proc.returncode}); see {base / 'console.log'}")
        if time.monotonic() > deadline:
            down(name)
            raise SystemdHostError(f"{name}'s sshd did not answer on 127.0.0.1:{port} within "
                                   f"{BOOT_TIMEOUT_SECONDS}s; see {base / 'console.log'}")
        time.sleep(0.5)
    _say(f"{name} is up: systemd is its PID 1, sshd on 127.0.0.1:{port}")
    return root


def down(name: str) -> None:
    """Power the host off (nspawn turns SIGTERM into an orderly shutdown), then remove its files."""
    base = HOSTS_ROOT / name
    pid_file = base / "pid"
    if pid_file.exists():
        pid, ticks = (int(field) for field in pid_file.read_text().split())
        stop_process(f"systemd-nspawn {name}", pid, ticks, timeout=SHUTDOWN_TIMEOUT_SECONDS)
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["up"] and len(argv) == 4:
        print(up(argv[1], int(argv[2]), Path(argv[3]).read_text()))
        return 0
    if argv[:1] == ["down"] and len(argv) == 2:
        down(argv[1])
        return 0
    print(__doc__.splitlines()[-2].strip() + "\n" + __doc__.splitlines()[-1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
