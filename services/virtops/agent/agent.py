"""The node agent's reconcile loop: list+watch this node's VMIs, a queue per VMI key, a heartbeat Lease.

Names the agent owns (the controller and the subresource API read them):
- finalizer ``virtops.kubevirt.io/node-agent`` on every VMI it runs, removed once the domain is gone;
- a coordination.k8s.io/v1 Lease named after the node in ``lease_namespace`` (default ``kube-node-lease``,
  like kubelet), annotated with ``virtops.kubevirt.io/capacity`` and ``virtops.kubevirt.io/node-labels`` (JSON)
  and ``virtops.kubevirt.io/agent-version`` (and ``virtops.kubevirt.io/node-api``, where its node API listens),
  labelled ``virtops.kubevirt.io/node-agent: "true"``.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import shutil
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from virtops.agent import VERSION
from virtops.agent.domain import (
    ImageRequest,
    UnsupportedSpecError,
    domain_name,
    image_requests,
    interface_names,
    plan_domain,
    prepare_files,
    status_interfaces,
)
from virtops.agent.errors import SecretUnavailableError
from virtops.agent.images import BadImageError, CachedImage, ImageCache, ImagePullError, auth_file, wait_seconds
from virtops.agent.metrics import AgentMetrics, InstrumentedHypervisor
from virtops.kube import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    KubeClient,
    NotFoundError,
    path_for,
    unchanged_since,
)
from virtops.kube.events import EventRecorder
from virtops.kube.informer import Informer
from virtops.kube.workqueue import KeyQueue
from virtops.kubevirt import FINAL_PHASES
from virtops.node.api import NODE_API_ANNOTATION
from virtops.node.hypervisor import domain_type as detect_domain_type

log = logging.getLogger("virtops.agent")
# How many delivered versions of one VMI the cache remembers: more than a write can be overtaken by.
DELIVERED_KEPT = 32

Obj = dict[str, Any]
Key = tuple[str, str]

FINALIZER = "virtops.kubevirt.io/node-agent"
NODE_LABEL = "kubevirt.io/nodeName"
CAPACITY_ANNOTATION = "virtops.kubevirt.io/capacity"
LABELS_ANNOTATION = "virtops.kubevirt.io/node-labels"
VERSION_ANNOTATION = "virtops.kubevirt.io/agent-version"
AGENT_LABEL = "virtops.kubevirt.io/node-agent"
COMPONENT = "virtops-agent"
DEFAULT_GRACE_SECONDS = 30
# How long after a deleted VMI's deadline its timer queues it again.
DEADLINE_SLACK_SECONDS = 0.1
# A booting guest's agent is asked for its address this often, for this long after the VMI started running.
ADDRESS_POLL_SECONDS = 2.0
ADDRESS_POLL_WINDOW_SECONDS = 300.0
SECRET_RETRY_MAX_SECONDS = 30.0
SECRET_FORBIDDEN_RETRIES = 3  # 0.2 + 0.4 + 0.8 s
PAUSED_CONDITION = {"type": "Paused", "status": "True", "reason": "PausedByUser",
                    "message": "VMI was paused by user", "lastProbeTime": None}
OWNED_CONDITIONS = ("Ready", "Paused", "Synchronized", "AgentConnected")
PULL_SECRET_TYPE = "kubernetes.io/dockerconfigjson"
IMAGES_FILE = "images.json"  # in a VMI's state dir: the cache digests its disks are backed by (kept by GC)


@dataclass
class _Pull:
    """One VMI's pull of one image: running (``done`` False), pulled (``result``), or failed (``error``)."""

    uid: str
    done: bool = False
    result: CachedImage | None = None
    error: Exception | None = None
    failures: int = 0
    retry_at: float = 0.0


class Hypervisor(Protocol):
    """What the agent needs from a hypervisor (LibvirtHypervisor; unit tests may fake it)."""

    def state(self, name: str) -> Any: ...
    def ensure_running(self, name: str, xml: str) -> bool: ...
    def pause(self, name: str) -> bool: ...
    def resume(self, name: str) -> bool: ...
    def shutdown(self, name: str) -> bool: ...
    def destroy(self, name: str) -> bool: ...
    def stop(self, name: str, grace_seconds: float = 0.0) -> bool: ...
    def list_names(self, prefix: str = "") -> list[str]: ...
    def marker(self, name: str) -> Any: ...
    def macs(self, name: str) -> list[str]: ...
    def guest_interfaces(self, name: str) -> Any: ...
    def guest_agent_connected(self, name: str) -> bool: ...
    def guest_os_info(self, name: str) -> Any: ...


class DomainEvents(Protocol):
    """Domain lifecycle events (libvirt_events.DomainEventWatcher): "domain NAME changed", "(re)connected"."""

    def start(self, on_domain: Any, on_connect: Any, on_error: Any = None) -> None: ...
    def stop(self, timeout: float = 2.0) -> None: ...


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("resourceVersion", "")


def _key(obj: Obj) -> Key:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _conditions(status: Obj) -> list[Obj]:
    return list(status.get("conditions") or [])


def _condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in _conditions(status) if c.get("type") == kind), None)


def grace_seconds(vmi: Obj) -> int:
    """spec.terminationGracePeriodSeconds, KubeVirt's default when unset."""
    grace = (vmi.get("spec") or {}).get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE_SECONDS if grace is None else max(0, int(grace))


def _parse_time(value: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.strptime(value or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def _awaiting_guest(connected: bool, interfaces: list[Obj], os_info: Obj | None, transitions: list[Obj]) -> bool:
    """A connected guest agent that has not told an address or its OS yet (``os_info`` None), on a VMI that
    started running recently (its guest may be booting). Without a guest agent there is nothing to poll: only
    the guest agent tells addresses, and libvirt's agent lifecycle event queues the VMI when one connects (on
    100 booting guests, polling each every 2 s kept the workers and libvirtd from the starts)."""
    if not connected:
        return False
    if os_info is not None and (not interfaces or any(i.get("ipAddress") for i in interfaces)):
        return False
    started = [t.get("phaseTransitionTimestamp") for t in transitions if t.get("phase") == "Running"]
    try:
        since = datetime.datetime.strptime(started[-1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except (IndexError, TypeError, ValueError):
        return False
    return (datetime.datetime.now(datetime.UTC) - since).total_seconds() < ADDRESS_POLL_WINDOW_SECONDS


class NodeAgent:
    VMI_PATH = path_for("kubevirt.io/v1", "virtualmachineinstances")

    def __init__(self, client: KubeClient, node_name: str, hypervisor: Hypervisor, *,
                 labels: dict[str, str] | None = None, capacity: dict[str, str] | None = None,
                 state_dir: Path | str, image_cache: ImageCache | Path | str, lease_namespace: str = "kube-node-lease",
                 domain_type: str | None = None, heartbeat_seconds: float = 10.0, lease_duration_seconds: int = 40,
                 resync_seconds: float = 5.0, workers: int = 4, watch_timeout_seconds: int = 60,
                 domain_events: DomainEvents | None = None, metrics: AgentMetrics | None = None,
                 pull_workers: int = 2, pull_backoff_max_seconds: float = 60.0) -> None:
        self.client = client
        self.node_name = node_name
        self.metrics = metrics or AgentMetrics()
        # Every libvirt call is timed (and its failures counted) for /metrics.
        self.hypervisor: Hypervisor = InstrumentedHypervisor(hypervisor, self.metrics)  # type: ignore[assignment]
        self.domain_events = domain_events
        # Where this agent's node API listens (set by main before start); published in the Lease.
        self.node_api_url: str | None = None
        self.labels = dict(labels or {})
        self.capacity = dict(capacity or {})
        self.state_dir = Path(state_dir)
        self.images = image_cache if isinstance(image_cache, ImageCache) else ImageCache(image_cache)
        # Pulls run here, never on the reconcile workers: a slow pull delays no other VMI.
        self.pull_pool = ThreadPoolExecutor(max_workers=pull_workers, thread_name_prefix=f"{node_name}-pull")
        self.pull_backoff_max_seconds = pull_backoff_max_seconds
        self._pulls: dict[tuple[Key, str], _Pull] = {}
        self._pulls_lock = threading.Lock()
        self.lease_namespace = lease_namespace
        self.domain_type = domain_type or detect_domain_type()
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_duration_seconds = lease_duration_seconds
        self.resync_seconds = resync_seconds
        self.workers = workers
        self.watch_timeout_seconds = watch_timeout_seconds
        self.stop_event = threading.Event()
        self.synced = threading.Event()
        self.events = EventRecorder(client, COMPONENT, host=node_name)
        # Retries back off up to 5 s, never beyond a resync (libvirtd or the API are back soon).
        self.queue = KeyQueue(max_delay=min(5.0, resync_seconds))
        self._cache: dict[Key, Obj] = {}
        # The resourceVersions the watch (or the list) delivered per cached key, newest last: a write's answer of
        # one of these is not newer than the cache (see _store).
        self._delivered: dict[Key, deque[str]] = {}
        self._cache_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._last_heartbeat: datetime.datetime | None = None
        self._rejections: dict[Key, str] = {}  # the last 422 message per VMI, so a retry does not repeat its event
        self._address_polls: set[Key] = set()  # VMIs with a look-again timer pending (one each at most)
        self._address_lock = threading.Lock()
        # Deleted VMIs whose guest is shutting down: key -> (uid, monotonic deadline for destroying the domain).
        self._deadlines: dict[Key, tuple[str, float]] = {}
        self._deadline_lock = threading.Lock()
        self._secret_waits: dict[Key, int] = {}  # VMIs waiting for a Secret: tries so far, for the backoff
        self._secret_retry: set[Key] = set()  # ... and whether a retry timer is pending
        self._secret_wait_lock = threading.Lock()
        self.metrics.add_gauge("virtops_agent_vmis", "VMIs of this node by phase (from the watch cache).",
                               self._phase_counts)
        self.metrics.add_gauge("virtops_agent_vmis_paused", "VMIs of this node with the Paused condition.",
                               lambda: {(): float(self._paused_count())})
        self.metrics.add_gauge("virtops_agent_info", "The agent's version and node (always 1).",
                               lambda: {(("node", self.node_name), ("version", VERSION)): 1.0})

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)  # qemu (its own user) opens files below it
        self.images.clean_partial()
        self._ensure_lease_namespace()
        self.events.start()
        if self.domain_events is not None:
            self.domain_events.start(self._on_domain_event, self._on_libvirt_connect,
                                     lambda: self.metrics.errors.inc(kind="libvirt_connection"))
        specs = [(self._heartbeat_loop, "heartbeat"), (self._informer_loop, "vmi-informer"),
                 (self._resync_loop, "resync")]
        specs += [(self._worker_loop, f"worker-{i}") for i in range(self.workers)]
        for target, name in specs:
            thread = threading.Thread(target=target, name=f"{self.node_name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("agent for node %s started (domain type %s)", self.node_name, self.domain_type)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and working; domains keep running (a restarted agent adopts them)."""
        self.stop_event.set()
        self.queue.close()
        self.pull_pool.shutdown(wait=False, cancel_futures=True)
        if self.domain_events is not None:
            self.domain_events.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            # The informer may sit in a watch read for minutes and holds nothing to finish: it is a daemon
            # and dies with us. Waiting for it made every SIGTERM take the whole timeout.
            if thread is not threading.current_thread() and not thread.name.endswith("-vmi-informer"):
                thread.join(max(0.0, deadline - time.monotonic()))  # threads are daemons: stragglers die with us
        self.events.stop(max(0.0, deadline - time.monotonic()))

    def run(self) -> None:
        self.start()
        self.stop_event.wait()
        self.stop()

    def healthy(self) -> bool:
        last = self._last_heartbeat
        if last is None or not self.synced.is_set():
            return False
        age = (datetime.datetime.now(datetime.UTC) - last).total_seconds()
        return age < self.lease_duration_seconds

    def _phase_counts(self) -> dict[tuple[tuple[str, str], ...], float]:
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        with self._cache_lock:
            items = list(self._cache.values())
        for vmi in items:
            key = (("phase", (vmi.get("status") or {}).get("phase") or "Pending"),)
            counts[key] = counts.get(key, 0.0) + 1
        return counts

    def _paused_count(self) -> int:
        with self._cache_lock:
            items = list(self._cache.values())
        return sum(1 for v in items if (_condition(v.get("status") or {}, "Paused") or {}).get("status") == "True")

    # --- libvirt events -----------------------------------------------------
    def _on_domain_event(self, name: str, event: str) -> None:
        """A domain changed (libvirt's event loop thread): queue its VMI if it is one of ours."""
        namespace, sep, vmi_name = name.partition("_")  # neither part can hold '_' (DNS names)
        if sep and self.cached((namespace, vmi_name)) is not None:  # other nodes' and strangers' domains: not ours
            self.metrics.libvirt_events.inc(event=event)
            self.queue.add((namespace, vmi_name))

    def _on_libvirt_connect(self) -> None:
        """(Re)subscribed to libvirt: events may have been missed while it was away, look at everything."""
        self.metrics.libvirt_connections.inc()
        if not self.synced.is_set():
            return  # the first list queues everything anyway
        self._queue_everything()

    # --- heartbeat ----------------------------------------------------------
    def _ensure_lease_namespace(self) -> None:
        try:
            self.client.create(path_for("v1", "namespaces"),
                               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.lease_namespace}})
        except ConflictError:
            pass
        except ForbiddenError:
            pass  # least privilege: the namespace is the cluster's to make (kube-apiserver makes kube-node-lease)
        except Exception as exc:  # noqa: BLE001 - the API may be away at start: heartbeat and watch retry
            log.warning("cannot create namespace %s: %s", self.lease_namespace, exc)

    def heartbeat(self) -> None:
        """Create or renew the node's Lease."""
        now = now_micro()
        meta = {
            "labels": {AGENT_LABEL: "true"},
            "annotations": {
                CAPACITY_ANNOTATION: json.dumps(self.capacity, sort_keys=True),
                LABELS_ANNOTATION: json.dumps(self.labels, sort_keys=True),
                VERSION_ANNOTATION: VERSION,
                NODE_API_ANNOTATION: self.node_api_url,  # None (no node API) removes it
            },
        }
        spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": self.lease_duration_seconds,
                "renewTime": now}
        path = path_for("coordination.k8s.io/v1", "leases", self.lease_namespace, self.node_name)
        try:
            self.client.merge_patch(path, {"metadata": meta, "spec": spec})
        except NotFoundError:
            self.client.create(path_for("coordination.k8s.io/v1", "leases", self.lease_namespace), {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": dict(meta, name=self.node_name, namespace=self.lease_namespace, annotations={
                    k: v for k, v in meta["annotations"].items() if v is not None}),
                "spec": dict(spec, acquireTime=now),
            })
        self._last_heartbeat = datetime.datetime.now(datetime.UTC)

    def _heartbeat_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - keep beating; the next try may work
                self.metrics.errors.inc(kind="heartbeat")
                log.warning("heartbeat failed: %s", exc)
            self.stop_event.wait(self.heartbeat_seconds)

    # --- informer -----------------------------------------------------------
    def cached(self, key: Key) -> Obj | None:
        with self._cache_lock:
            return self._cache.get(key)

    def _store(self, obj: Obj) -> None:
        """Cache an object we read or wrote, unless the watch already delivered that version (the cache then holds
        it or a newer one). resourceVersions are opaque: only equality means anything, never order."""
        key = _key(obj)
        with self._cache_lock:
            if (obj.get("metadata") or {}).get("resourceVersion") not in self._delivered.get(key, ()):
                self._cache[key] = obj

    def _informer_loop(self) -> None:
        Informer(self.client, self.VMI_PATH, self._on_vmi_event, self.stop_event,
                 query={"labelSelector": f"{NODE_LABEL}={self.node_name}"}, name="VMI watch",
                 watch_timeout_seconds=self.watch_timeout_seconds,
                 on_error=lambda _exc: self.metrics.errors.inc(kind="watch")).run()

    def _on_vmi_event(self, kind: str, obj: Obj) -> None:
        if kind == "SYNC":
            with self._cache_lock:
                old = set(self._cache)
                self._cache = {_key(i): i for i in obj["items"]}
                self._delivered = {_key(i): deque([_version(i)], maxlen=DELIVERED_KEPT) for i in obj["items"]}
                keys = old | set(self._cache)
            for key in [*keys, *self._orphan_keys()]:
                self.queue.add(key)
            self.synced.set()
            return
        key = _key(obj)
        with self._cache_lock:
            if kind == "DELETED":
                self._cache.pop(key, None)
                self._delivered.pop(key, None)
            else:
                self._cache[key] = obj
                self._delivered.setdefault(key, deque(maxlen=DELIVERED_KEPT)).append(_version(obj))
        self.queue.add(key)

    def _orphan_keys(self) -> list[Key]:
        """Keys of domains this agent defined on this node whose VMI is not in the cache."""
        keys = []
        try:
            for name in self.hypervisor.list_names(""):
                marker = self.hypervisor.marker(name)
                if marker is None or marker.node != self.node_name:
                    continue
                key = (marker.namespace, marker.name)
                if name == domain_name(*key) and self.cached(key) is None:
                    keys.append(key)
        except Exception as exc:  # noqa: BLE001 - libvirtd may be restarting
            log.warning("cannot list domains: %s", exc)
        return keys

    def _resync_loop(self) -> None:
        # Domains change without API events (a guest powers off): look at every VMI regularly.
        while not self.stop_event.wait(self.resync_seconds):
            if self.synced.is_set():
                self._queue_everything()

    def _queue_everything(self) -> None:
        """Queue every cached VMI and every domain of ours whose VMI is not cached (an orphan)."""
        with self._cache_lock:
            keys = list(self._cache)
        for key in keys + self._orphan_keys():
            self.queue.add(key)

    def _worker_loop(self) -> None:
        while not self.stop_event.is_set():
            key = self.queue.get(timeout=1.0)
            if key is None:
                continue
            start = time.monotonic()
            try:
                self.reconcile(key)  # type: ignore[arg-type]
                self.queue.forget(key)
            except Exception as exc:  # noqa: BLE001 - one VMI's failure must not stop the others
                self.metrics.errors.inc(kind="reconcile")
                delay = self.queue.retry(key)
                log.warning("reconcile of %s failed (%s); retrying in %.1fs", "/".join(key), exc, delay)  # type: ignore[arg-type]
                log.debug("reconcile failure", exc_info=True)
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - start)
                self.queue.done(key)

    # --- reconcile ----------------------------------------------------------
    def vmi_state_dir(self, key: Key) -> Path:
        return self.state_dir / domain_name(*key)

    def owns(self, name: str, uid: str | None = None) -> bool:
        """The domain is one this agent defined on this node (for that VMI uid, when given)."""
        return self._ours(name, uid)

    def _ours(self, name: str, uid: str | None = None) -> bool:
        marker = self.hypervisor.marker(name)
        return marker is not None and marker.node == self.node_name and (uid is None or marker.uid == uid)

    def reconcile(self, key: Key) -> None:
        vmi = self.cached(key)
        name = domain_name(*key)
        if vmi is None:
            with self._deadline_lock:
                self._deadlines.pop(key, None)
            with self._secret_wait_lock:
                self._secret_waits.pop(key, None)
            self._forget_pulls(key)
            if self._ours(name):
                log.info("VMI %s/%s is gone: removing its domain", *key)
                self.hypervisor.stop(name, 0)
                shutil.rmtree(self.vmi_state_dir(key), ignore_errors=True)
            return
        meta = vmi["metadata"]
        bound = (vmi.get("status") or {}).get("nodeName")
        if bound != self.node_name:
            # Listed by its label, but the controller binds a VMI by label and status.nodeName together: a
            # label that names this node over another node's (or no node's) status was moved by someone
            # else. Never start, stop or write it (another agent may run it).
            log.warning("VMI %s/%s has label %s=%s but status.nodeName %r: not this node's, left alone",
                        *key, NODE_LABEL, self.node_name, bound)
            return
        if meta.get("deletionTimestamp"):
            self._finalize(vmi)
            return
        if FINALIZER not in (meta.get("finalizers") or []):
            vmi = self._patch(vmi, {"metadata": {"finalizers": [*(meta.get("finalizers") or []), FINALIZER]}})
            if vmi is None:
                return
            meta = vmi["metadata"]
        status = vmi.get("status") or {}
        phase = status.get("phase") or ""
        state = self.hypervisor.state(name)
        foreign = False
        if state is not None and not self._ours(name, meta.get("uid")):
            if self._ours(name):
                log.info("domain %s belongs to an earlier VMI with this name: removing it", name)
                self.hypervisor.stop(name, 0)
                state = None
            else:
                foreign = True  # not defined by this agent: never touched
        if phase in FINAL_PHASES:
            if state is not None and not foreign:
                self.hypervisor.stop(name, 0)
            return
        if foreign:
            self._fail(vmi, "metadata.name", f"a libvirt domain named {name} exists and is not this VMI's",
                       reason="DomainConflict")
            return
        if state is None or state.phase is None:
            if phase == "Running" and state is None:
                self._fail(vmi, "status.phase", f"the domain {name} disappeared", reason="DomainDisappeared")
                return
            state = self._start(vmi, name)
            if state is None:
                return
        if state.phase in FINAL_PHASES:
            self._domain_ended(vmi, name, state.phase)
            return
        # Pause and unpause come through the node API (nodeapi.py); here the status follows the domain.
        self._write_running(vmi, name, state.paused)

    def _start(self, vmi: Obj, name: str) -> Any:
        key = _key(vmi)
        sdir = self.vmi_state_dir(key)
        try:
            pulled = self._pulled_images(vmi)
            if pulled is None:
                return None  # waiting for a pull: the VMI has a condition saying so, and no domain
            images = {image: cached.rootfs for image, cached in pulled.items()}
            plan = plan_domain(vmi, domain_type=self.domain_type, state_dir=sdir, images=images,
                               node_name=self.node_name, read_secret=lambda name: self._read_secret(key[0], name))
        except SecretUnavailableError as exc:
            self._wait_for_secret(vmi, exc)
            return None
        except UnsupportedSpecError as exc:
            self._fail(vmi, exc.field, exc.message)
            return None
        try:
            sdir.mkdir(parents=True, exist_ok=True)
            # Written before the overlays exist: the cache's garbage collection keeps what they are backed by.
            (sdir / IMAGES_FILE).write_text(json.dumps(sorted({c.digest for c in pulled.values()})))
            prepare_files(plan, sdir)
            self.hypervisor.ensure_running(name, plan.xml)
        except Exception as exc:  # noqa: BLE001 - whatever broke, leave nothing half-made behind
            log.warning("starting %s failed: %s", name, exc)
            try:
                if self._ours(name):
                    self.hypervisor.stop(name, 0)
            finally:
                shutil.rmtree(sdir, ignore_errors=True)
            self._fail(vmi, "spec", f"the domain did not start: {exc}", reason="SyncFailed")
            return None
        with self._secret_wait_lock:
            self._secret_waits.pop(key, None)
        self._forget_pulls(key)
        self._event(vmi, "Normal", "Started", "VirtualMachineInstance started.")
        return self.hypervisor.state(name)

    def _read_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        """A Secret of a VMI of this node, decoded; this node may read only those (docs/secrets-on-nodes.md).

        The controller grants the Secret before it binds the VMI, but kube-apiserver's RBAC cache may lag the
        Role by a moment: a 403 is asked again a few times before it counts."""
        path = path_for("v1", "secrets", namespace, name)
        for attempt in range(SECRET_FORBIDDEN_RETRIES + 1):
            try:
                secret = self.client.get(path)
                break
            except ForbiddenError:
                if attempt == SECRET_FORBIDDEN_RETRIES or self.stop_event.wait(0.2 * 2**attempt):
                    raise
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    def _wait_for_secret(self, vmi: Obj, exc: SecretUnavailableError) -> None:
        """Not started: a Secret it needs cannot be read (yet). The condition names the field and is written,
        with its event, only when the reason changes. Tried again after 1, 2, 4 ... s (at most 30 s): an
        agent may not watch Secrets, and a Secret often comes a moment after its VMI."""
        key = _key(vmi)
        with self._secret_wait_lock:
            pending = key in self._secret_retry
            tries = self._secret_waits[key] = self._secret_waits.get(key, 0) + 1
            self._secret_retry.add(key)
        if not pending:  # one timer per VMI: resyncs and events come here too

            def fire() -> None:
                with self._secret_wait_lock:
                    self._secret_retry.discard(key)
                self.queue.add(key)

            timer = threading.Timer(min(2.0 ** (tries - 1), SECRET_RETRY_MAX_SECONDS), fire)
            timer.daemon = True
            timer.start()
        text = f"{exc.field}: {exc.message}"
        status = vmi.get("status") or {}
        old = _condition(status, "Synchronized") or {}
        if old.get("reason") == "SecretUnavailable" and old.get("message") == text:
            return
        log.warning("VMI %s/%s waits for a Secret: %s", *_key(vmi), text)
        conditions = [c for c in _conditions(status) if c.get("type") != "Synchronized"] + [{
            "type": "Synchronized", "status": "False", "reason": "SecretUnavailable", "message": text,
            "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}]
        if self._patch(vmi, {"status": {"conditions": conditions}}) is not None:
            self._event(vmi, "Warning", "SecretUnavailable", text)

    # --- images -------------------------------------------------------------
    def _forget_pulls(self, key: Key) -> None:
        with self._pulls_lock:
            for pull_key in [k for k in self._pulls if k[0] == key]:
                del self._pulls[pull_key]

    def _pulled_images(self, vmi: Obj) -> dict[str, CachedImage] | None:
        """Every image the VMI needs, from the node's cache; None while any is still to be pulled.

        A missing image gets a pull on the pull workers (events Pulling, then Pulled or Failed), and the VMI
        a Ready=False condition naming the image and the reason; a failed pull is tried again with back-off.
        Raises UnsupportedSpecError naming the field when an image can never work.
        """
        key = _key(vmi)
        uid = vmi["metadata"].get("uid") or ""
        ready: dict[str, CachedImage] = {}
        waiting: list[tuple[str, str]] = []
        for request in image_requests(vmi.get("spec") or {}):
            if request.image in ready:
                continue
            if request.pull_policy != "Always":
                hit = self.images.lookup(request.image)
                if hit is not None and not hit.private:
                    self.images.touch(hit.digest)
                    ready[request.image] = hit
                    continue
                if request.pull_policy == "Never":
                    waiting.append(("ErrImageNeverPull", f'image "{request.image}" is not present on this node '
                                                         "and its imagePullPolicy is Never"))
                    continue
            with self._pulls_lock:
                pull = self._pulls.get((key, request.image))
                if pull is None or pull.uid != uid or (pull.error is not None and pull.retry_at <= time.monotonic()
                                                       and not isinstance(pull.error, BadImageError)):
                    failures = pull.failures if pull is not None and pull.uid == uid else 0
                    pull = self._pulls[(key, request.image)] = _Pull(uid=uid, failures=failures)
                    submit = True
                else:
                    submit = False
            if submit:
                self._event(vmi, "Normal", "Pulling", f'Pulling image "{request.image}"')
                self.pull_pool.submit(self._pull, vmi, request, pull)
            if not pull.done:
                waiting.append(("Pulling", f'pulling image "{request.image}"'))
            elif pull.result is not None:
                ready[request.image] = pull.result
            elif isinstance(pull.error, BadImageError):
                raise UnsupportedSpecError(request.field, f'image "{request.image}": {pull.error}')
            else:
                waiting.append(("ImagePullBackOff", f'Back-off pulling image "{request.image}": {pull.error}'))
        if waiting:
            self._write_waiting(vmi, waiting)
            return None
        return ready

    def _pull(self, vmi: Obj, request: ImageRequest, pull: _Pull) -> None:
        """On a pull worker: pull one image for one VMI, record the outcome, queue the VMI again."""
        key = _key(vmi)
        started = time.monotonic()
        try:
            if request.pull_secret:
                secret = self._pull_secret(key[0], request.pull_secret)
                with auth_file(self.state_dir / "pull-auth", secret) as path:
                    result = self.images.pull(request.image, path)
            else:
                result = self.images.pull(request.image)
            pull.result = result
            if result.pulled:
                self._event(vmi, "Normal", "Pulled", f'Successfully pulled image "{request.image}" '
                                                     f"({result.digest}) in {time.monotonic() - started:.1f}s")
                self._collect_images()
            else:
                self._event(vmi, "Normal", "Pulled", f'Container image "{request.image}" already present on machine')
        except (ImagePullError, BadImageError) as exc:
            pull.error = exc
            if isinstance(exc, ImagePullError):
                pull.failures += 1
                delay = wait_seconds(pull.failures, self.pull_backoff_max_seconds)
                pull.retry_at = time.monotonic() + delay
                self.queue.add_after(key, delay)
            log.warning("pulling %s for VMI %s/%s failed: %s", request.image, *key, exc)
            self._event(vmi, "Warning", "Failed", f'Failed to pull image "{request.image}": {exc}')
        except Exception as exc:  # noqa: BLE001 - a pull worker must not die; the VMI retries
            pull.error = ImagePullError(f"unexpected error: {exc}")
            pull.failures += 1
            pull.retry_at = time.monotonic() + wait_seconds(pull.failures, self.pull_backoff_max_seconds)
            log.exception("pulling %s failed", request.image)
        finally:
            pull.done = True
            self.queue.add(key)

    def _pull_secret(self, namespace: str, name: str) -> bytes:
        """A kubernetes.io/dockerconfigjson Secret of the VMI's namespace, as containers-auth.json bytes."""
        try:
            secret = self.client.get(path_for("v1", "secrets", namespace, name))
        except NotFoundError:
            raise ImagePullError(f'imagePullSecret "{name}" does not exist in namespace {namespace}') from None
        except ForbiddenError:
            raise ImagePullError(f'imagePullSecret "{name}": this node may not read it') from None
        if secret.get("type") != PULL_SECRET_TYPE:
            raise ImagePullError(f'imagePullSecret "{name}" is of type {secret.get("type")!r}, not {PULL_SECRET_TYPE}')
        try:
            data = base64.b64decode((secret.get("data") or {}).get(".dockerconfigjson") or "", validate=True)
            json.loads(data)
        except (binascii.Error, ValueError):
            raise ImagePullError(f'imagePullSecret "{name}" holds no valid .dockerconfigjson') from None
        return data

    def _collect_images(self) -> None:
        """The cache's garbage collection, keeping every image a VMI of this node is backed by or waits for."""
        in_use: set[str] = set()
        for path in self.state_dir.glob(f"*/{IMAGES_FILE}"):
            try:
                in_use.update(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        with self._pulls_lock:
            in_use.update(p.result.digest for p in self._pulls.values() if p.result is not None)
        self.images.collect(in_use)

    def _write_waiting(self, vmi: Obj, waiting: list[tuple[str, str]]) -> None:
        """Ready=False with the first waiting reason and every image's message (no phase change, no domain)."""
        status = vmi.get("status") or {}
        reason = next((r for r, _m in waiting if r != "Pulling"), waiting[0][0])
        message = "; ".join(m for _r, m in waiting)
        old = _condition(status, "Ready")
        if old and old.get("status") == "False" and old.get("reason") == reason and old.get("message") == message:
            return
        ready = {"type": "Ready", "status": "False", "reason": reason, "message": message, "lastProbeTime": None,
                 "lastTransitionTime": now_rfc3339()}
        others = [c for c in _conditions(status) if c.get("type") != "Ready"]
        self._patch(vmi, {"status": {"conditions": [*others, ready]}})

    def _finalize(self, vmi: Obj) -> None:
        key = _key(vmi)
        name = domain_name(*key)
        meta = vmi["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        ours = self._ours(name, meta.get("uid"))
        if ours:
            if not self._grace_over(vmi):  # (no need to ask libvirt how the guest is once its time is up)
                state = self.hypervisor.state(name)
                if state is not None and state.phase == "Running" and not self._shut_down_by_deadline(vmi, name):
                    return  # the guest has until its deadline; its power-off event or the timer brings it back
            self.hypervisor.destroy(name)
        with self._deadline_lock:
            self._deadlines.pop(key, None)
        self._forget_pulls(key)
        status = vmi.get("status") or {}
        patch: Obj = {"metadata": {"finalizers": [f for f in meta.get("finalizers") or [] if f != FINALIZER]}}
        if status.get("phase") not in FINAL_PHASES:
            patch["status"] = self._final_status(vmi, "Succeeded", ready_reason="VMIStopped",
                                                 ready_message="the VMI was deleted")
        try:
            # The guest is gone once destroyed: the VMI is released then, and its definition and files go
            # after (off the VMI's way out). Should this fail or the agent stop here, the next reconcile (the
            # VMI's retry, or the resync's orphan for a VMI already gone) finds the domain of ours and ends it.
            self._patch(vmi, patch)
        finally:
            if ours:
                self.hypervisor.stop(name, 0)
            shutil.rmtree(self.vmi_state_dir(key), ignore_errors=True)

    def _grace_remaining(self, vmi: Obj) -> float:
        """Seconds of the grace period left, counted from the deletionTimestamp (see _shut_down_by_deadline)."""
        grace = float(grace_seconds(vmi))
        since = _parse_time(vmi["metadata"].get("deletionTimestamp"))
        elapsed = 0.0 if since is None else (datetime.datetime.now(datetime.UTC) - since).total_seconds() - 1.0
        return min(grace, max(0.0, grace - elapsed))

    def _grace_over(self, vmi: Obj) -> bool:
        """Whether a deleted VMI's guest has had its time: its known deadline passed, or none is left."""
        with self._deadline_lock:
            known = self._deadlines.get(_key(vmi))
        if known is not None and known[0] == (vmi["metadata"].get("uid") or ""):
            return time.monotonic() >= known[1]
        return self._grace_remaining(vmi) <= 0

    def _shut_down_by_deadline(self, vmi: Obj, name: str) -> bool:
        """Graceful shutdown without holding a worker: True once the deadline has passed.

        The first look presses the power button, remembers the deadline and queues the VMI for it; a
        libvirt event queues it earlier when the guest powers off. The deadline is the VMI's
        deletionTimestamp plus its grace period (so an agent restarted meanwhile finds the same one),
        never further away than the grace period from now (the API server's clock may run ahead). The
        timestamp has whole seconds, cut down: the deletion happened within the second after it, and the
        deadline counts from that second's end, so a guest gets its whole grace period, never less.
        """
        key = _key(vmi)
        uid = vmi["metadata"].get("uid") or ""
        with self._deadline_lock:
            known = self._deadlines.get(key)
        if known is None or known[0] != uid:
            remaining = self._grace_remaining(vmi)
            if remaining <= 0:
                return True
            deadline = time.monotonic() + remaining
            self._event(vmi, "Normal", "ShuttingDown", "Signaled Graceful Shutdown")
            if not self.hypervisor.shutdown(name):
                return True  # it was already off (or gone)
            with self._deadline_lock:  # only once the button was pressed: a failed press is retried
                self._deadlines[key] = (uid, deadline)
            # A little late rather than early: a timer that fires before the deadline only finds it waiting.
            self.queue.add_after(key, remaining + DEADLINE_SLACK_SECONDS)
            return False
        return time.monotonic() >= known[1]

    def _domain_ended(self, vmi: Obj, name: str, phase: str) -> None:
        if phase == "Succeeded":
            self._event(vmi, "Normal", "Stopped", "The VirtualMachineInstance was shut down.")
            status = self._final_status(vmi, phase, ready_reason="GuestShutdown", ready_message="the guest shut down")
        else:
            self._event(vmi, "Warning", "Stopped", "The VirtualMachineInstance crashed.")
            status = self._final_status(vmi, phase, ready_reason="GuestCrashed", ready_message="the guest crashed")
        if self._patch(vmi, {"status": status}) is not None:
            self.hypervisor.stop(name, 0)

    def _fail(self, vmi: Obj, field: str, message: str, reason: str = "UnsupportedSpec") -> None:
        log.warning("VMI %s/%s failed: %s: %s", *_key(vmi), field, message)
        text = f"{field}: {message}"
        status = self._final_status(vmi, "Failed", ready_reason=reason, ready_message=text)
        status["reason"] = reason
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != "Synchronized"] + [{
            "type": "Synchronized", "status": "False", "reason": reason, "message": text,
            "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}]
        if self._patch(vmi, {"status": status}) is not None:
            self._event(vmi, "Warning", reason, text)

    # --- status -------------------------------------------------------------
    def _transitions(self, status: Obj, phase: str) -> list[Obj]:
        items = list(status.get("phaseTransitionTimestamps") or [])
        if status.get("phase") != phase:
            items.append({"phase": phase, "phaseTransitionTimestamp": now_rfc3339()})
        return items

    def _ready(self, status: Obj, value: str, reason: str | None, message: str | None) -> Obj:
        old = _condition(status, "Ready")
        if old and old.get("status") == value and old.get("reason") == reason:
            return old
        cond: Obj = {"type": "Ready", "status": value, "lastProbeTime": None, "lastTransitionTime": now_rfc3339()}
        if reason:
            cond.update(reason=reason, message=message or "")
        return cond

    def _final_status(self, vmi: Obj, phase: str, *, ready_reason: str, ready_message: str) -> Obj:
        status = vmi.get("status") or {}
        others = [c for c in _conditions(status) if c.get("type") not in ("Ready", "Paused", "AgentConnected")]
        return {"phase": phase, "nodeName": status.get("nodeName") or self.node_name,
                "conditions": [*others, self._ready(status, "False", ready_reason, ready_message)],
                "phaseTransitionTimestamps": self._transitions(status, phase)}

    def _write_running(self, vmi: Obj, name: str, paused: bool) -> None:
        status = vmi.get("status") or {}
        others = [c for c in _conditions(status) if c.get("type") not in OWNED_CONDITIONS]
        conditions = [*others]
        if paused:
            conditions.append(self._ready(status, "False", "Paused", "VMI is paused"))
            old = _condition(status, "Paused")
            conditions.append(old if old and old.get("status") == "True"
                              else dict(PAUSED_CONDITION, lastTransitionTime=now_rfc3339()))
        else:
            conditions.append(self._ready(status, "True", None, None))
        connected = self.hypervisor.guest_agent_connected(name)
        if connected:  # KubeVirt's condition: a guest agent holds its channel open
            old = _condition(status, "AgentConnected")
            conditions.append(old if old and old.get("status") == "True" else {
                "type": "AgentConnected", "status": "True", "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339()})
        # A frozen guest cannot answer; without an agent there is no one to ask.
        guest = self.hypervisor.guest_interfaces(name) if connected and not paused else None
        interfaces = status_interfaces(interface_names(vmi), self.hypervisor.macs(name), guest,
                                       status.get("interfaces") or [])
        # KubeVirt's guestOSInfo, once the guest agent told it (kept while the agent does not answer, like an
        # address); {} from an agent without guest-get-osinfo is not written.
        os_info = self.hypervisor.guest_os_info(name) if connected and not paused else {}
        new = {"phase": "Running", "nodeName": status.get("nodeName") or self.node_name, "interfaces": interfaces,
               "conditions": conditions, "phaseTransitionTimestamps": self._transitions(status, "Running")}
        if os_info or status.get("guestOSInfo"):
            new["guestOSInfo"] = os_info or status["guestOSInfo"]
        if not paused and _awaiting_guest(connected, interfaces, os_info, new["phaseTransitionTimestamps"]):
            # No event says "the guest has its address (or its OS answer) now": look again soon while it boots.
            self._look_again_soon(_key(vmi))
        if all(status.get(k) == v for k, v in new.items()):
            return
        was_paused = (_condition(status, "Paused") or {}).get("status") == "True"
        if self._patch(vmi, {"status": new}) is None:
            return
        if paused and not was_paused:
            self._event(vmi, "Normal", "Paused", "VirtualMachineInstance paused")
        elif was_paused and not paused:
            self._event(vmi, "Normal", "Unpaused", "VirtualMachineInstance unpaused")

    def _look_again_soon(self, key: Key) -> None:
        """Queue the key in ADDRESS_POLL_SECONDS, unless that is already pending: every reconcile of a booting
        guest comes here (its own status writes come back as watch events), and each timer must not start a
        look-again chain of its own."""
        with self._address_lock:
            if key in self._address_polls:
                return
            self._address_polls.add(key)

        def fire() -> None:
            with self._address_lock:
                self._address_polls.discard(key)
            self.queue.add(key)

        timer = threading.Timer(ADDRESS_POLL_SECONDS, fire)
        timer.daemon = True
        timer.start()

    def _patch(self, vmi: Obj, patch: Obj) -> Obj | None:
        """Write the agent's fields ({metadata: {...}, status: {...}}) guarded by resourceVersion.

        A JSON patch rather than a merge patch: a merge patch drops the nulls inside lists, and KubeVirt's
        conditions carry ``lastProbeTime: null``. Only the named fields are touched. On conflict the VMI
        is read again and queued; a rejection (422) is logged, recorded as an event and raised (the worker
        retries with backoff). Returns the updated object, or None when nothing was written.
        """
        key = _key(vmi)
        path = path_for("kubevirt.io/v1", "virtualmachineinstances", *key)
        ops: list[Obj] = [unchanged_since(vmi["metadata"]["resourceVersion"])]
        for section in ("metadata", "status"):
            fields = patch.get(section)
            if not fields:
                continue
            current = vmi.get(section)
            if not isinstance(current, dict):
                ops.append({"op": "add", "path": f"/{section}",
                            "value": {k: v for k, v in fields.items() if v is not None}})
                continue
            for name, value in fields.items():
                pointer = f"/{section}/" + name.replace("~", "~0").replace("/", "~1")
                if value is None:
                    if name in current:
                        ops.append({"op": "remove", "path": pointer})
                else:
                    ops.append({"op": "add", "path": pointer, "value": value})
        try:
            updated = self.client.json_patch(path, ops)
        except NotFoundError:
            with self._cache_lock:
                self._cache.pop(key, None)
            return None
        except ConflictError:
            try:
                self._store(self.client.get(path))
            except NotFoundError:
                with self._cache_lock:
                    self._cache.pop(key, None)
            self.queue.add(key)
            return None
        except InvalidError as exc:  # refused for what it says, not a race: tell (once per cause), retry later
            log.error("VMI %s/%s: the API server rejected the agent's update: %s", *key, exc.message)
            if self._rejections.get(key) != exc.message:
                self._rejections[key] = exc.message
                self._event(vmi, "Warning", "FailedUpdate", f"the API server rejected the update: {exc.message}")
            raise
        self._rejections.pop(key, None)
        meta = updated.get("metadata") or {}
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer went: the object is gone, and its DELETED event may have come already, and even
            # the ADDED event of a new VMI with the same name (recreate): that one stays.
            with self._cache_lock:
                if ((self._cache.get(key) or {}).get("metadata") or {}).get("uid") == meta.get("uid"):
                    self._cache.pop(key, None)
        elif (meta.get("labels") or {}).get(NODE_LABEL) == self.node_name:
            self._store(updated)
        return updated

    def _event(self, vmi: Obj, kind: str, reason: str, message: str) -> None:
        self.events.record(vmi, kind, reason, message)
