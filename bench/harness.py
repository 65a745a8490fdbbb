"""bench/run: ours and the peers side by side on a lab of the bench's own; table, JSON and PNG charts.

Scenarios (issue #8): 1 create → Running, 2 pause/unpause, 3 no-op second run, 4 list, 5 one node with many
VMIs, 6 module start-up. 1, 2 and 5 run on a stack lab (controller + one agent on this host's libvirt);
3 and 4 on a control-plane-only lab, where no agent runs the VMIs (they only exist as objects).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402 - after the path set-up above
import scenarios  # noqa: E402
from tools import ROOT, Lab, LibvirtEvents, say  # noqa: E402

ALL = ["6", "1", "2", "5", "3", "4"]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small counts and few repetitions (a few minutes): to check the harness, not to quote")
    p.add_argument("--only", default=",".join(ALL), help="scenarios to run, e.g. 1,2 (default: all)")
    p.add_argument("--reps", type=int, help="repetitions per tool (default 3; quick 2)")
    p.add_argument("--create-counts", help="VMIs per create run, e.g. 1,10,50")
    p.add_argument("--declared", type=int, help="VMIs declared in the no-op playbook (default 100)")
    p.add_argument("--listed", type=int, help="VMIs to list (default 1000)")
    p.add_argument("--scale", help="idle VMIs on one agent, e.g. 50,100")
    p.add_argument("--idle-seconds", type=int, help="idle window for scenario 5 (default 60)")
    p.add_argument("--raw-samples", type=int, help="samples of the raw POST/PUT latencies (default 10)")
    p.add_argument("--peer-wait-sleep", type=int, help="the peers' wait_sleep (default 1, their fastest)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where JSON, table and PNGs go")
    p.add_argument("--name", default=f"bench-{os.getpid()}", help="lab name prefix (unique per run)")
    p.add_argument("--reuse-stack-lab", metavar="NAME",
                   help="use this running stack lab (virtops-lab up --stack --name NAME) for 1, 2, 5 and 3, 4")
    p.add_argument("--report", metavar="JSON", help="only redraw table and charts from a results JSON")
    return p.parse_args(argv)


def config(args: argparse.Namespace) -> scenarios.Config:
    cfg = scenarios.Config()
    if args.quick:
        cfg = scenarios.Config(reps=2, create_counts=[1, 3], reps_large=1, raw_samples=3, declared=10, listed=100,
                               scale=[5], idle_seconds=20, idle_slice=10, import_reps=3)
    if args.reps:
        cfg.reps = args.reps
    if args.create_counts is not None:
        cfg.create_counts = [int(x) for x in args.create_counts.split(",") if x]
    for name in ("declared", "listed", "idle_seconds", "raw_samples", "peer_wait_sleep"):
        if getattr(args, name):
            setattr(cfg, name, getattr(args, name))
    if args.scale:
        cfg.scale = [int(x) for x in args.scale.split(",")]
    return cfg


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) / 1024 / 1024

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    from virtops.node.hypervisor import domain_type as detect_domain_type

    try:
        domain_type = detect_domain_type()
    except Exception:  # noqa: BLE001 - only a label for the report
        domain_type = "?"
    from importlib.metadata import version as pkg

    coll = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

    def manifest(ns: str, name: str) -> str:
        import json

        try:
            return json.loads((coll / "ansible_collections" / ns / name / "MANIFEST.json").read_text())[
                "collection_info"]["version"]
        except OSError:
            return "?"

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}",
        "guests": f"libvirt domain type {domain_type!r} ({'KVM' if domain_type == 'kvm' else 'TCG'})",
        "versions": {"python": platform.python_version(), "ansible-core": pkg("ansible-core"),
                     "kubernetes.core": manifest("kubernetes", "core"), "kubevirt.core": manifest("kubevirt", "core"),
                     "kubernetes (python client)": pkg("kubernetes"), "libvirt": version(["virsh", "--version"]),
                     "qemu": version(["qemu-system-x86_64", "--version"])},
        "commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def write(lines: list[report.Line], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(report.to_json(lines, meta) + "\n")
    table = report.text_table(lines)
    (out / "latest.txt").write_text(f"{meta.get('date')}  {meta.get('host')}\n{meta.get('guests')}\n\n{table}\n")
    (out / "latest.md").write_text(report.markdown_table(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    if args.report:
        lines, meta = report.from_json(Path(args.report).read_text())
        print(report.text_table(lines))
        report.charts(lines, out, f" — {meta.get('date', '')}")
        return 0
    cfg = config(args)
    only = set(args.only.split(","))
    meta = machine()
    meta.update(config=dict(vars(cfg)), quick=args.quick)
    lines: list[report.Line] = []
    started = time.monotonic()
    try:
        if "6" in only:
            say("scenario 6: module_utils import time and RSS")
            scenarios.imports(cfg, lines)
            write(lines, meta, out)
        if only & {"1", "2", "5"}:
            events = LibvirtEvents().start()
            with Lab(args.reuse_stack_lab or f"{args.name}-stack", stack=True, reuse=bool(args.reuse_stack_lab)) as lab:
                if "1" in only:
                    say("scenario 1: create → Running")
                    scenarios.create(lab, cfg, lines, events)
                    write(lines, meta, out)
                if "2" in only:
                    say("scenario 2: pause / unpause")
                    scenarios.power(lab, cfg, lines, events)
                    write(lines, meta, out)
                if "5" in only:
                    say("scenario 5: one agent with many VMIs")
                    scenarios.scale(lab, cfg, lines)
                    write(lines, meta, out)
        if only & {"3", "4"}:
            reuse = bool(args.reuse_stack_lab)
            with Lab(args.reuse_stack_lab or f"{args.name}-objects", stack=reuse, reuse=reuse) as lab:
                if "3" in only:
                    say("scenario 3: no-op second run")
                    scenarios.declare(lab, cfg, lines)
                    write(lines, meta, out)
                if "4" in only:
                    say("scenario 4: list")
                    scenarios.listing(lab, cfg, lines)
                    write(lines, meta, out)
    finally:
        meta["duration_seconds"] = round(time.monotonic() - started)
        if lines:
            write(lines, meta, out)
            report.charts(lines, out, f" — {meta['date']}")
            print(f"\n{meta['date']}  {meta['host']}\n{meta['guests']}\n")
            print(report.text_table(lines))
            say(f"results in {out} ({meta['duration_seconds']}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
