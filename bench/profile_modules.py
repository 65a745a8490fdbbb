"""Where a module's own time goes, in-process (no Ansible fork, imports already done), ours and the peers.

Not a test and not part of bench/run: the follow-up to a line of scenario 3 or 4 where the playbook numbers
need explaining. A control-plane-only lab of its own with 1,000 VMIs that no node runs; each module's main()
runs in this process (warm), timed, then profiled with pyinstrument. Writes bench/results/profiles/.

    .venv/bin/python bench/profile_modules.py
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import NOWHERE  # noqa: E402 - after the path set-up above
from tools import ROOT, Lab, tiny_vmi  # noqa: E402

sys.path.insert(0, str(ROOT / ".cache" / "collections"))  # virtops.kubevirt beside the bundle's collections
OUT = ROOT / "bench" / "results" / "profiles"


def run(module: str, args: dict) -> dict:
    from ansible.module_utils import basic

    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_remote_tmp="/tmp")}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        importlib.import_module(module).main()
    return json.loads(out.getvalue())


def main() -> None:
    from pyinstrument import Profiler

    OUT.mkdir(parents=True, exist_ok=True)
    with Lab("bench-profile", stack=False) as lab:
        ns = lab.namespace("profile")
        lab.create_many(ns, [tiny_vmi(f"vmi-{i:04d}", node_selector=NOWHERE) for i in range(1000)])
        body = tiny_vmi("vmi-0000", node_selector=NOWHERE)
        base = {"kubeconfig": lab.kubeconfig, "namespace": ns}
        ours, peers = "ansible_collections.virtops.kubevirt.plugins.modules", "ansible_collections"
        cases = {
            "vmi no-op": (f"{ours}.vmi", dict(base, definition=body)),
            "k8s no-op": (f"{peers}.kubernetes.core.plugins.modules.k8s", dict(base, definition=body,
                                                                               state="present")),
            "vmi_info 1000": (f"{ours}.vmi_info", base),
            "vmi_info 1000 hidden managedFields": (f"{ours}.vmi_info",
                                                   dict(base, hidden_fields=["metadata.managedFields"])),
            "kubevirt_vmi_info 1000": (f"{peers}.kubevirt.core.plugins.modules.kubevirt_vmi_info", base),
            "k8s_info 1000": (f"{peers}.kubernetes.core.plugins.modules.k8s_info",
                              dict(base, api_version="kubevirt.io/v1", kind="VirtualMachineInstance")),
        }
        summary = {}
        for label, (module, args) in cases.items():
            result = run(module, args)  # warm: imports and caches
            if result.get("failed"):
                raise RuntimeError(f"{label}: {str(result)[:500]}")
            times = []
            for _rep in range(5 if "1000" in label else 10):
                t0 = time.perf_counter()
                run(module, args)
                times.append(time.perf_counter() - t0)
            profiler = Profiler(interval=0.001)
            profiler.start()
            for _rep in range(3):
                run(module, args)
            profiler.stop()
            (OUT / f"{label.replace(' ', '_')}.txt").write_text(profiler.output_text(unicode=True, color=False))
            summary[label] = {"median_ms": round(1000 * statistics.median(times), 1),
                              "result_json_bytes": len(json.dumps(result)), "changed": result.get("changed")}
            print(label, summary[label], flush=True)
        (OUT / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
