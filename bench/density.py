"""Scenario `density` (issue #18): KubeVirt's density method on a stack lab with two agents, and its floor.

KubeVirt's performance lane creates 100 minimal VMIs 100 ms apart and reports creation → Running and
deletion → gone as P50/P95/P99. Here the same, once paced (100 ms apart) and once all at once:

- **ours**: POST each VMI (its own monotonic timestamp as it is sent: the objects' timestamps have whole
  seconds only) until the bench's watch sees phase Running; then DELETE each in the same pattern until the
  watch sees it gone (the agent destroyed and undefined the domain and let the VMI go). The agents' and the
  controller's CPU seconds and peak RSS over the cycle; kube-apiserver requests per VMI (its
  apiserver_request_total, by verb and resource; the bench's own POST, DELETE and watch are in it).
- **floor**: the same domains (the XML our agent writes for those VMIs) started and destroyed straight
  through libvirt-python on one connection, as the agents do: defineXML + create, then destroy (timed) and
  undefine (after it, untimed: the agent, too, releases the VMI once its guest is destroyed and undefines
  after), with the same arrival pattern and as many workers as the two agents have together. No Kubernetes,
  no agent.

Each percentile is a line ours vs floor (ratio ours/floor), with KubeVirt's published figures as reference
series (their machine in the label); density.png draws the percentiles with KubeVirt's as labelled lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from report import Line
from tools import ROOT, VMI_API, Lab, VmiWatch, cpu_seconds, phase, rss_mib, say, tiny_vmi

SCENARIO = "density"
OURS = "ours: 2 agents, stack lab"
FLOOR = "floor: libvirt-python, same domains"
# KubeVirt's published density figures (issue #18): its performance lane's recent CI.
KUBEVIRT_CI = "KubeVirt CI (4 nested nodes, real QEMU; published)"
KUBEVIRT_FAKE = "KubeVirt control plane on fake nodes (published)"
KUBEVIRT = {KUBEVIRT_CI: {"P50": 17.2, "P95": 28.4, "P99": 29.7}, KUBEVIRT_FAKE: {"P50": 0.62, "P95": 1.36}}
PERCENTILES = ("P50", "P95", "P99")
AGENT_WORKERS = 4  # virtops.agent.config's default, per agent


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, float]:
    return {name: percentile(values, float(name[1:])) for name in PERCENTILES}


def paced(count: int, interval: float, action, workers: int) -> dict[int, float]:
    """action(i) for i in range(count), the i-th due at start + i * interval (0: all at once), each in a pool
    of `workers` threads; returns each one's arrival time (monotonic, when it was due and handed to the pool):
    time spent waiting for a free worker counts, as a VMI waiting in an agent's queue counts for ours."""
    sent: dict[int, float] = {}
    start = time.monotonic()

    def one(i: int) -> None:
        action(i)

    with ThreadPoolExecutor(workers) as pool:
        futures = []
        for i in range(count):
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent[i] = time.monotonic()
            futures.append(pool.submit(one, i))
        for f in futures:
            f.result()
    return sent


class Sampler:
    """Peak RSS (MiB) of some processes, every 0.25 s in a thread; CPU seconds from start to stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0.0)
        self.cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        self.cpu: dict[str, float] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="density-sampler")
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.25):
            for k, p in self.pids.items():
                try:
                    self.peak[k] = max(self.peak[k], rss_mib(p))
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.cpu = {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}


def ours(lab: Lab, count: int, interval: float, workers: int) -> dict[str, Any]:
    """One create → Running → delete → gone cycle of `count` VMIs on the stack."""
    ns = lab.namespace(f"density-{int(interval * 1000)}ms-{uuid.uuid4().hex[:5]}")
    names = [f"d{i:03}" for i in range(count)]
    pids = {"controller": lab.pid("controller"), **{c: lab.pid(c) for c in lab.agent_components()}}
    before = lab.metrics()
    sampler = Sampler(pids)
    with VmiWatch(lab, ns) as watch:
        sent = paced(count, interval, lambda i: lab.client.create(lab.vmi_path(ns), tiny_vmi(names[i])), workers)
        first_sent = min(sent.values())
        running = watch.wait(names, lambda s: phase(s.obj) == "Running", after=first_sent, timeout=900)
        create = [running[names[i]] - sent[i] for i in range(count)]
        say(f"density ours {interval * 1000:.0f} ms apart: {count} Running, P50 {percentile(create, 50):.2f}s "
            f"P95 {percentile(create, 95):.2f}s, last after {max(running.values()) - first_sent:.1f}s")
        deleted = paced(count, interval, lambda i: lab.client.delete(lab.vmi_path(ns, names[i])), workers)
        gone = watch.wait(names, lambda s: s.type == "DELETED", after=min(deleted.values()), timeout=900)
        delete = [gone[names[i]] - deleted[i] for i in range(count)]
        say(f"density ours {interval * 1000:.0f} ms apart: {count} gone, P50 {percentile(delete, 50):.2f}s "
            f"P95 {percentile(delete, 95):.2f}s")
    sampler.stop()
    after = lab.metrics()
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}
    by_verb: dict[str, float] = {}
    for (verb, resource), v in delta.items():
        key = f"{verb} {resource}"
        by_verb[key] = by_verb.get(key, 0.0) + v / count
    lab.client.request("DELETE", f"/api/v1/namespaces/{ns}")
    return {"create": create, "delete": delete, "cpu": sampler.cpu, "rss": sampler.peak,
            "requests_per_vmi": sum(delta.values()) / count, "requests_by_kind": dict(sorted(by_verb.items()))}


def floor(lab: Lab, count: int, interval: float, workers: int) -> dict[str, Any]:
    """The same domains straight through libvirt-python: define + create, then destroy + undefine."""
    import libvirt
    from virtops.agent.domain import domain_xml
    from virtops.node.hypervisor import domain_type as detect_domain_type

    kind = detect_domain_type()
    run = uuid.uuid4().hex[:5]
    state = Path(tempfile.mkdtemp(prefix="virtops-density-floor-"))
    os.chmod(state, 0o755)  # qemu runs as libvirt-qemu and writes its serial log there
    xmls = []
    for i in range(count):
        vmi = tiny_vmi(f"d{i:03}")
        vmi["metadata"].update(namespace=f"floor{run}", uid=str(uuid.uuid4()))
        vmi_dir = state / f"d{i:03}"
        vmi_dir.mkdir()
        os.chmod(vmi_dir, 0o755)
        # A node no agent has: the lab's agents leave these domains alone, and `down` does not touch them.
        xmls.append(domain_xml(vmi, domain_type=kind, state_dir=vmi_dir, node_name=f"density-floor-{run}"))
    conn = libvirt.open("qemu:///system")
    done: dict[int, float] = {}
    gone: dict[int, float] = {}
    doms: dict[int, Any] = {}

    def start(i: int) -> None:
        dom = conn.defineXML(xmls[i])
        dom.create()
        doms[i] = dom
        done[i] = time.monotonic()

    def stop(i: int) -> None:
        doms[i].destroy()
        gone[i] = time.monotonic()  # the guest is gone; ours releases its VMI here too, and undefines after
        doms[i].undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)

    try:
        sent = paced(count, interval, start, workers)
        create = [done[i] - sent[i] for i in range(count)]
        say(f"density floor {interval * 1000:.0f} ms apart: P50 {percentile(create, 50):.2f}s "
            f"P95 {percentile(create, 95):.2f}s")
        stopped = paced(count, interval, stop, workers)
        delete = [gone[i] - stopped[i] for i in range(count)]
        say(f"density floor {interval * 1000:.0f} ms apart: destroy P50 {percentile(delete, 50):.2f}s "
            f"P95 {percentile(delete, 95):.2f}s")
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(f"floor{run}_"):
                try:
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
                except libvirt.libvirtError:
                    pass
        conn.close()
    return {"create": create, "delete": delete}


def libvirtd_pid() -> int:
    return int(Path("/run/libvirtd.pid").read_text().strip())


def reaped_by_pid1() -> bool:
    """Whether libvirtd's orphans (its qemus) go to PID 1, not to a subreaper (hack/subreaper.py)."""
    stat = Path(f"/proc/{libvirtd_pid()}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1]) == 1


def restart_libvirtd(subreaper: bool) -> None:
    """Restart this host's libvirtd (its guests keep running; the agents reconnect), plain (`libvirtd -d`, its
    orphans reaped by PID 1) or as hack/libvirt-up.sh starts it (under hack/subreaper.py)."""
    pid = libvirtd_pid()
    os.kill(pid, signal.SIGTERM)
    for attempt in range(400):  # gone, not only a zombie: a zombie libvirtd still counts for pgrep
        if not Path(f"/proc/{pid}").exists():
            break
        if attempt == 300:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    if subreaper:
        subprocess.run([str(ROOT / "hack" / "libvirt-up.sh")], check=True)
    else:
        subprocess.run(["libvirtd", "-d"], check=True)
    for _attempt in range(100):
        if subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True,
                          check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("libvirtd does not answer after its restart")


def density(lab: Lab, count: int, reps: int, lines: list[Line], raw: dict[str, Any], restart: bool = True) -> None:
    """Before (libvirtd's orphans reaped by this sandbox's PID 1) and after (libvirtd under hack/subreaper.py):
    paced (100 ms apart) and all at once; a repetition runs ours and the floor, alternating the order."""
    workers = AGENT_WORKERS * len(lab.agent_components())
    if restart and not Path("/run/systemd/system").is_dir():
        for subreaper, when in ((False, "before: qemu reaped by PID 1"), (True, "after: libvirtd under a subreaper")):
            say(f"density: restarting libvirtd ({when})")
            restart_libvirtd(subreaper)
            lab.warm_up()  # both agents back on libvirt
            assert reaped_by_pid1() is not subreaper, "libvirtd did not start the way asked"
            cycle(lab, count, reps, lines, raw, workers, f" ({when})")
    else:
        cycle(lab, count, reps, lines, raw, workers, "")


def cycle(lab: Lab, count: int, reps: int, lines: list[Line], raw: dict[str, Any], workers: int,
          when: str) -> None:
    for label, interval in ((f"{count} VMIs 100 ms apart{when}", 0.1), (f"{count} VMIs all at once{when}", 0.0)):
        runs: dict[str, list[dict[str, Any]]] = {OURS: [], FLOOR: []}
        for rep in range(reps):
            order = [OURS, FLOOR] if rep % 2 == 0 else [FLOOR, OURS]
            for side in order:
                # The client sends all at once with `workers` connections; paced sends never overlap much.
                result = (ours(lab, count, interval, workers) if side == OURS
                          else floor(lab, count, interval, workers))
                runs[side].append(result)
        raw[label] = runs
        for what, key in (("create → Running", "create"), ("delete → gone", "delete")):
            ours_all = [v for r in runs[OURS] for v in r[key]]
            floor_all = [v for r in runs[FLOOR] for v in r[key]]
            for name in PERCENTILES:
                p = float(name[1:])
                series = {OURS: [percentile(ours_all, p)], FLOOR: [percentile(floor_all, p)]}
                refs = []
                if key == "create" and interval:
                    for ref, figures in KUBEVIRT.items():
                        if name in figures:
                            series[ref] = [figures[name]]
                            refs.append(ref)
                lines.append(Line(SCENARIO, f"{label}: {what} {name}", "s", series, references=refs,
                                  note=f"{reps} run(s) of {count} pooled; ours/floor is the ratio"))
        agents = [c for c in runs[OURS][0]["cpu"] if c != "controller"]
        cpu = {"agents (2, summed)": [sum(r["cpu"][a] for a in agents) for r in runs[OURS]],
               "controller": [r["cpu"]["controller"] for r in runs[OURS]]}
        lines.append(Line(SCENARIO, f"{label}: CPU over create + delete", "s", cpu,
                          note="CPU seconds (user + system) of the processes, the whole cycle"))
        rss = {"agent (larger of 2)": [max(r["rss"][a] for a in agents) for r in runs[OURS]],
               "controller": [r["rss"]["controller"] for r in runs[OURS]]}
        lines.append(Line(SCENARIO, f"{label}: peak RSS", "MiB", rss))
        requests = [r["requests_per_vmi"] for r in runs[OURS]]
        lines.append(Line(SCENARIO, f"{label}: API requests per VMI", "req",
                          {"all clients": requests,
                           "the services (all - bench's POST and DELETE)": [v - 2 for v in requests]},
                          note="kube-apiserver apiserver_request_total over the cycle / VMIs; by kind in the JSON"))
        say(f"density {label}: requests per VMI by kind: {runs[OURS][-1]['requests_by_kind']}")


__all__ = ["VMI_API", "density"]
