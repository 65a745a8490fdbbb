"""bench/run: ours and the peers side by side on a lab of the bench's own; table, JSON and PNG charts.

Scenarios (issue #8): 1 create → Running, 2 pause/unpause, 3 no-op second run, 4 list, 5 one node with many
VMIs, 6 module start-up. 1, 2 and 5 run on a stack lab (controller + one agent on this host's libvirt);
3 and 4 on a control-plane-only lab, where no agent runs the VMIs (they only exist as objects).
density (issue #18, bench/density.py): KubeVirt's 100-VMI density method on a stack lab with two agents, against
the same domains started and destroyed straight through libvirt-python.
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

import density  # noqa: E402 - after the path set-up above
import report  # noqa: E402
import scenarios  # noqa: E402
from tools import ROOT, Lab, LibvirtEvents, LoadSampler, say  # noqa: E402

DEFAULT = ["6", "1", "2", "5", "3", "4"]
# density restarts this host's libvirtd twice (before/after): only when asked for (--only density).
ALL = [*DEFAULT, "density"]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small counts and few repetitions (a few minutes): to check the harness, not to quote")
    p.add_argument("--only", default=",".join(DEFAULT),
                   help="scenarios to run, e.g. 1,2 or density (default: all but density)")
    p.add_argument("--reps", type=int, help="repetitions per tool (default 3; quick 2)")
    p.add_argument("--create-counts", help="VMIs per create run, e.g. 1,10,50")
    p.add_argument("--reps-large", type=int, help="repetitions for create counts >= 50 (default 2)")
    p.add_argument("--declared", type=int, help="VMIs declared in the no-op playbook (default 100)")
    p.add_argument("--listed", type=int, help="VMIs to list (default 1000)")
    p.add_argument("--scale", help="idle VMIs on one agent, e.g. 50,100")
    p.add_argument("--idle-seconds", type=int, help="steady idle window for scenario 5 (default 60)")
    p.add_argument("--steady-after", type=int,
                   help="scenario 5: seconds after the last Running before the steady window (default 310; 0: none)")
    p.add_argument("--density-count", type=int, default=100,
                   help="density: VMIs per cycle (default 100, KubeVirt's; 40 to develop on a busy machine)")
    p.add_argument("--density-libvirtd-as-is", action="store_true",
                   help="density: measure with libvirtd as it runs (no before/after restarts)")
    p.add_argument("--raw-samples", type=int, help="samples of the raw POST/PUT latencies (default 10)")
    p.add_argument("--peer-wait-sleep", type=int, help="the peers' wait_sleep (default 1, their fastest)")
    p.add_argument("--out", help="where JSON, table and PNGs go (default bench/results; with --quick "
                                 "/tmp/virtops-bench-quick, so a check never replaces the committed results)")
    p.add_argument("--name", default=f"bench-{os.getpid()}", help="lab name prefix (unique per run)")
    p.add_argument("--reuse-stack-lab", metavar="NAME",
                   help="use this running stack lab (virtops-lab up --stack --name NAME) for 1, 2, 5 and 3, 4")
    p.add_argument("--report", metavar="JSON", nargs="+",
                   help="only redraw table, JSON and charts from results JSON files (several are merged)")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ALL)
    if unknown:
        p.error(f"--only: no scenario {', '.join(sorted(unknown))} (there are {', '.join(ALL)})")
    return args


def config(args: argparse.Namespace) -> scenarios.Config:
    cfg = scenarios.Config()
    if args.quick:
        cfg = scenarios.Config(reps=2, create_counts=[1, 3], reps_large=1, raw_samples=3, declared=10, listed=100,
                               scale=[5], idle_seconds=20, idle_slice=10, import_reps=3,
                               fresh_seconds=10, steady_after=1)
    if args.reps:
        cfg.reps = args.reps
    if args.create_counts is not None:
        cfg.create_counts = [int(x) for x in args.create_counts.split(",") if x]
    for name in ("reps_large", "declared", "listed", "idle_seconds", "raw_samples", "peer_wait_sleep", "steady_after"):
        if getattr(args, name) is not None:
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


def load_text(meta: dict) -> str:
    parts = [p for p in meta.get("parts") or [meta] if p.get("load_1min")]
    return "load average (1 min) during the run: " + ("; ".join(
        f"median {p['load_1min']['median']:.1f}, {p['load_1min']['min']:.1f}–{p['load_1min']['max']:.1f} "
        f"on {p['load_1min']['cores']} cores" for p in parts) or "not recorded")


def write(lines: list[report.Line], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(report.to_json(lines, meta) + "\n")
    table = report.text_table(lines)
    (out / "latest.txt").write_text(f"{meta.get('date')}  {meta.get('host')}\n{meta.get('guests')}\n"
                                    f"{load_text(meta)}\n\n{table}\n")
    (out / "latest.md").write_text(report.markdown_table(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    out = Path(args.out or ("/tmp/virtops-bench-quick" if args.quick else ROOT / "bench" / "results"))
    if args.report:
        lines, meta = report.merge([report.from_json(Path(path).read_text()) for path in args.report])
        write(lines, meta, out)
        print(report.text_table(lines))
        report.charts(lines, out, f" — {meta.get('date', '')}")
        return 0
    cfg = config(args)
    cfg.out = out
    only = set(args.only.split(","))
    meta = machine()
    meta.update(config={k: v for k, v in vars(cfg).items() if k != "out"}, quick=args.quick,
                only=sorted(only, key=ALL.index))
    lines: list[report.Line] = []
    started = time.monotonic()
    load = LoadSampler().__enter__()
    errors: list[str] = []
    meta["errors"] = errors

    def scenario(number: str, title: str, action, *params) -> None:
        """One scenario; a failure is recorded and the run goes on with the next one."""
        if number not in only:
            return
        say(f"scenario {number}: {title}")
        try:
            action(*params)
        except Exception as exc:  # noqa: BLE001 - reported in the results, never hidden
            errors.append(f"scenario {number}: {type(exc).__name__}: {str(exc)[:1500]}")
            say(f"scenario {number} failed: {errors[-1][:600]}")
        meta["load_1min"] = load.summary()
        write(lines, meta, out)

    try:
        scenario("6", "module_utils import time and RSS", scenarios.imports, cfg, lines)
        if only & {"1", "2", "5"}:
            events = LibvirtEvents().start()
            with Lab(args.reuse_stack_lab or f"{args.name}-stack", stack=True, reuse=bool(args.reuse_stack_lab)) as lab:
                scenario("1", "create → Running", scenarios.create, lab, cfg, lines, events)
                scenario("2", "pause / unpause", scenarios.power, lab, cfg, lines, events)
                scenario("5", "one agent with many VMIs", scenarios.scale, lab, cfg, lines)
        if "density" in only:
            with Lab(f"{args.name}-density", stack=True, nodes=2) as lab:
                raw: dict = {}
                meta["density"] = raw
                scenario("density", f"density: {args.density_count} VMIs on two agents, and the libvirt floor",
                         density.density, lab, args.density_count, args.reps or 1, lines, raw,
                         not args.density_libvirtd_as_is)
        if only & {"3", "4"}:
            reuse = bool(args.reuse_stack_lab)
            with Lab(args.reuse_stack_lab or f"{args.name}-objects", stack=reuse, reuse=reuse) as lab:
                scenario("3", "no-op second run", scenarios.declare, lab, cfg, lines)
                scenario("4", "list", scenarios.listing, lab, cfg, lines)
    finally:
        meta["duration_seconds"] = round(time.monotonic() - started)
        load.__exit__(None, None, None)
        meta["load_1min"] = load.summary()
        if lines:
            write(lines, meta, out)
            report.charts(lines, out, f" — {meta['date']}")
            print(f"\n{meta['date']}  {meta['host']}\n{meta['guests']}\n{load_text(meta)}\n")
            print(report.text_table(lines))
            say(f"results in {out} ({meta['duration_seconds']}s)")
        for error in errors:
            say(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
