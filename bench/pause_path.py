"""Where the time of a pause goes: PUT .../pause -> subresource API -> node API -> domain suspended -> Paused condition.

Not a test (no limits asserted): it prints, per stage, the median and worst of N pauses (and unpauses), seen
from outside: the PUT's answer, libvirt's lifecycle events (domain suspended/resumed), a watch on the VMI
(Paused condition visible); and, as the peer in the same run, a bare libvirt suspend/resume of the same
domain. The agent's own histograms (/metrics) split its work into libvirt calls. Needs a stack lab: the
controller serves the subresource API.

    .venv/bin/python bench/pause_path.py [--repeats 10] [--samples-json FILE]

It also runs against another checkout's services (bench/pause_compare.py does that for older commits, whose
agent may have no node API): PYTHONPATH=OTHER/services ... --crds OTHER/roles/cluster/files/crds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import libvirt
from virtops.agent.libvirt_events import DomainEventWatcher
from virtops.kube import KubeClient, path_for
from virtops.lab import ControlPlane
from virtops.lab.control_plane import free_port

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "roles" / "cluster" / "files" / "crds"


class Timeline:
    """First time each (what, value) was seen, in time.monotonic()."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()

    def mark(self, what: str, value: str) -> None:
        with self.cond:
            self.seen.setdefault((what, value), time.monotonic())
            self.cond.notify_all()

    def wait(self, what: str, value: str, timeout: float = 60.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: (what, value) in self.seen, timeout):
                raise TimeoutError(f"{what}={value} not seen")
            return self.seen[(what, value)]

    def clear(self) -> None:
        with self.cond:
            self.seen.clear()


def watch_vmi(client: KubeClient, path: str, name: str, timeline: Timeline, stop: threading.Event) -> None:
    try:
        _watch_vmi(client, path, name, timeline, stop)
    except Exception:  # noqa: BLE001 - the lab going down at the end ends the watch
        if not stop.is_set():
            raise


def _watch_vmi(client: KubeClient, path: str, name: str, timeline: Timeline, stop: threading.Event) -> None:
    rv = client.get(path + "/" + name)["metadata"]["resourceVersion"]
    while not stop.is_set():
        for event in client.watch(path, {"fieldSelector": f"metadata.name={name}", "resourceVersion": rv},
                                  timeout_seconds=30):
            obj = event["object"]
            rv = obj["metadata"].get("resourceVersion", rv)
            conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
            timeline.mark("condition", "paused" if "Paused" in conditions else "running")
            if stop.is_set():
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--samples-json", help="write every sample (ms, by row) to this file")
    parser.add_argument("--crds", default=str(CRDS), help="the CRDs to install (default: this checkout's)")
    args = parser.parse_args()
    name = f"pausepath-{os.getpid()}"
    plane = ControlPlane(name, stack=True, nodes=0)  # the controller only; the agent is ours, with metrics
    info = plane.up()
    agent = None
    watcher = DomainEventWatcher()
    stop = threading.Event()
    state_dir = Path(tempfile.mkdtemp(prefix="virtops-pausepath-", dir="/var/tmp"))
    os.chmod(state_dir, 0o755)
    node = f"{name}-node-1"
    ns = "pausepath"
    kubectl = [f"{info.state_dir}/bin/kubectl", f"--kubeconfig={info.kubeconfig}"]
    try:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", args.crds], check=True, capture_output=True)
        subprocess.run([*kubectl, "wait", "--for=condition=Established", "crd/virtualmachineinstances.kubevirt.io",
                        "--timeout=60s"], check=True, capture_output=True)
        subprocess.run([*kubectl, "create", "namespace", ns], check=True, capture_output=True)
        port = free_port()
        kubeconfig = plane.agent_kubeconfig(node)
        agent = subprocess.Popen([sys.executable, "-m", "virtops.agent.main", f"--kubeconfig={kubeconfig}",
                                  f"--node-name={node}", f"--state-dir={state_dir}",
                                  f"--image-cache={state_dir}/images", "--heartbeat-seconds=2",
                                  f"--metrics-address=127.0.0.1:{port}",
                                  # older code (before the node API) has none
                                  *(getattr(plane, "node_api_agent_args", lambda _n: [])(node))],
                                 stderr=open(state_dir / "agent.log", "w"))
        client = KubeClient.from_kubeconfig(info.kubeconfig)
        vmis = path_for("kubevirt.io/v1", "virtualmachineinstances", ns)
        client.create(vmis, {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                             "metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 1, "domain": {
                                 "devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}})
        for _try in range(600):
            if (client.get(vmis + "/p").get("status") or {}).get("phase") == "Running":
                break
            time.sleep(0.1)
        else:
            raise SystemExit("the VMI never ran; see " + str(state_dir / "agent.log"))

        timeline = Timeline()
        domain = f"{ns}_p"
        watcher.start(lambda dom, event: dom == domain and timeline.mark("domain", event), lambda: None)
        threading.Thread(target=watch_vmi, args=(client, vmis, "p", timeline, stop), daemon=True).start()
        time.sleep(1)
        sub = path_for("subresources.kubevirt.io/v1", "virtualmachineinstances", ns, "p")
        rows: dict[str, list[float]] = {}
        # The peer: libvirt's own suspend and resume of the same domain, no API in between.
        dom = libvirt.open("qemu:///system").lookupByName(domain)
        for _repeat in range(args.repeats):
            for label, call, condition in (("suspend", dom.suspend, "paused"), ("resume", dom.resume, "running")):
                timeline.clear()
                t0 = time.monotonic()
                call()
                rows.setdefault(f"bare libvirt {label}", []).append((time.monotonic() - t0) * 1000)
                timeline.wait("condition", condition)  # the agent follows; let it settle before the next call
                time.sleep(0.3)
        for _repeat in range(args.repeats):
            steps = (("pause", "suspended", "paused"), ("unpause", "resumed", "running"))
            for action, domain_event, condition in steps:
                timeline.clear()
                t0 = time.monotonic()
                client.update(f"{sub}/{action}", {})
                stages = {"PUT answered": time.monotonic(),
                          "domain " + domain_event: timeline.wait("domain", domain_event),
                          "condition in a watch": timeline.wait("condition", condition)}
                for stage, at in stages.items():
                    rows.setdefault(f"{action}: {stage}", []).append((at - t0) * 1000)
                time.sleep(0.3)
        # hack/demo.sh's way: two kubectl processes (replace --raw, then wait --for=condition=Paused).
        for _repeat in range(args.repeats):
            for action, wait_for in (("pause", "--for=condition=Paused"),
                                     ("unpause", "--for=condition=Ready")):
                t0 = time.monotonic()
                subprocess.run([*kubectl, "replace", "--raw", f"{sub}/{action}", "-f", "-"], input=b"{}",
                               check=True, capture_output=True)
                t1 = time.monotonic()
                subprocess.run([*kubectl, "-n", ns, "wait", wait_for, "vmi/p", "--timeout=60s"], check=True,
                               capture_output=True)
                t2 = time.monotonic()
                rows.setdefault(f"{action} via kubectl: replace --raw", []).append((t1 - t0) * 1000)
                rows.setdefault(f"{action} via kubectl: + wait", []).append((t2 - t0) * 1000)
                time.sleep(0.3)
        t0 = time.monotonic()
        for _repeat in range(args.repeats):
            subprocess.run([*kubectl, "get", "--raw", "/readyz"], check=True, capture_output=True)
        rows["kubectl get --raw /readyz (process cost)"] = [(time.monotonic() - t0) * 1000 / args.repeats]
        print(f"pause path, {args.repeats} repeats, ms after the PUT was sent (median / max):")
        for label, values in rows.items():
            print(f"  {label:42s} {statistics.median(values):7.1f} / {max(values):7.1f}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        print("agent, mean ms per call (count):")
        sums = dict(re.findall(r'^virtops_agent_libvirt_call_duration_seconds_sum\{call="(\w+)"\} (\S+)', text, re.M))
        counts = dict(re.findall(r'^virtops_agent_libvirt_call_duration_seconds_count\{call="(\w+)"\} (\S+)', text,
                                 re.M))
        for call in sorted(sums):
            print(f"  libvirt {call:16s} {float(sums[call]) / float(counts[call]) * 1000:7.2f} ({counts[call]})")
        total = re.search(r"^virtops_agent_reconcile_duration_seconds_sum (\S+)", text, re.M)
        count = re.search(r"^virtops_agent_reconcile_duration_seconds_count (\S+)", text, re.M)
        if total and count:
            print(f"  reconcile (all)          {float(total[1]) / float(count[1]) * 1000:7.2f} ({count[1]})")
        peer = statistics.median(rows["bare libvirt suspend"])
        print(f"PUT pause -> Paused condition visible: {statistics.median(rows['pause: condition in a watch']):.1f} ms "
              f"median, {statistics.median(rows['pause: condition in a watch']) / peer:.1f}x a bare libvirt suspend "
              f"({peer:.1f} ms) in the same run")
        print(json.dumps({k: round(statistics.median(v), 1) for k, v in rows.items()}))
        if args.samples_json:
            Path(args.samples_json).write_text(json.dumps(rows))
    finally:
        stop.set()
        watcher.stop()
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        plane.down()
        subprocess.run(["virsh", "-c", "qemu:///system", "destroy", f"{ns}_p"], capture_output=True, check=False)
        subprocess.run(["virsh", "-c", "qemu:///system", "undefine", f"{ns}_p"], capture_output=True, check=False)
        shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
