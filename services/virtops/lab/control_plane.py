"""Start, inspect and stop the lab's etcd and kube-apiserver on loopback.

``up`` is idempotent: a healthy lab is left alone and reported unchanged.
``down`` stops exactly the processes ``up`` recorded (pid plus kernel start
time, so a recycled pid is never signalled) and removes the state directory,
which holds everything the lab wrote: certificates, etcd data, registry blobs, logs, kubeconfig.

The lab's OCI registry (``virtops.lab.registry``) runs like etcd; ``up`` pushes the project's guest
(``virtops/busybox-guest``) into it when it lacks it, and the Debian 12 cloud image (``virtops/debian:12``)
when asked (``debian_image=True``, as ``virtops-lab up`` does; tests push it with ``push_debian`` only where
they boot it: 191 MiB and about 2 s per lab).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virtops.lab import build, pki
from virtops.lab import registry as lab_registry
from virtops.lab.versions import ETCD_VERSION, KUBERNETES_VERSION, KUBEVIRT_VERSION
from virtops.node.api import DEFAULT_CLIENT_NAME as NODE_API_CLIENT_NAME
from virtops.pki import write_private

READY_TIMEOUT = 180.0
# Started in this order, stopped in reverse: nothing ever loses what it depends on.
COMPONENTS = ("etcd", "registry", "kube-apiserver", "kube-controller-manager")
STOP_TIMEOUT = 5.0


class LabError(Exception):
    """The lab could not be started, inspected or stopped."""


@dataclass
class LabInfo:
    name: str
    state_dir: str
    kubeconfig: str
    server: str
    ports: dict[str, int]
    pids: dict[str, dict[str, int]]
    versions: dict[str, str] = field(default_factory=dict)
    registry: str = ""  # 127.0.0.1:PORT of the lab's OCI registry
    changed: bool = False
    healthy: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def default_state_dir(name: str) -> Path:
    base = os.environ.get("VIRTOPS_LAB_ROOT") or "/tmp/virtops-lab"
    return Path(base) / name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ticks(pid: int, *, zombies: bool = False) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone.

    A zombie counts as gone unless ``zombies`` is true (it still holds its pid).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces or parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z" and not zombies:
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    """Wait until the process has fully exited and is reaped, so its ports are free.

    A Go program's leader thread turns zombie before its other threads finish;
    when the process is our child (the pytest fixture's case) we reap it, else
    its parent (init) does and we only watch /proc.
    """
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _destroy_domains_of(nodes: list[str]) -> None:
    """Agents keep their domains across restarts by design; a lab that goes down takes its guests along.

    Only domains carrying the agent's metadata marker for one of these nodes are touched.
    """
    try:
        from virtops.agent.hypervisor import LibvirtHypervisor
    except ImportError:  # no libvirt-python: no agents could have run
        return
    hypervisor = LibvirtHypervisor()
    try:
        for name in hypervisor.list_names():
            marker = hypervisor.marker(name)
            if marker is not None and marker.node in nodes:
                _say(f"destroying domain {name} of lab node {marker.node}")
                hypervisor.stop(name, 0)
    except Exception as exc:  # noqa: BLE001 - libvirtd gone: nothing of ours can still run there
        _say(f"could not clean the lab's domains: {exc}")
    finally:
        hypervisor.close()


def _say(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


def stop_process(component: str, pid: int, ticks: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process started at ``ticks`` (a pid taken by another process meanwhile is left alone), SIGKILL
    it after ``timeout`` seconds, and wait until it is reaped."""
    if _start_ticks(pid, zombies=True) != ticks:
        return  # already gone, or the pid is someone else's now
    if _start_ticks(pid) == ticks:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _start_ticks(pid) == ticks and time.monotonic() < deadline:
            time.sleep(0.05)
        if _start_ticks(pid) == ticks:
            _say(f"{component} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; killing it")
            os.kill(pid, signal.SIGKILL)
            while _start_ticks(pid) == ticks:
                time.sleep(0.05)
    _reap(pid)


class ControlPlane:
    """The lab control plane named ``name`` with its state under ``state_dir``."""

    def __init__(self, name: str = "default", state_dir: str | os.PathLike[str] | None = None,
                 stack: bool = False, nodes: int = 1, lease_seconds: int = 40, node_grace_seconds: int = 20,
                 debian_image: bool = False) -> None:
        """``stack`` also runs our controller and ``nodes`` node agents (names lab-node-1..N) on this host;
        ``debian_image`` makes ``up`` push ``virtops/debian:12`` too (building it first when the cache lacks it)."""
        self.name = name
        self.debian_image = debian_image
        self.stack = stack
        self.nodes = nodes
        # How fast a dead agent is noticed: node lease duration, then the controller's grace before Failed.
        self.lease_seconds = lease_seconds
        self.node_grace_seconds = node_grace_seconds
        self.state_dir = Path(state_dir) if state_dir else default_state_dir(name)
        self.state_file = self.state_dir / "state.json"

    # --- public API -------------------------------------------------------
    def up(self) -> LabInfo:
        current = self._load()
        wanted_stack = not self.stack or "controller" in (current.pids if current else {})
        if current and wanted_stack and self._processes_alive(current) and self._ready(current):
            current.healthy, current.changed = True, False
            self._push_images()  # when missing: e.g. a build failed at the first up
            return current
        if current or self.state_dir.exists():
            _say(f"lab {self.name!r} is not healthy; clearing it before a fresh start")
            self.down()

        binaries = build.ensure_binaries()
        self.state_dir.mkdir(parents=True, mode=0o700)
        # qemu runs as its own user and opens the agents' files below (a kernel boot's kernel, disk images);
        # it may pass through but not list. pki/ and the kubeconfigs stay private (0700, 0600).
        self.state_dir.chmod(0o711)
        try:
            return self._start(binaries)
        except BaseException:
            self.down()  # nothing half-made stays behind
            raise

    def status(self) -> LabInfo | None:
        info = self._load()
        if info is None:
            return None
        info.healthy = self._processes_alive(info) and self._ready(info) and (
            not self.stack or "controller" in info.pids
        )
        return info

    def down(self) -> bool:
        """Stop what ``up`` started and remove the state dir; True when anything was there."""
        info = self._load()
        existed = self.state_dir.exists()
        if info:
            # Our services first (agents leave their domains to be cleaned below), then the control plane.
            services = [c for c in info.pids if c not in COMPONENTS]
            for component in services + list(reversed(COMPONENTS)):
                entry = info.pids.get(component)
                if entry:
                    stop_process(component, entry["pid"], entry["ticks"])
            agent_nodes = [c.removeprefix("agent-") for c in services if c.startswith("agent-")]
            if agent_nodes:
                _destroy_domains_of(agent_nodes)
        if existed:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return existed or info is not None

    def restart(self, component: str, while_down: Callable[[], None] | None = None, kill: bool = False) -> LabInfo:
        """Stop one running component and start it again with the same command line (for fault tests).

        ``kill`` stops it with SIGKILL instead of SIGTERM (a crash: no clean-up of its own).
        ``while_down`` runs between the stop and the start. The component starts again even when
        ``while_down`` raises (its error is raised after the start), so one failed fault test does not
        leave the lab without its API server for the tests after it. The API server is awaited until
        ready again.
        """
        info = self._load()
        entry = (info.pids if info else {}).get(component)
        if info is None or entry is None or _start_ticks(entry["pid"]) != entry["ticks"]:
            raise LabError(f"{component} is not running in lab {self.name!r}")
        argv = Path(f"/proc/{entry['pid']}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        if kill:
            os.kill(entry["pid"], signal.SIGKILL)
        stop_process(component, entry["pid"], entry["ticks"])
        try:
            if while_down is not None:
                while_down()
        finally:
            info.pids[component] = self._spawn(component, [arg.decode() for arg in argv])
            self._save(info)
            if component in ("etcd", "kube-apiserver"):
                self._wait_ready(info, time.monotonic())
        return info

    def agent_kubeconfig(self, node: str) -> str:
        """A kubeconfig for a node agent's own identity, bound only to services/virtops/agent/rbac.yaml.

        User ``system:virtops:node:<node>``, group ``virtops:nodes``: a client certificate from the lab's CA.
        """
        info = self._load()
        if info is None:
            raise LabError(f"lab {self.name!r} is not up")
        self._apply_agent_rbac(info)
        return self._client_kubeconfig(info, f"agent-{node}", f"system:virtops:node:{node}", "virtops:nodes")

    def user_kubeconfig(self, stem: str, user: str, group: str | None = None) -> str:
        """A kubeconfig ``<stem>.kubeconfig`` for ``user`` (and ``group``): a client certificate from the lab's CA.

        No RBAC is bound here; e.g. the cluster role binds ``system:virtops:controller``.
        """
        info = self._load()
        if info is None:
            raise LabError(f"lab {self.name!r} is not up")
        return self._client_kubeconfig(info, stem, user, group)

    def registry(self) -> lab_registry.Registry:
        """The lab's registry (address and the CA directory that trusts it): push images with it."""
        return lab_registry.Registry.of_lab(self.state_dir)

    def node_api_files(self, node: str) -> dict[str, str]:
        """The node API's files for an agent of ``node`` (serving certificate naming the node, its key, the CA
        of the subresource API's client certificate), as the node_agent role's ``node_agent_api_*_src``."""
        crt, key = pki.issue_node_api_server(self.state_dir / "pki", node)
        return {"cert": str(crt), "key": str(key), "client_ca": str(self.state_dir / "pki" / "ca.crt")}

    def node_api_agent_args(self, node: str) -> list[str]:
        """virtops-agent flags that serve the node API of ``node`` on a free loopback port."""
        files = self.node_api_files(node)
        return ["--node-api-address=127.0.0.1:0", f"--node-api-tls-cert-file={files['cert']}",
                f"--node-api-tls-key-file={files['key']}", f"--node-api-client-ca-file={files['client_ca']}"]

    def node_api_client_files(self) -> dict[str, str]:
        """The subresource API's client certificate for the node APIs (CN virtops-subresource-api), its key and
        the CA of the agents' serving certificates."""
        p = self.state_dir / "pki"
        if not (p / "subresource-api-client.crt").exists():
            pki.issue_client(p, "subresource-api-client", NODE_API_CLIENT_NAME)
        return {"cert": str(p / "subresource-api-client.crt"), "key": str(p / "subresource-api-client.key"),
                "ca": str(p / "ca.crt")}

    # --- internals --------------------------------------------------------
    def _client_kubeconfig(self, info: LabInfo, stem: str, user: str, group: str | None) -> str:
        pki.issue_client(self.state_dir / "pki", stem, user, org=group)
        path = str(self.state_dir / f"{stem}.kubeconfig")
        self._write_kubeconfig(info, path, stem)
        return path

    def _apply_agent_rbac(self, info: LabInfo) -> None:
        import yaml

        from virtops.agent import RBAC_FILE
        from virtops.kube import ConflictError, KubeClient, path_for

        client = KubeClient.from_kubeconfig(info.kubeconfig)
        try:  # kube-apiserver makes it soon after start; the Role in it must not wait for that
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-node-lease"}}
            client.create(path_for("v1", "namespaces"), namespace)
        except ConflictError:
            pass
        for obj in yaml.safe_load(RBAC_FILE.read_text())["items"]:
            plural = obj["kind"].lower() + "s"
            meta = obj["metadata"]
            collection = path_for(obj["apiVersion"], plural, meta.get("namespace"))
            try:
                client.create(collection, obj)
            except ConflictError:
                client.update(path_for(obj["apiVersion"], plural, meta.get("namespace"), meta["name"]), obj)

    def _load(self) -> LabInfo | None:
        try:
            return LabInfo(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LabError(f"unreadable lab state {self.state_file}: {exc}") from exc

    def _save(self, info: LabInfo) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(info.to_json())
        tmp.replace(self.state_file)

    @staticmethod
    def _processes_alive(info: LabInfo) -> bool:
        return all(c in info.pids for c in COMPONENTS) and all(
            _start_ticks(e["pid"]) == e["ticks"] for e in info.pids.values()
        )

    def _ssl_context(self, info: LabInfo) -> ssl.SSLContext:
        pki_dir = Path(info.state_dir) / "pki"
        ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
        return ctx

    def _ready(self, info: LabInfo) -> bool:
        try:
            with urllib.request.urlopen(
                f"{info.server}/readyz", context=self._ssl_context(info), timeout=5
            ) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _spawn(self, component: str, argv: list[str]) -> dict[str, int]:
        log = open(self.state_dir / "logs" / f"{component}.log", "ab")
        with log:
            # Its own session: a Ctrl-C in the caller's terminal does not reach it.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        ticks = None
        for _attempt in range(100):
            ticks = _start_ticks(proc.pid)
            if ticks is not None:
                break
            time.sleep(0.01)
        if ticks is None:
            raise LabError(f"{component} exited at once; see {self.state_dir}/logs/{component}.log")
        return {"pid": proc.pid, "ticks": ticks}

    def _start(self, binaries: dict[str, Path]) -> LabInfo:
        started = time.monotonic()
        sd = self.state_dir
        (sd / "logs").mkdir()
        # kubectl of the lab's own release and KubeVirt's virtctl, for PATH=$STATE_DIR/bin:$PATH
        (sd / "bin").mkdir()
        for tool in ("kubectl", "virtctl"):
            (sd / "bin" / tool).symlink_to(binaries[tool])
        pki_dir = sd / "pki"
        pki.write_pki(pki_dir)
        ports = {"etcd_client": free_port(), "etcd_peer": free_port(), "apiserver": free_port(),
                 "registry": free_port()}
        server = f"https://127.0.0.1:{ports['apiserver']}"
        info = LabInfo(
            name=self.name,
            state_dir=str(sd),
            kubeconfig=str(sd / "kubeconfig"),
            server=server,
            ports=ports,
            pids={},
            versions={"kubernetes": KUBERNETES_VERSION, "etcd": ETCD_VERSION, "kubevirt": KUBEVIRT_VERSION},
            registry=f"127.0.0.1:{ports['registry']}",
            changed=True,
        )
        self._save(info)  # recorded before anything runs, so down() can always clean up

        etcd_client = f"http://127.0.0.1:{ports['etcd_client']}"
        etcd_peer = f"http://127.0.0.1:{ports['etcd_peer']}"
        info.pids["etcd"] = self._spawn(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=lab",
                f"--data-dir={sd / 'etcd'}",
                f"--listen-client-urls={etcd_client}",
                f"--advertise-client-urls={etcd_client}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=lab={etcd_peer}",
                "--log-level=warn",
                # A throw-away lab: durability across power loss buys nothing here.
                "--unsafe-no-fsync",
            ],
        )
        self._save(info)
        info.pids["registry"] = self._spawn("registry", lab_registry.prepare(sd, ports["registry"]))
        self._save(info)
        p = pki_dir
        info.pids["kube-apiserver"] = self._spawn(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                "--authorization-mode=RBAC",
                # Service IPs are only allocated, never routed: nothing here sends traffic to them.
                "--service-cluster-ip-range=10.96.0.0/24",
                # No endpoints for the 'kubernetes' service: a loopback endpoint is invalid.
                "--endpoint-reconciler-type=none",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                # The aggregation layer, for APIServices such as subresources.kubevirt.io.
                f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
                "--enable-aggregator-routing=false",
            ],
        )
        self._save(info)
        # kube-controller-manager gives the API server 10 s to turn healthy and exits after that; on a loaded
        # machine kube-apiserver can take longer (lab starts failed with "kube-controller-manager exited").
        self._wait_ready(info, started)
        self._write_kubeconfig(info, info.kubeconfig, "admin")
        controller_kubeconfig = str(sd / "controller-manager.kubeconfig")
        self._write_kubeconfig(info, controller_kubeconfig, "controller-manager")
        info.pids["kube-controller-manager"] = self._spawn(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                f"--kubeconfig={controller_kubeconfig}",
                "--secure-port=0",  # no listener: nothing scrapes it in the lab
                "--leader-elect=false",
                "--controllers=namespace-controller,garbage-collector-controller,"
                "clusterrole-aggregation-controller,serviceaccount-controller,serviceaccount-token-controller",
                "--use-service-account-credentials=true",  # one identity per controller, as kubeadm does
                f"--service-account-private-key-file={p / 'sa.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
            ],
        )
        self._save(info)
        self._wait_ready(info, started)
        self._wait_registry(info)
        self._push_images()
        if self.stack:
            self._start_stack(info)
        info.healthy = True
        self._save(info)
        return info

    def _start_stack(self, info: LabInfo) -> None:
        """Our controller and node agents as lab processes (the roles install them on real hosts)."""
        py = sys.executable
        sd = self.state_dir
        node_api = self.node_api_client_files()
        info.pids["controller"] = self._spawn("controller", [
            py, "-m", "virtops.controller.main", f"--kubeconfig={info.kubeconfig}",
            f"--state-dir={sd / 'controller'}", f"--identity=lab-{self.name}",
            f"--node-grace-seconds={self.node_grace_seconds}",
            f"--node-api-client-cert-file={node_api['cert']}", f"--node-api-client-key-file={node_api['key']}",
            f"--node-api-ca-file={node_api['ca']}",
        ])
        self._save(info)
        for index in range(1, self.nodes + 1):
            # Node names are unique per lab: agents of two labs share this host's libvirtd, and an agent
            # removes domains of its node name that its cluster does not know.
            node = f"lab-node-{index}" if self.name == "default" else f"{self.name}-node-{index}"
            # Each agent has its own identity with only the agent's role, never the admin's credentials.
            kubeconfig = self.agent_kubeconfig(node)
            info.pids[f"agent-{node}"] = self._spawn(f"agent-{node}", [
                py, "-m", "virtops.agent.main", f"--kubeconfig={kubeconfig}", f"--node-name={node}",
                f"--state-dir={sd / 'agents' / node}", f"--image-cache={sd / 'images' / node}",
                f"--registry-ca-dir={lab_registry.registry_dir(sd) / 'certs'}", "--pull-backoff-max-seconds=5",
                f"--labels=virtops.kubevirt.io/lab={self.name}",
                # Lab capacity: room for many tiny guests; the scheduler still enforces it.
                "--cpu=4", "--memory=8Gi",
                f"--heartbeat-seconds={max(1, self.lease_seconds // 4)}",
                f"--lease-duration-seconds={self.lease_seconds}",
                *self.node_api_agent_args(node),
            ])
            self._save(info)

    def _wait_registry(self, info: LabInfo) -> None:
        entry = info.pids["registry"]
        lab_registry.wait_ready(info.registry, Path(info.state_dir) / "pki" / "ca.crt",
                                lambda: _start_ticks(entry["pid"]) == entry["ticks"])

    def push_debian(self) -> str:
        """``virtops/debian:12`` in the lab's registry (pushed when it lacks it); its reference.

        For the tests that boot it: a lab started without ``debian_image`` pushes it on first use.
        """
        from virtops.lab.debian_image import push_debian

        return push_debian(self.registry())

    def _push_images(self) -> None:
        """The project's guest as ``virtops/busybox-guest`` (and, if asked, ``virtops/debian:12``) in the lab's
        registry, when it lacks them."""
        from virtops.lab.debian_image import DebianImageError
        from virtops.lab.guest import GuestBuildError, push_guest

        try:
            push_guest(self.registry())
        except (GuestBuildError, lab_registry.RegistryError) as exc:  # the lab still runs diskless VMIs
            _say(f"the guest image is not in the registry: {exc}")
        if self.debian_image:
            try:
                self.push_debian()
            except (DebianImageError, lab_registry.RegistryError) as exc:  # the lab runs without it
                _say(f"the Debian image is not in the registry: {exc}")

    def _wait_ready(self, info: LabInfo, started: float) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        next_note = time.monotonic() + 5
        while time.monotonic() < deadline:
            dead = [c for c, e in info.pids.items() if _start_ticks(e["pid"]) != e["ticks"]]
            if dead:  # of those started so far
                raise LabError(f"{', '.join(dead)} exited; see {info.state_dir}/logs/")
            if self._ready(info):
                _say(f"kube-apiserver ready at {info.server} after {time.monotonic() - started:.1f}s")
                return
            if time.monotonic() >= next_note:
                _say(f"waiting for {info.server}/readyz ({time.monotonic() - started:.0f}s)")
                next_note += 5
            time.sleep(0.2)
        raise LabError(f"kube-apiserver not ready after {READY_TIMEOUT:.0f}s; see {info.state_dir}/logs/")

    def _write_kubeconfig(self, info: LabInfo, path: str, user: str) -> None:
        import base64

        def b64(name: str) -> str:
            return base64.b64encode((Path(info.state_dir) / "pki" / name).read_bytes()).decode()

        ctx = f"virtops-lab-{self.name}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": ctx, "cluster": {"server": info.server, "certificate-authority-data": b64("ca.crt")}}
            ],
            "users": [
                {
                    "name": f"{ctx}-{user}",
                    "user": {
                        "client-certificate-data": b64(f"{user}.crt"),
                        "client-key-data": b64(f"{user}.key"),
                    },
                }
            ],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": f"{ctx}-{user}"}}],
            "current-context": ctx,
        }
        write_private(path, json.dumps(config, indent=2).encode())  # JSON is valid YAML; no extra dependency
