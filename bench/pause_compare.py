"""The pause path of several commits on the same machine, in the same run: bench/pause_path.py against each.

Not a test (no limits asserted). Each ref gets a detached git worktree; the rounds interleave the refs (old,
new, old, new, ...) so that the machine's load falls on all of them alike, and the samples of all rounds are
pooled. Each run also measures the floor, a bare libvirt suspend/resume of the same domain, and every ref is
reported as a ratio to the floor of its own runs and to the first ref.

    .venv/bin/python bench/pause_compare.py [--refs f50e8b5 HEAD] [--rounds 3] [--repeats 10] [--out DIR]

The bench script itself is this checkout's (it runs against older services: see its docstring); a ref's
services, CRDs and lab (its controller) are the ref's own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from checkouts import checkouts, report

ROOT = Path(__file__).resolve().parents[1]
ROWS = (
    ("bare libvirt suspend", "bare libvirt resume"),
    ("pause: PUT answered", "unpause: PUT answered"),
    ("pause: domain suspended", "unpause: domain resumed"),
    ("pause: condition in a watch", "unpause: condition in a watch"),
    ("pause via kubectl: + wait", "unpause via kubectl: + wait"),
)
LABELS = ("bare libvirt suspend / resume (the floor)", "PUT answered", "domain suspended / resumed (libvirt event)",
          "`Paused` condition written / removed, seen in a watch", "`kubectl replace --raw` + `kubectl wait`")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({percentile(values, 0.95):.0f})" if values else "—"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="+", default=["f50e8b5", "HEAD"],
                        help="commits to compare, the first is the baseline (default: the annotation path, HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="pauses and unpauses per run")
    parser.add_argument("--out", help="write compare.md and samples.json here")
    args = parser.parse_args()
    commits: dict[str, str] = {}
    samples: dict[str, dict[str, list[float]]] = {ref: {} for ref in args.refs}
    with checkouts(args.refs) as trees:
        for checkout in trees:
            commits[checkout.ref] = checkout.commit
        for round_ in range(1, args.rounds + 1):
            for checkout in trees:
                ref = checkout.ref
                print(f"[pause-compare] round {round_}/{args.rounds}: {ref} ({checkout.commit})", flush=True)
                out = checkout.scratch / f"{checkout.commit}-{round_}.json"
                crds = checkout.tree / "roles" / "cluster" / "files" / "crds"
                subprocess.run([sys.executable, str(ROOT / "bench" / "pause_path.py"), "--repeats",
                                str(args.repeats), "--crds", str(crds),
                                "--samples-json", str(out)], check=True, env=checkout.env(dict(os.environ)),
                               stdout=subprocess.DEVNULL)
                for row, values in json.loads(out.read_text()).items():
                    samples[ref].setdefault(row, []).extend(values)

    base = args.refs[0]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [f"# The pause path, {' vs '.join(f'{r} ({commits[r]})' for r in args.refs)}", "",
             f"{when}, {platform.node()}, {os.cpu_count()} cores, load {load:.1f} at the end; "
             f"{args.rounds} interleaved rounds x {args.repeats} pauses and unpauses per ref "
             f"(n={args.rounds * args.repeats} each). Median (P95) in ms after the call was sent.", ""]
    header = "| stage | " + " | ".join(f"{commits[r]}: pause | {commits[r]}: unpause" for r in args.refs) + " |"
    lines += [header, "|---" * (1 + 2 * len(args.refs)) + "|"]
    for label, (pause_row, unpause_row) in zip(LABELS, ROWS, strict=True):
        cells = []
        for ref in args.refs:
            cells += [cell(samples[ref].get(pause_row, [])), cell(samples[ref].get(unpause_row, []))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios of the medians, PUT → condition seen in a watch:", ""]
    for ref in args.refs:
        for row, floor_row in (("pause: condition in a watch", "bare libvirt suspend"),
                               ("unpause: condition in a watch", "bare libvirt resume")):
            ours = statistics.median(samples[ref][row])
            floor = statistics.median(samples[ref][floor_row])
            against = statistics.median(samples[base][row])
            action = row.split(":", maxsplit=1)[0]
            lines.append(f"- {commits[ref]} {action}: {ours:.0f} ms = {ours / floor:.1f}x its floor "
                         f"({floor:.1f} ms), {ours / against:.2f}x {commits[base]}")
    report("\n".join(lines) + "\n", {commits[r]: samples[r] for r in args.refs}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
