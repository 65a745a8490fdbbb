"""The controller's reconcile loops: schedule pending VMIs, watch node leases, mark VMIs of dead nodes.

List+watch (virtops.kube.informer) keeps an in-memory view of VMIs and node
leases; a single worker acts on a deduplicating queue of keys
(virtops.kube.workqueue), so two events for one VMI never race. Leases only
tell liveness by the *absence* of renewals, so node health is also checked on a
short timer. Only the elected leader acts.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from virtops.controller.scheduling import Node, choose_node
from virtops.controller.secrets import NodeSecretAccess
from virtops.controller.vms import VmReconciler
from virtops.kube import (
    ConflictError,
    InvalidError,
    KubeClient,
    NotFoundError,
    log_failure,
    path_for,
    unchanged_since,
)
from virtops.kube.events import EventRecorder
from virtops.kube.informer import Informer
from virtops.kube.workqueue import KeyQueue
from virtops.kubevirt import FINAL_PHASES
from virtops.quantity import parse_quantity

log = logging.getLogger("virtops.controller")

VMI_API = "kubevirt.io/v1"
COMPONENT = "virtops-controller"  # its Events' source
NODE_LABEL = "kubevirt.io/nodeName"
# Written by the node agent on its heartbeat Lease (see virtops.agent).
CAPACITY_ANNOTATION = "virtops.kubevirt.io/capacity"
LABELS_ANNOTATION = "virtops.kubevirt.io/node-labels"
# The node agent's finalizer on the VMIs it runs; released here only for a VMI of a dead node being deleted.
AGENT_FINALIZER = "virtops.kubevirt.io/node-agent"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    value = value.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(value)


def lease_node_name(lease: dict) -> str:
    """The node a heartbeat Lease speaks for: its holder, else its name."""
    return (lease.get("spec") or {}).get("holderIdentity") or (lease.get("metadata") or {}).get("name") or ""


def node_from_lease(lease: dict) -> Node | None:
    """A schedulable node from an agent's heartbeat Lease; None for leases that are not agents' or unusable."""
    meta = lease.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if CAPACITY_ANNOTATION not in annotations:
        return None
    spec = lease.get("spec") or {}
    name = lease_node_name(lease)
    try:
        capacity = json.loads(annotations[CAPACITY_ANNOTATION] or "{}")
        labels = json.loads(annotations.get(LABELS_ANNOTATION) or "{}")
        if not isinstance(capacity, dict) or not isinstance(labels, dict):
            raise ValueError("not a JSON object")
        cpu, memory = parse_quantity(capacity.get("cpu", 0)), parse_quantity(capacity.get("memory", 0))
    except ValueError as exc:  # json.JSONDecodeError is one too
        # One broken agent (or a hand-edited Lease) must not stop scheduling on the others: skip its node.
        log.warning("skipping node %s: lease %s/%s has an unusable %s or %s annotation: %s", name,
                    meta.get("namespace"), meta.get("name"), CAPACITY_ANNOTATION, LABELS_ANNOTATION, exc)
        return None
    return Node(
        name=name,
        labels=labels,
        cpu=cpu,
        memory=memory,
        renewed=parse_time(spec.get("renewTime")),
        lease_seconds=int(spec.get("leaseDurationSeconds") or 40),
    )


def key_of(obj: dict) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta["namespace"], meta["name"]


def apply_event(cache: dict[tuple[str, str], dict], kind: str, obj: dict) -> list[tuple[str, str]]:
    """Update an informer's cache (caller holds the lock); return the keys to reconcile."""
    if kind == "SYNC":
        cache.clear()
        cache.update({key_of(o): o for o in obj["items"]})
        return list(cache)
    if kind == "DELETED":
        cache.pop(key_of(obj), None)
        return []
    cache[key_of(obj)] = obj
    return [key_of(obj)]


class Controller:
    def __init__(self, client: KubeClient, *, lease_namespace: str = "kube-node-lease",
                 node_grace_seconds: float = 60.0, health_interval: float = 2.0, bind_workers: int = 4) -> None:
        self.client = client
        self.lease_namespace = lease_namespace
        self.node_grace_seconds = node_grace_seconds
        self.health_interval = health_interval
        self.stop_event = threading.Event()
        self.events = EventRecorder(client, COMPONENT)
        self.vmis: dict[tuple[str, str], dict] = {}
        self.vms: dict[tuple[str, str], dict] = {}
        self.vm_reconciler = VmReconciler(client)
        self.node_secrets = NodeSecretAccess(client)
        self.nodes: dict[str, Node] = {}  # schedulable: a usable heartbeat Lease
        # Nodes that VMIs name but that have no Lease (deleted, or never seen): still judged, as the node lifecycle
        # controller judges a node whose Lease is gone, from the last renewal seen (or from when first missed),
        # so their VMIs fail and can be deleted instead of waiting for an agent that may never come back.
        self.lost: dict[str, Node] = {}
        self.leased: set[str] = set()  # every node with a Lease, usable or not (an unusable one is not judged)
        self.leases_synced = False
        # kube-scheduler's "assume": a VMI counts on its node from the moment its bind is sent, not only once
        # the watch brings the bound object back (else a burst of pending VMIs all see the same free room).
        # Forgotten when the bind fails or the informer shows the VMI bound (or gone).
        self.assumed: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        # Keys are ("vmi" | "vm", namespace, name) or ("secrets", "", ""), each queued once however many events
        # name it. One worker: placements are decided one after another (see _assume); their writes run on
        # bind_pool. Retries (an API away, a rejected write) back off from 0.5 s up to a minute.
        self.queue = KeyQueue(base_delay=0.5, max_delay=60.0)
        self.threads: list[threading.Thread] = []
        # The bind writes, once started (until then, and in tests, they run on the caller's thread).
        self.bind_pool: ThreadPoolExecutor | None = None
        self.bind_workers = bind_workers
        self.grant_lock = threading.Lock()

    # --- event intake ---------------------------------------------------------
    def _on_vmi(self, kind: str, obj: dict) -> None:
        with self.lock:
            keys = apply_event(self.vmis, kind, obj)
            self._forget_confirmed()
            # A VM follows its VMI of the same name.
            owners = list(self.vms) if kind == "SYNC" else [k for k in [key_of(obj)] if k in self.vms]
        for key in keys:
            self.queue.add(("vmi", *key))
        for key in owners:
            self.queue.add(("vm", *key))
        self._queue_secrets_sync()  # a VMI came, was bound, ended or went: its node's Secrets follow

    def _forget_confirmed(self) -> None:
        """Drop the assumptions the cache now shows for itself: bound, or gone (caller holds the lock)."""
        for key in [k for k in self.assumed
                    if k not in self.vmis or (self.vmis[k].get("status") or {}).get("nodeName")]:
            del self.assumed[key]

    def _assume(self, key: tuple[str, str], vmi: dict, node: str) -> None:
        with self.lock:
            self.assumed[key] = dict(vmi, status=dict(vmi.get("status") or {}, nodeName=node, phase="Scheduled"))

    def _forget(self, key: tuple[str, str]) -> None:
        with self.lock:
            self.assumed.pop(key, None)

    def _on_vm(self, kind: str, obj: dict) -> None:
        with self.lock:
            keys = apply_event(self.vms, kind, obj)
        for key in keys:
            self.queue.add(("vm", *key))

    def _on_lease(self, kind: str, obj: dict) -> None:
        now = now_utc()
        with self.lock:
            before = {name: self._placement_view(n, now) for name, n in self.nodes.items()}
            if kind == "SYNC":
                self.leased = {lease_node_name(lease) for lease in obj["items"]}
                gone = {name: n for name, n in self.nodes.items() if name not in self.leased}
                self.nodes = {n.name: n for n in map(node_from_lease, obj["items"]) if n}
                self.lost = {name: n for name, n in {**self.lost, **gone}.items() if name not in self.leased}
                self.leases_synced = True
            elif kind == "DELETED":  # not scheduled onto; its VMIs are judged by its last renewal
                name = lease_node_name(obj)
                self.leased.discard(name)
                if name in self.nodes:
                    self.lost[name] = self.nodes.pop(name)
            else:
                name = lease_node_name(obj)
                self.leased.add(name)
                self.lost.pop(name, None)
                node = node_from_lease(obj)
                if node:
                    self.nodes[node.name] = node
                else:  # no longer usable: neither scheduled onto nor judged by a stale renewal
                    self.nodes.pop(name, None)
            after = {name: self._placement_view(n, now) for name, n in self.nodes.items()}
            # A heartbeat that only renews a live node changes no placement: pending VMIs stay where they
            # are (each renewal of each node used to queue every one of them again).
            pending = [k for k, v in self.vmis.items() if self._needs_scheduling(v)] if after != before else []
        for key in pending:  # a node came, went, changed or came back to life: pending VMIs may fit now
            self.queue.add(("vmi", *key))

    @staticmethod
    def _placement_view(node: Node, now: datetime.datetime) -> tuple:
        """What choose_node reads of a node, besides the VMIs on it."""
        return node.alive(now), node.cpu, node.memory, sorted(node.labels.items())

    # --- decisions --------------------------------------------------------------
    @staticmethod
    def _needs_scheduling(vmi: dict) -> bool:
        status = vmi.get("status") or {}
        return (
            not (vmi.get("metadata") or {}).get("deletionTimestamp")
            and not status.get("nodeName")
            and status.get("phase", "") in ("", "Pending", "Scheduling")
        )

    def reconcile(self, key: tuple[str, str]) -> None:
        with self.lock:
            vmi = self.vmis.get(key)
            nodes = list(self.nodes.values())
            placed = [v for k, v in self.vmis.items()
                      if (v.get("status") or {}).get("nodeName") and k not in self.assumed]
            placed += self.assumed.values()
            if key in self.assumed:
                return  # its bind was sent; the watch brings it back bound
        if vmi is None or not self._needs_scheduling(vmi):
            return
        node, why = choose_node(vmi, nodes, placed, now_utc())
        version = vmi["metadata"]["resourceVersion"]
        stamp = rfc3339(now_utc())
        if node is not None:
            self._assume(key, vmi, node)
            if self.bind_pool is not None:
                # kube-scheduler's binding cycle: the placement was decided (and assumed) here, one after
                # another; the writes run beside the next decisions, so a burst is not bound at one API round
                # trip after the other.
                self.bind_pool.submit(self._write_placement, key, vmi, node, why, version, stamp)
                return
        self._write_placement(key, vmi, node, why, version, stamp)

    def _write_placement(self, key: tuple[str, str], vmi: dict, node: str | None, why: str, version: str,
                         stamp: str) -> None:
        """Bind ``vmi`` to ``node`` (assumed already), or say why it cannot be placed (``node`` None)."""
        ns, name = key
        path = path_for(VMI_API, "virtualmachineinstances", ns, name)
        bound = False
        step = "the status update"
        try:
            if node is None:
                cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why,
                        "lastProbeTime": None, "lastTransitionTime": stamp}
                old = self._condition(vmi, "PodScheduled")
                same = all(old.get(k) == cond[k] for k in ("status", "reason", "message"))
                if same and (vmi.get("status") or {}).get("phase") == "Pending":
                    return  # already says exactly this: no write, no event storm
                self._patch_status(path, version, vmi, {"phase": "Pending"}, cond)
                self._event(vmi, "Warning", "FailedScheduling", why)
                return
            try:  # the node may read the VMI's Secrets before it sees the VMI (one grant at a time: one Role set)
                with self.grant_lock:
                    self.node_secrets.grant(vmi, node, [v for v in self._vmi_list() if key_of(v) != key])
            except Exception as exc:  # noqa: BLE001 - not bound now; tried again soon
                self.node_secrets.forget(vmi)
                log.warning("not binding %s/%s to %s yet: its node cannot be let read its Secrets: %s",
                            ns, name, node, exc)
                self._retry(("vmi", ns, name))
                return
            # The answer is the object as this write left it; the bind below is guarded by its resourceVersion,
            # so whoever moves the VMI on meanwhile (deletes, fails, binds or makes it again) gets a 409 here.
            fresh = self._patch_status(path, version, vmi, {"phase": "Scheduling"}, None)
            labels = dict(fresh["metadata"].get("labels") or {}, **{NODE_LABEL: node})
            status = dict(fresh.get("status") or {})
            status.update(phase="Scheduled", nodeName=node)
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            status["conditions"].append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                         "lastTransitionTime": stamp})
            step = f"the binding to node {node}"
            self.client.json_patch(path, [
                unchanged_since(fresh["metadata"]["resourceVersion"]),
                {"op": "replace" if fresh["metadata"].get("labels") else "add", "path": "/metadata/labels",
                 "value": labels},
                {"op": "replace" if "status" in fresh else "add", "path": "/status", "value": status},
            ])
            bound = True
            self.queue.forget(("vmi", ns, name))
            self._event(vmi, "Normal", "Scheduled", f"VirtualMachineInstance scheduled to node {node}")
            log.info("scheduled %s/%s to %s", ns, name, node)
        except (ConflictError, NotFoundError):
            self.node_secrets.forget(vmi)  # changed or gone meanwhile: the watch brings the new version
        except InvalidError as exc:
            self.node_secrets.forget(vmi)
            self._rejected(vmi, "FailedScheduling", step, exc)
        except Exception as exc:  # noqa: BLE001 - the API may be away: try again later
            self.node_secrets.forget(vmi)
            delay = self.queue.retry(("vmi", ns, name))
            log_failure(log, f"scheduling {ns}/{name} failed; retrying in {delay:.1f}s", exc)
        finally:
            if node is not None and not bound:
                self._forget(key)  # not bound after all: its room is free again

    def _vmi_list(self) -> list[dict]:
        with self.lock:
            return list(self.vmis.values())

    def _retry(self, item: tuple[str, str, str], seconds: float = 1.0) -> None:
        self.queue.add_after(item, seconds)

    def _queue_secrets_sync(self) -> None:
        """At most one pending sync (the queue holds a key once): it reads the whole cache anyway."""
        self.queue.add(("secrets", "", ""))

    def sync_node_secrets(self) -> None:
        try:
            ok = self.node_secrets.sync(self._vmi_list())
        except Exception as exc:  # noqa: BLE001 - e.g. no RBAC to list Roles yet: the worker must go on
            log.warning("cannot read the nodes' Secret Roles: %s", exc)
            ok = False
        if not ok:
            self._retry(("secrets", "", ""), 2.0)

    @staticmethod
    def _condition(vmi: dict, ctype: str) -> dict:
        for c in (vmi.get("status") or {}).get("conditions") or []:
            if c.get("type") == ctype:
                return c
        return {}

    def _patch_status(self, path: str, version: str, vmi: dict, fields: dict, condition: dict | None) -> dict:
        """The status with ``fields`` and ``condition``, guarded by ``version``; the API server's answer."""
        status = dict(vmi.get("status") or {}, **fields)
        if condition:
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != condition["type"]]
            status["conditions"].append(condition)
        return self.client.json_patch(path, [
            unchanged_since(version),
            {"op": "replace" if "status" in vmi else "add", "path": "/status", "value": status},
        ])

    def _rejected(self, vmi: dict, reason: str, step: str, exc: InvalidError) -> None:
        """The API server refused a write itself (not a race): say so where users look, and try again later
        with a growing backoff (the cause may be fixed meanwhile)."""
        ns, name = key_of(vmi)
        log.error("%s/%s: the API server rejected %s: %s", ns, name, step, exc.message)
        self._event(vmi, "Warning", reason, f"the API server rejected {step}: {exc.message}")
        self.queue.retry(("vmi", ns, name))

    def _event(self, vmi: dict, etype: str, reason: str, message: str) -> None:
        self.events.record(vmi, etype, reason, message)

    def check_node_health(self) -> None:
        """Mark VMIs of nodes whose lease expired; after node_grace_seconds fail them, and release the deleted
        ones from the node agent's finalizer (the agent that would remove it is gone)."""
        now = now_utc()
        with self.lock:
            if not self.leases_synced:
                return  # a node not listed yet is not a node without a Lease
            named = {(v.get("status") or {}).get("nodeName") for v in self.vmis.values()} - {None, ""}
            # A node no Lease speaks for is lost from the first time it is missed: it gets a lease duration and
            # the grace period from then, like a node the node lifecycle controller sees for the first time.
            self.lost = {name: self.lost.get(name) or Node(name=name, renewed=now)
                         for name in named - set(self.nodes) - self.leased}
            dead = {n.name: n for n in [*self.nodes.values(), *self.lost.values()] if not n.alive(now)}
            victims = [v for v in self.vmis.values() if (v.get("status") or {}).get("nodeName") in dead]
            lost = set(self.lost)
        for vmi in victims:
            node = dead[vmi["status"]["nodeName"]]
            path = path_for(VMI_API, "virtualmachineinstances", *key_of(vmi))
            since = rfc3339(node.renewed) if node.renewed else "it started"
            message = (f"node {node.name} has no heartbeat Lease, none renewed since {since}" if node.name in lost
                       else f"node {node.name} has not renewed its lease since {since}")
            final = (vmi.get("status") or {}).get("phase") in FINAL_PHASES
            finalizers = (vmi.get("metadata") or {}).get("finalizers") or []
            try:
                if node.expired_since(now) < self.node_grace_seconds:
                    if not final and self._condition(vmi, "Ready").get("reason") != "NodeUnresponsive":
                        cond = {"type": "Ready", "status": "False", "reason": "NodeUnresponsive", "message": message,
                                "lastProbeTime": None, "lastTransitionTime": rfc3339(now)}
                        self._patch_status(path, vmi["metadata"]["resourceVersion"], vmi, {}, cond)
                elif not final:
                    cond = {"type": "Ready", "status": "False", "reason": "NodeUnresponsive", "message": message,
                            "lastProbeTime": None, "lastTransitionTime": rfc3339(now)}
                    self._patch_status(path, vmi["metadata"]["resourceVersion"], vmi,
                                       {"phase": "Failed", "reason": "NodeUnresponsive"}, cond)
                    self._event(vmi, "Warning", "NodeUnresponsive", message + "; the VMI failed")
                elif vmi["metadata"].get("deletionTimestamp") and AGENT_FINALIZER in finalizers:
                    # KubeVirt lets a VMI go once its launcher pod is gone; here the node's lease says so.
                    self.client.json_patch(path, [
                        unchanged_since(vmi["metadata"]["resourceVersion"]),
                        {"op": "replace", "path": "/metadata/finalizers",
                         "value": [f for f in finalizers if f != AGENT_FINALIZER]},
                    ])
                    self._event(vmi, "Warning", "NodeUnresponsive",
                                message + "; released from the node agent's finalizer, so its deletion finishes")
                    log.info("%s/%s: released from %s (node %s is gone)", *key_of(vmi), AGENT_FINALIZER, node.name)
            except (ConflictError, NotFoundError):
                pass  # changed or gone meanwhile: judged again on the next tick
            except InvalidError as exc:
                log.error("%s/%s: the API server rejected the update for its dead node %s: %s", *key_of(vmi),
                          node.name, exc.message)
            except Exception:  # noqa: BLE001 - retried on the next tick
                log.debug("marking %s failed", key_of(vmi), exc_info=True)

    # --- running ------------------------------------------------------------------
    def _worker(self) -> None:
        while not self.stop_event.is_set():
            item = self.queue.get(timeout=0.5)
            if item is None or self.stop_event.is_set():
                continue
            kind, ns, name = item  # type: ignore[misc]
            try:
                if kind == "vm":
                    self.reconcile_vm((ns, name))
                elif kind == "secrets":
                    self.sync_node_secrets()
                else:
                    self.reconcile((ns, name))
            finally:
                self.queue.done(item)

    def reconcile_vm(self, key: tuple[str, str]) -> None:
        with self.lock:
            vm = self.vms.get(key)
            vmi = self.vmis.get(key)
        if vm is None:
            return
        try:
            self.vm_reconciler.reconcile(vm, vmi)
            self.queue.forget(("vm", *key))
        except Exception as exc:  # noqa: BLE001 - the API away: tried again with backoff (the VM's next event may
            # never come, and a Halted VM kept its VMI for good)
            delay = self.queue.retry(("vm", *key))
            log_failure(log, f"VM {key[0]}/{key[1]}: reconcile failed; retrying in {delay:.1f}s", exc)

    def _health_loop(self) -> None:
        while not self.stop_event.wait(self.health_interval):
            self.check_node_health()

    def start(self) -> None:
        informers = [
            Informer(self.client, path_for(VMI_API, "virtualmachineinstances"), self._on_vmi, self.stop_event,
                     name="vmi-informer"),
            Informer(self.client, path_for("coordination.k8s.io/v1", "leases", self.lease_namespace),
                     self._on_lease, self.stop_event, name="lease-informer"),
            Informer(self.client, path_for(VMI_API, "virtualmachines"), self._on_vm, self.stop_event,
                     name="vm-informer"),
        ]
        self.threads = [
            *(threading.Thread(target=i.run, name=i.name, daemon=True) for i in informers),
            threading.Thread(target=self._worker, name="scheduler", daemon=True),
            threading.Thread(target=self._health_loop, name="node-health", daemon=True),
        ]
        self.events.start()
        self.bind_pool = ThreadPoolExecutor(max_workers=self.bind_workers, thread_name_prefix="bind")
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        """Stop acting now; informers blocked in a watch exit at their next event without acting."""
        self.stop_event.set()
        self.queue.close()
        for thread in self.threads:
            if thread.name in ("scheduler", "node-health"):
                thread.join(timeout=5)
        if self.bind_pool is not None:
            self.bind_pool.shutdown(wait=True, cancel_futures=True)  # a bind under way ends (or fails) first
            self.bind_pool = None
        self.events.stop()


class LeaderElector:
    """Leader election on a coordination.k8s.io Lease, the way client-go's tools/leaderelection does it.

    ``lease_duration`` > ``renew_deadline`` > ``retry_period``. Every ``retry_period`` the leader renews and a
    candidate looks. A candidate takes the Lease over only when its record (holder, renewTime, ...) has not
    changed for ``lease_duration`` by the candidate's *own monotonic clock*, counted from when it saw the
    record change: the holder's renewTime is never compared with the local wall clock (two hosts' clocks
    differ, and wall clocks jump). A leader that has not renewed for ``renew_deadline`` since the start of
    its last successful renewal stops acting, even while a request to a frozen API server still hangs: it
    steps down before any candidate can count the lease as expired. An API server that is away for less
    than that is not a lost lease.
    """

    LEASES = "coordination.k8s.io/v1"

    def __init__(self, client: KubeClient, identity: str, namespace: str = "kubevirt",
                 name: str = "virtops-controller", lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        if lease_duration <= renew_deadline:
            raise ValueError(f"lease_duration ({lease_duration}) must be greater than renew_deadline "
                             f"({renew_deadline})")
        if renew_deadline <= retry_period * 1.2:  # client-go's JitterFactor
            raise ValueError(f"renew_deadline ({renew_deadline}) must be greater than 1.2 x retry_period "
                             f"({retry_period})")
        self.client, self.identity, self.namespace, self.name = client, identity, namespace, name
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self.path = path_for(self.LEASES, "leases", namespace, name)
        self._observed: dict | None = None  # the Lease's spec as last seen, and when (by self.clock) it changed
        self._observed_at = 0.0
        self._renewed_at = 0.0  # start of the last successful acquire or renewal, by self.clock

    def try_acquire(self, timeout: float | None = None) -> bool:
        """Take or renew the Lease; False when another replica holds it (or won a race for it)."""
        timeout = timeout if timeout is not None else self.renew_deadline
        stamp = now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # for people reading the Lease; never compared
        ours = {"holderIdentity": self.identity, "leaseDurationSeconds": math.ceil(self.lease_duration),
                "renewTime": stamp}
        try:
            lease = self.client.request("GET", self.path, timeout=timeout)
        except NotFoundError:
            spec = dict(ours, acquireTime=stamp, leaseTransitions=0)
            try:
                self.client.request("POST", path_for(self.LEASES, "leases", self.namespace), None, {
                    "apiVersion": self.LEASES, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}, timeout=timeout)
            except ConflictError:
                return False
            self._observe(spec)
            return True
        held = lease.get("spec") or {}
        if held != self._observed:
            self._observe(held)
        holder = held.get("holderIdentity")
        if holder and holder != self.identity:
            duration = held.get("leaseDurationSeconds") or self.lease_duration
            if self.clock() < self._observed_at + duration:
                return False
        spec = dict(held, **ours)
        if holder != self.identity:
            spec.update(acquireTime=stamp, leaseTransitions=int(held.get("leaseTransitions") or 0) + 1)
        lease["spec"] = spec
        try:
            self.client.request("PUT", self.path, None, lease, timeout=timeout)  # resourceVersion in the body
        except ConflictError:
            return False
        self._observe(spec)
        return True

    def _observe(self, spec: dict) -> None:
        self._observed, self._observed_at = spec, self.clock()

    def run(self, on_started: Callable[[], None], stop: threading.Event) -> None:
        """Campaign until leader, call on_started, and keep the lease; set ``stop`` once it is lost.

        Returns when ``stop`` is set (by the caller, or here when leadership is lost or not renewed in time).
        """
        while not stop.is_set():
            started = self.clock()
            if self._attempt(self.retry_period):
                break
            stop.wait(self.retry_period)
        if stop.is_set():
            return
        self._renewed_at = started
        log.info("%s is the leader", self.identity)
        for target, name in ((self._renew_loop, "leader-renew"), (self._deadline_watch, "leader-deadline")):
            threading.Thread(target=target, args=(stop,), name=name, daemon=True).start()
        on_started()
        stop.wait()

    def _renew_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.retry_period):
            started = self.clock()
            remaining = self.renew_deadline - (started - self._renewed_at)
            try:
                held = self.try_acquire(timeout=max(remaining, 0.1))
            except Exception as exc:  # noqa: BLE001 - unreachable or failing API server: the deadline decides
                log.warning("renewing the leader lease failed (%s); trying again", str(exc).strip() or type(exc))
                continue
            if stop.is_set():
                return
            if not held:
                log.error("another replica holds the leader lease; stopping")
                stop.set()
                return
            self._renewed_at = started

    def _deadline_watch(self, stop: threading.Event) -> None:
        """Stop acting once renew_deadline passed without a renewal, whatever the renewer is blocked in."""
        while not stop.is_set():
            late = self.clock() - self._renewed_at - self.renew_deadline
            if late >= 0:
                log.error("could not renew the leader lease within %ss; stopping", self.renew_deadline)
                stop.set()
                return
            stop.wait(min(-late, self.retry_period) + 0.01)

    def _attempt(self, timeout: float) -> bool:
        try:
            return self.try_acquire(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the API server may not answer yet: campaign again
            log.warning("acquiring the leader lease failed (%s); trying again", str(exc).strip() or type(exc))
            return False


def ensure_namespace(client: KubeClient, name: str) -> None:
    try:
        client.create(path_for("v1", "namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": name}})
    except ConflictError:
        pass


__all__ = ["Controller", "LeaderElector", "ensure_namespace"]
