"""What the scenarios measure with: the lab, a VMI watch with timestamps, libvirt events, ansible-playbook runs,
process and kube-apiserver counters. All clocks are time.monotonic() (one clock for every process on Linux)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PLAYBOOKS = BENCH / "playbooks"
VENV_BIN = Path(sys.executable).parent
CRDS = ROOT / "roles" / "cluster" / "files" / "crds"
USER_ROLES = ROOT / "roles" / "cluster" / "files" / "rbac"
VMI_API = "kubevirt.io/v1"

Obj = dict[str, Any]


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- VMIs ------------------------------------------------------------------------------------------
def tiny_vmi(name: str, *, labels: dict[str, str] | None = None, node_selector: dict[str, str] | None = None) -> Obj:
    """A tiny diskless VMI: 64 MiB, 1 vCPU, no disk and no kernel, a user-mode network interface.

    The guest of examples/vmi-diskless.yaml, written out here so that an edit of the examples never changes
    what the bench measures: the bench measures the stack and the modules, not a guest's boot (100 booting
    guests would swamp two cores under TCG). Two bench-only changes: requests.cpu 10m because the lab agent
    offers 4 CPUs and KubeVirt's default request (vCPUs / 10) fits only 40 VMIs; terminationGracePeriodSeconds
    0 because a guest without an OS never answers ACPI.
    """
    spec: Obj = {
        "terminationGracePeriodSeconds": 0,
        "domain": {"cpu": {"cores": 1}, "resources": {"requests": {"memory": "64Mi", "cpu": "10m"}},
                   "devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
        "networks": [{"name": "default", "pod": {}}],
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return {"apiVersion": VMI_API, "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "labels": dict(labels or {}, bench="virtops")}, "spec": spec}


def phase(obj: Obj) -> str:
    return (obj.get("status") or {}).get("phase") or ""


def condition(obj: Obj, kind: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c.get("status")
    return None


# --- the lab ---------------------------------------------------------------------------------------
class Lab:
    """A lab of the bench's own (virtops.lab.ControlPlane), with the KubeVirt CRDs applied."""

    def __init__(self, name: str, stack: bool, reuse: bool = False, nodes: int = 1) -> None:
        from virtops.lab import ControlPlane

        self.plane = ControlPlane(name, stack=stack, nodes=nodes)
        self.nodes = nodes
        self.name = name
        self.stack = stack
        self.reuse = reuse  # a lab someone else started (virtops-lab up): used as it is, left running
        self.info: Any = None
        self.client: Any = None

    def __enter__(self) -> Lab:
        if self.reuse:
            self.info = self.plane.status()
            if not self.info or not self.info.healthy:
                raise RuntimeError(f"lab {self.name} is not up and healthy")
        else:
            what = f"stack: controller + {self.nodes} agent(s)" if self.stack else "control plane only"
            say(f"starting lab {self.name} ({what})")
            self.plane.down()  # a leftover of an interrupted run
            self.info = self.plane.up()
        try:
            self.kubectl("apply", "--server-side", "-f", str(CRDS), "-f", str(USER_ROLES))
            self.kubectl("wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io",
                         "crd/virtualmachines.kubevirt.io", "--timeout=60s")
            from virtops.kube.client import KubeClient

            self.client = KubeClient.from_kubeconfig(self.info.kubeconfig, user_agent="virtops-bench")
            if self.stack:
                self._wait_api_service()
                self._warm_up()
        except BaseException:
            if not self.reuse:
                self.plane.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.reuse:
            say(f"stopping lab {self.name}")
            self.plane.down()

    def warm_up(self) -> None:
        self._warm_up()

    def _warm_up(self) -> None:
        """One VMI through the whole stack before anything is measured: first connections, caches, leases."""
        ns = self.namespace("warm-up")
        with VmiWatch(self, ns) as watch:
            t0 = time.monotonic()
            self.client.create(self.vmi_path(ns), tiny_vmi("warm-up"))
            watch.wait(["warm-up"], lambda s: phase(s.obj) == "Running", after=t0, timeout=300)
            say(f"warm-up VMI Running after {time.monotonic() - t0:.1f}s")
        self.clean(ns)

    @property
    def kubeconfig(self) -> str:
        return self.info.kubeconfig

    @property
    def pki(self) -> Path:
        return Path(self.info.state_dir) / "pki"

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([f"{self.info.state_dir}/bin/kubectl", f"--kubeconfig={self.info.kubeconfig}", *args],
                              input=stdin, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def _wait_api_service(self) -> None:
        path = "/apis/apiregistration.k8s.io/v1/apiservices/v1.subresources.kubevirt.io"
        for _attempt in range(600):
            try:
                conds = (self.client.get(path).get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Available" and c.get("status") == "True" for c in conds):
                    return
            except Exception:  # noqa: BLE001 - not registered yet
                pass
            time.sleep(0.1)
        raise RuntimeError("APIService v1.subresources.kubevirt.io never became Available")

    def pid(self, component: str) -> int:
        state = json.loads((Path(self.info.state_dir) / "state.json").read_text())
        return int(state["pids"][component]["pid"])

    def agent_component(self) -> str:
        return self.agent_components()[0]

    def agent_components(self) -> list[str]:
        state = json.loads((Path(self.info.state_dir) / "state.json").read_text())
        return [c for c in state["pids"] if c.startswith("agent-")]

    # --- objects -----------------------------------------------------------------------------------
    def vmi_path(self, ns: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        from virtops.kube.client import path_for

        return path_for(VMI_API, "virtualmachineinstances", ns, name, sub)

    def namespace(self, name: str) -> str:
        from virtops.kube.client import ConflictError, path_for

        try:
            self.client.create(path_for("v1", "namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                                                              "metadata": {"name": name}})
        except ConflictError:
            pass
        return name

    def create_many(self, ns: str, bodies: list[Obj], workers: int = 8) -> None:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda b: self.client.create(self.vmi_path(ns), b), bodies))

    def count(self, ns: str, plural: str = "virtualmachineinstances") -> int:
        from virtops.kube.client import path_for

        items, _rv = self.client.list(path_for(VMI_API, plural, ns))
        return len(items)

    def clean(self, ns: str, attempts: int = 1200) -> None:
        """Delete the namespace's VMs and VMIs and wait (bounded) until the agent has let every VMI go."""
        from virtops.kube.client import path_for

        for plural in ("virtualmachines", "virtualmachineinstances"):
            self.client.request("DELETE", path_for(VMI_API, plural, ns))
        for _attempt in range(attempts):
            if self.count(ns, "virtualmachines") == 0 and self.count(ns) == 0:
                return
            time.sleep(0.1)
            if _attempt % 50 == 49:  # VMIs a VM's controller made after the first delete
                self.client.request("DELETE", path_for(VMI_API, "virtualmachineinstances", ns))
        raise RuntimeError(f"VMIs of namespace {ns} still there after {attempts * 0.1:.0f}s")

    def metrics(self) -> dict[tuple[str, str], float]:
        """kube-apiserver's apiserver_request_total summed by (verb, resource)."""
        text = self.client.pool.request("GET", self.info.server + "/metrics", headers=self.client.headers).data
        return request_totals(text.decode())


_LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def request_totals(text: str) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _sep, value = line.rpartition("} ")
        labels = dict(_LABELS.findall(labels_text))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        totals[(labels.get("verb", ""), resource)] += float(value)
    return dict(totals)


# --- watching --------------------------------------------------------------------------------------
@dataclass
class Seen:
    t: float
    type: str
    obj: Obj


class VmiWatch:
    """Every VMI event of one namespace with its arrival time, from a watch in a thread of its own."""

    def __init__(self, lab: Lab, ns: str) -> None:
        from virtops.kube.client import KubeClient

        self.client = KubeClient.from_kubeconfig(lab.kubeconfig, user_agent="virtops-bench-watch")
        self.lab = lab
        self.ns = ns
        self.events: dict[str, list[Seen]] = defaultdict(list)
        self.cv = threading.Condition()
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{ns}")

    def __enter__(self) -> VmiWatch:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the bench's VMI watch did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(15)

    def _run(self) -> None:
        path = self.lab.vmi_path(self.ns)
        rv = ""
        while not self.stopped.is_set():
            try:
                if not rv:
                    _items, rv = self.client.list(path)
                self.ready.set()
                for event in self.client.watch(path, {"resourceVersion": rv}, timeout_seconds=5):
                    now = time.monotonic()
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event.get("type") == "BOOKMARK":
                        continue
                    with self.cv:
                        self.events[obj["metadata"]["name"]].append(Seen(now, event["type"], obj))
                        self.cv.notify_all()
                    if self.stopped.is_set():
                        return
            except Exception as exc:  # noqa: BLE001 - 410 Gone or a hiccup: list again
                say(f"watch restarts: {str(exc)[:120]}")
                rv = ""
                time.sleep(0.2)

    def first(self, name: str, predicate: Callable[[Seen], bool], after: float = 0.0) -> float | None:
        with self.cv:
            for seen in self.events.get(name, []):
                if seen.t >= after and predicate(seen):
                    return seen.t
        return None

    def wait(self, names: list[str], predicate: Callable[[Seen], bool], after: float = 0.0,
             timeout: float = 600.0) -> dict[str, float]:
        """Arrival time of the first event matching predicate for each name (bounded by timeout, a safety net)."""
        deadline = time.monotonic() + timeout
        found: dict[str, float] = {}
        with self.cv:
            while True:
                for name in names:
                    if name not in found:
                        t = next((s.t for s in self.events.get(name, []) if s.t >= after and predicate(s)), None)
                        if t is not None:
                            found[name] = t
                if len(found) == len(names):
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [n for n in names if n not in found]
                    last = {n: phase(self.events[n][-1].obj) if self.events.get(n) else None for n in missing[:5]}
                    raise TimeoutError(f"{len(missing)} VMIs never matched; last phases {last}")
                self.cv.wait(min(left, 1.0))


class LibvirtEvents:
    """Domain lifecycle events (started, suspended, resumed) with arrival times, from libvirt's event loop."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        self.conn: Any = None
        self.available = False
        self.last_try = 0.0

    def start(self) -> LibvirtEvents:
        try:
            import libvirt
        except ImportError:
            return self
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors surface as exceptions; no stderr
        libvirt.virEventRegisterDefaultImpl()
        libvirt.virEventAddTimeout(500, lambda _timer, _opaque: None, None)  # wakes the loop to reconnect
        self._connect()
        threading.Thread(target=self._loop, daemon=True, name="libvirt-events").start()
        self.available = True
        return self

    def _connect(self) -> None:
        """(Re)open the connection: other test suites on this host restart libvirtd now and then."""
        import libvirt

        def on_event(_conn: Any, dom: Any, event: int, _detail: int, _opaque: Any) -> None:
            with self.lock:
                self.events.append((time.monotonic(), dom.name(), event))

        def on_close(_conn: Any, _reason: int, _opaque: Any) -> None:
            self.conn = None

        self.last_try = time.monotonic()
        try:
            conn = libvirt.openReadOnly("qemu:///system")
            conn.registerCloseCallback(on_close, None)
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
            self.conn = conn
            say("libvirt events: connected")
        except libvirt.libvirtError as exc:
            say(f"libvirt events: {exc} (retrying every 2s)")

    def _loop(self) -> None:
        import libvirt

        while True:
            libvirt.virEventRunDefaultImpl()
            if self.conn is None and time.monotonic() - self.last_try > 2:
                self._connect()

    def first(self, domain: str, event: int, after: float) -> float | None:
        with self.lock:
            return next((t for t, d, e in self.events if d == domain and e == event and t >= after), None)

    def wait(self, domain: str, event: int, after: float, attempts: int = 200) -> float | None:
        for _attempt in range(attempts):
            t = self.first(domain, event, after)
            if t is not None:
                return t
            time.sleep(0.01)
        return None


class BareDomain:
    """A running transient domain of the bench's tiny guest's size (64 MiB, 1 vCPU, TCG, no disk) that neither the
    agent nor anything else manages (no agent metadata): the floor for libvirt's own suspend and resume."""

    def __init__(self, name: str) -> None:
        import libvirt

        self.name = name
        self.conn = libvirt.open("qemu:///system")
        self.dom = self.conn.createXML(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os><devices><serial type='pty'/></devices></domain>", 0)

    def close(self) -> None:
        import libvirt

        try:
            self.dom.destroy()  # transient: gone once destroyed
        except libvirt.libvirtError:
            pass
        self.conn.close()


# --- ansible-playbook -----------------------------------------------------------------------------
@dataclass
class PlaybookRun:
    wall: float
    tasks: list[Obj] = field(default_factory=list)
    recap: dict[str, int] = field(default_factory=dict)

    def task(self, name: str) -> Obj:
        return next(t for t in self.tasks if t["name"] == name)

    def seconds(self, *names: str) -> float:
        """Summed duration of the named tasks (start of each to its last result)."""
        return sum(self.task(n)["end"] - self.task(n)["start"] for n in names)


def run_playbook(playbook: str, extra: Obj, *, label: str = "") -> PlaybookRun:
    """ansible-playbook as a user runs it, with the bench_timer callback; fails loudly."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        vars_file = Path(tmp) / "vars.json"
        vars_file.write_text(json.dumps(dict(extra, ansible_python_interpreter=str(VENV_BIN / "python"))))
        timings = Path(tmp) / "timings.json"
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_CALLBACK_PLUGINS=str(BENCH / "callback_plugins"), ANSIBLE_CALLBACKS_ENABLED="bench_timer",
                   BENCH_TIMINGS=str(timings), ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOCALHOST_WARNING="0")
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(PLAYBOOKS / playbook),
               "-e", f"@{vars_file}"]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{playbook} {label} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        data = json.loads(timings.read_text())
    match = re.search(r"localhost\s+:\s+(.*)", proc.stdout)
    recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))} if match else {}
    return PlaybookRun(wall=wall, tasks=data["tasks"], recap=recap)


# --- processes ------------------------------------------------------------------------------------
class LoadSampler:
    """The 1-minute load average every `every` seconds, in a thread: the results say how busy the machine
    was (the bench itself and whatever else ran on it, e.g. another job's tests)."""

    def __init__(self, every: float = 15.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="load")

    def _run(self) -> None:
        while not self.stopped.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)

    def summary(self) -> dict[str, float | int]:
        values = sorted(self.samples) or [0.0]
        return {"samples": len(self.samples), "every_seconds": self.every, "min": values[0],
                "median": values[len(values) // 2], "max": values[-1], "cores": os.cpu_count() or 0}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def qemu_pids(marker: str) -> list[int]:
    """qemu processes whose command line holds marker (e.g. "guest=<namespace>_": libvirt's -name)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("qemu-system") and \
                        marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def deep(obj: Obj) -> Obj:
    return copy.deepcopy(obj)
