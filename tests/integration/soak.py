"""The chaos soak: VMIs and VMs created, paused, unpaused and deleted at random on a two-node stack lab while
a node agent, the controller, kube-apiserver or (rarely) libvirtd is SIGKILLed and started again.

Invariants are checked all along (no domain runs twice, no VMI lost, no component exits on its own) and
once everything has settled (every VMI and VM in its desired state or Failed with a reason, no domain without
its live VMI, no finalizer stuck, every component alive and the node leases renewed). One seed decides every
choice (action, object, fault, down time): the same seed replays the same schedule; the interleaving with the
services still depends on this shared machine's timing.

libvirtd is shared by everything on this host (other engineers' tests, their guests' monitors): it is killed at
most ``libvirtd_kills`` times per run (1 by default, whatever the length), never more.

tests/integration/test_chaos_soak.py runs it; the sizes and how to run it by hand are in docs/lab.md.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import urllib3
from agent_process import restart_libvirtd
from virtops.agent.hypervisor import LibvirtHypervisor
from virtops.api.subresources import is_paused  # for picking targets; the checks read the API
from virtops.kube import ApiError, ConflictError, KubeClient, NotFoundError, path_for
from virtops.lab import ControlPlane
from virtops.lab.control_plane import LabInfo, _start_ticks

VMIS = "virtualmachineinstances"
VMS = "virtualmachines"
FAULT_KINDS = ("agent", "controller", "kube-apiserver", "libvirtd")
# Lab timing: a node lease of 6 s and 4 s of grace, so an agent down for longer marks its node's VMIs Failed.
LEASE_SECONDS, NODE_GRACE_SECONDS = 6, 4


def tiny_spec() -> dict[str, Any]:
    """examples/vmi-diskless.yaml in small: no disk, 64 MiB; a short grace (there is no OS to shut down)."""
    return {"terminationGracePeriodSeconds": 1,
            "domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}


@dataclass
class Tracked:
    """What the soak asked for one VMI (kind "vmi") or VM (kind "vm"); the API's answers decide how sure it is."""

    kind: str
    name: str
    uid: str | None = None
    want: str = "running"  # running | absent (vmi); running | halted | absent (vm)
    paused: bool | None = False  # the last answered pause/unpause; None: its answer was lost
    certain: bool = True  # False: the last write may or may not have happened (the connection broke)


class Unsent(Exception):
    """The request never reached the API server (connection refused): nothing happened."""


class Unsure(Exception):
    """The request may or may not have been applied (broken connection, 5xx from a proxy, timeout)."""


@dataclass
class Report:
    seed: int
    seconds: float
    faults: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)
    violations: dict[str, list[str]] = field(default_factory=dict)

    def violate(self, invariant: str, what: str) -> None:
        self.violations.setdefault(invariant, []).append(what)

    def render(self, invariants: tuple[str, ...]) -> str:
        lines = [f"chaos soak: seed {self.seed}, {self.seconds:.0f} s of chaos "
                 f"(replay: VIRTOPS_SOAK_SEED={self.seed} VIRTOPS_SOAK_SECONDS={self.seconds:.0f})",
                 "faults injected: " + ", ".join(f"{k} {self.faults[k]}" for k in FAULT_KINDS),
                 "operations: " + ", ".join(f"{k} {v}" for k, v in sorted(self.ops.items())),
                 "invariants:"]
        for name in invariants:
            bad = self.violations.get(name, [])
            verdict = "held" if not bad else f"VIOLATED {len(bad)}x: " + "; ".join(bad[:5])
            lines.append(f"  {name} (checked {self.checks[name]}x): {verdict}")
        return "\n".join(lines)


NO_DOUBLE_RUN = "no domain runs twice"
NO_ORPHAN = "no domain without its live VMI after settling"
DESIRED = "every VMI/VM reaches its desired state or Failed with a reason"
NO_STUCK_FINALIZER = "no finalizer stuck"
NO_LOSS = "no VMI or VM lost"
NO_CRASH = "no agent/controller/apiserver exits on its own (no crash loop)"
NO_TRACEBACK = "no traceback in an agent's or the controller's log (expected faults are one-line errors)"
INVARIANTS = (NO_DOUBLE_RUN, NO_ORPHAN, DESIRED, NO_STUCK_FINALIZER, NO_LOSS, NO_CRASH, NO_TRACEBACK)


class ChaosSoak:
    def __init__(self, plane: ControlPlane, info: LabInfo, namespace: str, nodes: list[str], *, seed: int,
                 seconds: float, libvirtd_kills: int = 1, fault_every: float = 8.0, max_vmis: int = 8,
                 max_vms: int = 3, say: Callable[[str], None] = print) -> None:
        self.plane, self.ns, self.nodes = plane, namespace, nodes
        self.rng = random.Random(seed)
        self.report = Report(seed, seconds)
        self.seconds, self.fault_every = seconds, fault_every
        self.libvirtd_left = libvirtd_kills
        self.say = say
        self.client = KubeClient.from_kubeconfig(info.kubeconfig, user_agent="virtops-chaos-soak")
        self.objects: dict[tuple[str, str], Tracked] = {}
        self.vmi_names = [f"v{i}" for i in range(max_vmis)]
        self.vm_names = [f"m{i}" for i in range(max_vms)]
        self.down: str | None = None  # the component a fault has stopped right now
        self.seen_vmis: dict[str, dict] = {}  # the last listing, by name
        self.seen_vms: dict[str, dict] = {}
        # Each component's command line, to start one again should it exit on its own.
        self.argv = {c: Path(f"/proc/{e['pid']}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
                     for c, e in info.pids.items()}
        self.started = time.monotonic()

    # --- the API, with each failure classified ---------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (NotFoundError, ConflictError):
            raise
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise Unsure(f"{exc.status} {exc.message}") from exc
            raise
        except urllib3.exceptions.NewConnectionError as exc:
            raise Unsent(str(exc)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unsure(str(exc)) from exc

    def path(self, plural: str, name: str | None = None) -> str:
        return path_for("kubevirt.io/v1", plural, self.ns, name)

    def get(self, plural: str, name: str) -> dict | None:
        try:
            return self.call(self.client.get, self.path(plural, name))
        except NotFoundError:
            return None

    # --- the run ------------------------------------------------------------------------------------
    def run(self) -> Report:
        self.say(f"chaos soak: seed {self.report.seed}, {self.seconds:.0f} s, nodes {', '.join(self.nodes)}")
        # Every kind of fault once, in a seeded order, then at random.
        plan = [k for k in FAULT_KINDS if k != "libvirtd" or self.libvirtd_left > 0]
        self.rng.shuffle(plan)
        end = self.started + self.seconds
        next_fault = time.monotonic() + self.rng.uniform(2, self.fault_every)
        while time.monotonic() < end:
            self.step()
            if time.monotonic() >= next_fault:
                self.fault(plan.pop(0) if plan else self.pick_fault())
                next_fault = time.monotonic() + self.rng.uniform(self.fault_every / 2, self.fault_every * 1.5)
        self.say(f"chaos over after {time.monotonic() - self.started:.0f} s; settling")
        self.settle()
        return self.report

    def step(self) -> None:
        self.check_running()
        self.operate()
        time.sleep(self.rng.uniform(0.1, 0.6))

    def run_for(self, seconds: float) -> None:
        """Keep operating while a component is down."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            self.step()

    # --- faults ---------------------------------------------------------------------------------------
    def pick_fault(self) -> str:
        kinds, weights = ["agent", "controller", "kube-apiserver"], [4, 2, 2]
        if self.libvirtd_left > 0:
            kinds.append("libvirtd")
            weights.append(0.5)
        return self.rng.choices(kinds, weights)[0]

    def fault(self, kind: str) -> None:
        if kind == "libvirtd" and self.libvirtd_left <= 0:
            kind = "agent"
        component = {"agent": f"agent-{self.rng.choice(self.nodes)}", "controller": "controller",
                     "kube-apiserver": "kube-apiserver", "libvirtd": "libvirtd"}[kind]
        # Mostly brief; one agent outage in five outlasts its lease and grace, so the controller fails its VMIs.
        down = self.rng.uniform(0.5, 4.0)
        if kind == "agent" and self.rng.random() < 0.2:
            down = LEASE_SECONDS + NODE_GRACE_SECONDS + self.rng.uniform(1, 4)
        self.report.faults[kind] += 1
        self.say(f"[{time.monotonic() - self.started:5.0f}s] SIGKILL {component}, {down:.1f} s down")
        self.down = component
        try:
            if kind == "libvirtd":
                self.libvirtd_left -= 1
                restart_libvirtd(kill=True, while_down=lambda: self.run_for(down))
            else:
                self.plane.restart(component, while_down=lambda: self.run_for(down), kill=True)
        finally:
            self.down = None

    # --- random operations ------------------------------------------------------------------------
    def live(self, kind: str) -> list[Tracked]:
        return [t for t in self.objects.values() if t.kind == kind and t.want != "absent"]

    def operate(self) -> None:
        """One action, on objects the last listing makes likely to accept it (names of objects still being
        deleted are not reused yet; pause goes to Running VMIs, unpause to paused ones)."""
        def free(kind: str, names: list[str], seen: dict[str, dict]) -> list[str]:
            return [n for n in names if n not in seen and self.objects.get((kind, n), Tracked(kind, n, want="absent"))
                    .want == "absent"]

        free_vmis = free("vmi", self.vmi_names, self.seen_vmis)
        free_vms = free("vm", self.vm_names, self.seen_vms)
        choices: list[tuple[Callable[[], None], float]] = []
        if free_vmis:
            choices.append((lambda: self.create("vmi", self.rng.choice(free_vmis)), 3))
        if free_vms:
            choices.append((lambda: self.create("vm", self.rng.choice(free_vms)), 1))
        owner = {("vmi", n): self.objects.get(("vmi", n)) or self.objects.get(("vm", n)) for n in self.seen_vmis}
        running = {n: is_paused(o) for n, o in self.seen_vmis.items()
                   if (o.get("status") or {}).get("phase") == "Running" and owner["vmi", n] is not None}
        to_pause = [owner["vmi", n] for n, paused in running.items() if not paused]
        to_unpause = [owner["vmi", n] for n, paused in running.items() if paused]
        if to_pause:
            choices.append((lambda: self.power(self.rng.choice(to_pause), "pause"), 2))
        if to_unpause:
            choices.append((lambda: self.power(self.rng.choice(to_unpause), "unpause"), 2))
        if self.live("vmi"):
            choices.append((lambda: self.delete(self.rng.choice(self.live("vmi"))), 1.5))
        if self.live("vm"):
            choices.append((lambda: self.delete(self.rng.choice(self.live("vm"))), 0.5))
            choices.append((lambda: self.run_strategy(self.rng.choice(self.live("vm"))), 1))
        action = self.rng.choices([c for c, _w in choices], [w for _c, w in choices])[0]
        action()

    def count(self, op: str, outcome: str) -> None:
        self.report.ops[f"{op}:{outcome}"] += 1

    def create(self, kind: str, name: str) -> None:
        if kind == "vmi":
            body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                    "metadata": {"name": name}, "spec": tiny_spec()}
        else:
            body = {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
                    "spec": {"runStrategy": "Always", "template": {"spec": tiny_spec()}}}
        op = f"create-{kind}"
        try:
            created = self.call(self.client.create, self.path(VMIS if kind == "vmi" else VMS), body)
        except ConflictError:  # the last one of that name is still finishing its deletion
            self.count(op, "exists")
            return
        except Unsent:
            self.count(op, "unsent")
            return
        except Unsure:
            self.count(op, "unsure")
            self.objects[kind, name] = Tracked(kind, name, certain=False)
            return
        self.count(op, "ok")
        self.objects[kind, name] = Tracked(kind, name, uid=created["metadata"]["uid"])

    def delete(self, t: Tracked) -> None:
        op = f"delete-{t.kind}"
        try:
            self.call(self.client.delete, self.path(VMIS if t.kind == "vmi" else VMS, t.name),
                      {"propagationPolicy": "Background"})
            self.count(op, "ok")
            t.want, t.certain = "absent", True
        except NotFoundError:
            self.count(op, "not-found")
            if t.certain and t.uid:
                self.report.violate(NO_LOSS, f"{t.kind} {t.name} was gone when the soak deleted it")
            t.want, t.certain = "absent", True
        except Unsent:
            self.count(op, "unsent")
        except Unsure:
            self.count(op, "unsure")
            t.want, t.certain = "absent", False

    def power(self, t: Tracked, verb: str) -> None:
        path = f"/apis/subresources.kubevirt.io/v1/namespaces/{self.ns}/{VMIS}/{t.name}/{verb}"
        try:
            self.call(self.client.request, "PUT", path, None, {})
            self.count(verb, "ok")
            t.paused = verb == "pause"
        except ConflictError as exc:
            self.count(verb, "409")
            if "already paused" in exc.message:
                t.paused = True
            elif "not paused" in exc.message:
                t.paused = False
        except NotFoundError:
            self.count(verb, "404")  # a VM's VMI between incarnations, or a VMI not created yet
        except Unsent:
            self.count(verb, "unsent")
        except (Unsure, ApiError):
            self.count(verb, "unsure")  # e.g. 503 while the controller (the aggregated API) is down
            t.paused = None

    def run_strategy(self, t: Tracked) -> None:
        strategy = "Halted" if t.want == "running" else "Always"
        try:
            self.call(self.client.merge_patch, self.path(VMS, t.name), {"spec": {"runStrategy": strategy}})
            self.count(f"vm-{strategy.lower()}", "ok")
            t.want, t.certain, t.paused = ("halted" if strategy == "Halted" else "running"), True, False
        except NotFoundError:
            self.count(f"vm-{strategy.lower()}", "not-found")
        except Unsent:
            self.count(f"vm-{strategy.lower()}", "unsent")
        except Unsure:
            self.count(f"vm-{strategy.lower()}", "unsure")
            t.certain, t.paused = False, None

    # --- checks during the run ----------------------------------------------------------------------
    def check_running(self) -> None:
        self.check_double_run()
        self.check_components()
        try:
            vmis = {o["metadata"]["name"]: o for o in self.call(self.client.list, self.path(VMIS))[0]}
            vms = {o["metadata"]["name"]: o for o in self.call(self.client.list, self.path(VMS))[0]}
        except (Unsent, Unsure):
            return
        self.seen_vmis, self.seen_vms = vmis, vms
        self.check_loss(vmis, vms)

    def check_double_run(self) -> None:
        """At most one qemu per domain name of this namespace (libvirt's names are unique; qemu processes
        are what really runs, and a libvirtd that lost track of one would start a second)."""
        self.report.checks[NO_DOUBLE_RUN] += 1
        for domain, pids in qemu_processes(f"{self.ns}_").items():
            if len(pids) > 1:
                self.report.violate(NO_DOUBLE_RUN, f"{domain} runs in qemu pids {pids}")

    def check_components(self) -> None:
        self.report.checks[NO_CRASH] += 1
        info = self.plane.status()
        for component, entry in (info.pids if info else {}).items():
            if component != self.down and _start_ticks(entry["pid"]) != entry["ticks"]:
                self.report.violate(NO_CRASH, f"{component} exited on its own "
                                              f"(log {info.state_dir}/logs/{component}.log)")
                if self.down is None:  # (during a fault, the fault's restart owns the lab's state file)
                    # Started again so the soak can go on; its crash stays reported.
                    info.pids[component] = self.plane._spawn(component, self.argv[component])
                    self.plane._save(info)

    def check_loss(self, vmis: dict[str, dict], vms: dict[str, dict]) -> None:
        """Anything the soak created and did not delete is still there, with the same uid."""
        self.report.checks[NO_LOSS] += 1
        for t in list(self.objects.values()):
            seen = (vmis if t.kind == "vmi" else vms).get(t.name)
            if not t.certain and t.uid is None:
                # The create's answer was lost: a listing after it says whether it happened.
                if seen is not None:
                    t.uid, t.certain = seen["metadata"]["uid"], True
                elif t.want != "absent":
                    del self.objects[t.kind, t.name]
                continue
            if t.want == "absent" or t.uid is None:
                continue
            if seen is None or seen["metadata"]["uid"] != t.uid:
                self.report.violate(NO_LOSS, f"{t.kind} {t.name} (uid {t.uid}) disappeared")
                t.want, t.certain = "absent", True  # reported once

    # --- settling and the final checks ------------------------------------------------------------
    def settle(self, attempts: int = 1200, delay: float = 0.25) -> None:
        self.check_components()
        self.wait(self.lease_renewed, attempts, delay, "node leases renewed after settling",
                  NO_CRASH)
        self.resolve()
        self.report.checks[DESIRED] += 1
        problems = self.wait(self.desired_problems, attempts, delay, None, DESIRED)
        for problem in problems:
            self.report.violate(DESIRED, problem)
        self.report.checks[NO_STUCK_FINALIZER] += 1
        vmis, _rv = self.call(self.client.list, self.path(VMIS))
        vms, _rv = self.call(self.client.list, self.path(VMS))
        for obj in vmis + vms:
            if obj["metadata"].get("deletionTimestamp"):
                self.report.violate(NO_STUCK_FINALIZER, f"{obj['kind']} {obj['metadata']['name']} still has "
                                                        f"finalizers {obj['metadata'].get('finalizers')}")
        self.report.checks[NO_ORPHAN] += 1
        for problem in self.orphans({o["metadata"]["name"]: o for o in vmis}):
            self.report.violate(NO_ORPHAN, problem)
        self.check_double_run()
        self.check_components()

    def wait(self, problems_of: Callable[[], Any], attempts: int, delay: float, label: str | None,
             invariant: str) -> list[str]:
        """Bounded: ``attempts`` tries. Returns the last problems (empty when settled)."""
        problems: Any = ["not checked"]
        for _attempt in range(attempts):
            try:
                problems = problems_of()
            except (Unsent, Unsure, ApiError) as exc:
                problems = [f"API unavailable: {exc}"]
            if not problems:
                return []
            time.sleep(delay)
        if label is not None:
            self.report.violate(invariant, f"{label}: {problems}")
        return list(problems) if isinstance(problems, list) else [str(problems)]

    def lease_renewed(self) -> list[str]:
        """Each node's lease renews (its agent is alive and connected): two reads a heartbeat apart differ."""
        path = path_for("coordination.k8s.io/v1", "leases", "kube-node-lease")
        first = {n: self.call(self.client.get, f"{path}/{n}")["spec"].get("renewTime") for n in self.nodes}
        time.sleep(LEASE_SECONDS / 4 + 0.5)
        again = {n: self.call(self.client.get, f"{path}/{n}")["spec"].get("renewTime") for n in self.nodes}
        return [f"lease {n} not renewed" for n in self.nodes if first[n] == again[n]]

    def resolve(self) -> None:
        """Settle what the chaos left unsure: writes re-issued (idempotent) or their outcome read back."""
        for t in list(self.objects.values()):
            plural = VMIS if t.kind == "vmi" else VMS
            obj = self.with_retries(lambda p=plural, n=t.name: self.get(p, n))
            if not t.certain and t.uid is None:  # a create whose answer was lost
                if obj is None:
                    del self.objects[t.kind, t.name]
                    continue
                t.uid, t.certain = obj["metadata"]["uid"], True
            if t.want == "absent" and not t.certain and obj is not None:
                self.with_retries(lambda p=plural, n=t.name: self.delete_quietly(p, n))
            if t.kind == "vm" and not t.certain and obj is not None:  # a runStrategy patch whose answer was lost
                t.want = "halted" if obj["spec"].get("runStrategy") == "Halted" else "running"
            t.certain = True

    def delete_quietly(self, plural: str, name: str) -> bool:
        try:
            self.call(self.client.delete, self.path(plural, name), {"propagationPolicy": "Background"})
        except NotFoundError:
            pass
        return True

    def with_retries(self, fn: Callable[[], Any], attempts: int = 120) -> Any:
        for _attempt in range(attempts):
            try:
                return fn()
            except (Unsent, Unsure):
                time.sleep(0.5)
        raise AssertionError("the API server did not answer while settling")

    def desired_problems(self) -> list[str]:
        vmis = {o["metadata"]["name"]: o for o in self.call(self.client.list, self.path(VMIS))[0]}
        vms = {o["metadata"]["name"]: o for o in self.call(self.client.list, self.path(VMS))[0]}
        domains = libvirt_domains(f"{self.ns}_")
        problems = []
        for t in self.objects.values():
            if t.kind == "vm":
                problems += self.vm_problems(t, vms.get(t.name), vmis.get(t.name), domains)
            else:
                problems += self.vmi_problems(t, vmis.get(t.name), domains)
        return problems

    def vm_problems(self, t: Tracked, vm: dict | None, vmi: dict | None, domains: dict) -> list[str]:
        if t.want == "absent":
            if vm is not None:
                return [f"vm {t.name} not gone"]
            owned = vmi is not None and t.uid in [o.get("uid") for o in vmi["metadata"].get("ownerReferences") or []]
            # The garbage collector's part: a deleted VM's VMI goes with it (background propagation).
            return [f"vm {t.name} deleted but its VMI remains ({describe_vmi(vmi, {'metadata': {'uid': t.uid}})})"] \
                if owned else []
        if vm is None:
            return [f"vm {t.name} missing"]
        if t.want == "halted":
            domain = f"{self.ns}_{t.name}" in domains
            if vmi is None and not domain:
                return []
            return [f"vm {t.name} halted but {'its domain' if vmi is None else describe_vmi(vmi, vm)} remains"
                    f"{' with its domain' if vmi is not None and domain else ''} (vm status: "
                    f"{(vm.get('status') or {}).get('printableStatus')}, conditions "
                    f"{[(c.get('type'), c.get('reason')) for c in (vm.get('status') or {}).get('conditions') or []]})"]
        if vmi is None:
            return [f"vm {t.name} has no VMI"]
        # A VM's VMI may be a new incarnation (its last one failed), which starts unpaused whatever the soak last
        # asked of the VM: its Paused condition and its domain must agree.
        return self.running_problems(f"vm {t.name}'s vmi", vmi, is_paused(vmi), domains)

    def vmi_problems(self, t: Tracked, vmi: dict | None, domains: dict) -> list[str]:
        if t.want == "absent":
            still = [what for what, there in (("VMI", vmi is not None),
                                              ("domain", f"{self.ns}_{t.name}" in domains)) if there]
            # A VMI of the same name created later is a new object: only this uid must be gone.
            if vmi is not None and vmi["metadata"]["uid"] != t.uid:
                still.remove("VMI")
            return [f"vmi {t.name} deleted but its {' and '.join(still)} remain"] if still else []
        if vmi is None:
            return [f"vmi {t.name} missing"]
        # Pause acts on the domain through the node API: the API's last answer is what must hold (its Paused
        # condition and its domain); when that answer was lost, condition and domain must still agree.
        paused = is_paused(vmi) if t.paused is None else t.paused
        return self.running_problems(f"vmi {t.name}", vmi, paused, domains)

    def running_problems(self, label: str, vmi: dict, paused: bool, domains: dict) -> list[str]:
        status = vmi.get("status") or {}
        phase = status.get("phase")
        if phase == "Failed":
            reasons = [c.get("reason") for c in status.get("conditions") or [] if c.get("reason")]
            return [] if (status.get("reason") or reasons) else [f"{label} Failed without a reason"]
        if phase != "Running":
            return [f"{label} is {phase or 'unset'}, not Running"]
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        shown = conditions.get("Paused", {}).get("status") == "True"
        state = domains.get(f"{self.ns}_{vmi['metadata']['name']}", (None, None))[1]
        want_state = "paused" if paused else "running"
        if shown != paused or state != want_state:
            return [f"{label} wants {want_state}: Paused condition {shown}, libvirt {state}"]
        return []

    def orphans(self, vmis: dict[str, dict]) -> list[str]:
        """Every domain of this namespace belongs to a VMI of the same uid that is not final, on its node."""
        problems = []
        for domain, (marker, state) in libvirt_domains(f"{self.ns}_").items():
            vmi = vmis.get(domain.split("_", 1)[1])
            if vmi is None or marker is None or marker.uid != vmi["metadata"]["uid"]:
                problems.append(f"domain {domain} ({state}) has no VMI of its uid")
            elif (vmi.get("status") or {}).get("phase") in ("Succeeded", "Failed") and state != "shutoff":
                problems.append(f"domain {domain} is {state} but its VMI is {vmi['status']['phase']}")
            elif marker.node != (vmi.get("status") or {}).get("nodeName"):
                problems.append(f"domain {domain} is marked for node {marker.node}, its VMI runs on "
                                f"{(vmi.get('status') or {}).get('nodeName')}")
        return problems


def describe_vmi(vmi: dict, vm: dict) -> str:
    """Enough to tell who should have removed a VM's VMI: this VM's controller, or the garbage collector (the VMI
    belongs to an earlier VM of the same name), and how far its deletion got."""
    meta, status = vmi["metadata"], vmi.get("status") or {}
    owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
    owner = ("this VM" if vm["metadata"]["uid"] in owners else f"an earlier VM {owners}" if owners else "no VM")
    deleting = f", deleting since {meta['deletionTimestamp']} (finalizers {meta.get('finalizers')})" \
        if meta.get("deletionTimestamp") else ""
    return f"its VMI (uid {meta['uid']}, owned by {owner}, phase {status.get('phase')}{deleting})"


def libvirt_domains(prefix: str) -> dict[str, tuple[Any, str]]:
    """Domains named ``prefix``*: (the agent's marker, libvirt state name)."""
    hv = LibvirtHypervisor()
    try:
        out = {}
        for name in hv.list_names(prefix):
            state = hv.state(name)
            out[name] = (hv.marker(name), state.libvirt_state if state else "gone")
        return out
    except libvirt.libvirtError:
        return {}
    finally:
        hv.close()


def qemu_processes(prefix: str) -> dict[str, list[int]]:
    """qemu processes by the domain name in their ``-name guest=NAME,...`` argument."""
    found: dict[str, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or b"qemu-system" not in argv[0]:
            continue
        for arg in argv:
            if arg.startswith(b"guest="):
                name = arg.split(b",", 1)[0].removeprefix(b"guest=").decode()
                if name.startswith(prefix):
                    found.setdefault(name, []).append(int(proc.name))
    return found


def components_log_tracebacks(state_dir: str) -> dict[str, list[str]]:
    """Tracebacks in each component's log, each told by the log line before it and the exception it ends with.

    A fault the soak injects (a peer SIGKILLed, the API away) is an expected error and is logged on one line;
    a traceback is a bug, and the soak fails on it (NO_TRACEBACK).
    """
    out: dict[str, list[str]] = {}
    for log in sorted(Path(state_dir, "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("Traceback (most recent call last)"):
                continue
            before = lines[i - 1].strip() if i else ""
            end = next((x for x in lines[i + 1:] if x and not x[0].isspace()), "?")
            out.setdefault(log.stem, []).append(f"{before[:200]} -> {end[:300]}")
    return out


def default_seed() -> int:
    return int(os.environ.get("VIRTOPS_SOAK_SEED") or random.SystemRandom().randrange(1, 10**6))
