"""Density (bench/density.py) of several commits on the same machine, in the same run: before/after for #18.

Not a test (no limits asserted). Each ref gets a detached worktree (bench/checkouts.py); the rounds interleave
the refs (old, new, old, new, ...) so that the machine's load falls on all of them alike. A round of a ref is
`bench/run --only density --density-libvirtd-as-is` with the ref's services on the Python path: its agents,
controller and lab, and its floor (the floor starts the domain XML that ref's agent writes, so a change to
the XML moves both). Every VMI's latency of all rounds is pooled per ref; each ref is reported against the
floor of its own runs and against the first ref.

    .venv/bin/python bench/density_compare.py --refs 71b6a25 HEAD [--rounds 1] [--count 100] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from checkouts import checkouts, report
from density import FLOOR, OURS, PERCENTILES, percentile

ROOT = Path(__file__).resolve().parents[1]
DIRECTIONS = (("create", "create → Running"), ("delete", "delete → gone"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", nargs="+", required=True, help="commits to compare, the first is the baseline")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--count", type=int, default=100, help="VMIs per cycle (default 100, KubeVirt's)")
    parser.add_argument("--out", help="write compare.md, samples.json and each run's bench/run results here")
    args = parser.parse_args()
    # samples[commit][mode][side][direction] = every VMI's seconds, all rounds pooled
    samples: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    loads: list[float] = []
    with checkouts(args.refs) as trees:
        commits = [c.commit for c in trees]
        for round_ in range(1, args.rounds + 1):
            for checkout in trees:
                print(f"[density-compare] round {round_}/{args.rounds}: {checkout.ref} ({checkout.commit})",
                      flush=True)
                out = checkout.scratch / f"{checkout.commit}-{round_}"
                subprocess.run([str(ROOT / "bench" / "run"), "--only", "density", "--density-libvirtd-as-is",
                                "--density-count", str(args.count), "--out", str(out),
                                "--name", f"dc{checkout.commit[:5]}{round_}"],
                               check=True, env=checkout.env(dict(os.environ)))
                if args.out:  # each run's own table, JSON and chart beside the comparison
                    shutil.copytree(out, Path(args.out) / f"{checkout.commit}-{round_}", dirs_exist_ok=True)
                meta = json.loads((out / "latest.json").read_text())["meta"]
                loads.append((meta.get("load_1min") or {}).get("median", float("nan")))
                for mode, runs in meta["density"].items():
                    for side, results in runs.items():
                        for key, _label in DIRECTIONS:
                            pooled = samples.setdefault(checkout.commit, {}).setdefault(mode, {}).setdefault(
                                side, {}).setdefault(key, [])
                            for result in results:
                                pooled.extend(result[key])

    base = commits[0]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Density, {' vs '.join(commits)}", "",
             f"{when}, {platform.node()}, {os.cpu_count()} cores; {args.rounds} interleaved round(s) x "
             f"{args.count} VMIs per mode and side per ref; 1-minute load median per run: "
             f"{', '.join(f'{x:.1f}' for x in loads)}. Seconds after the POST (DELETE) was due; "
             "P50 / P95 / P99.", ""]
    lines += ["| mode | direction | " + " | ".join(f"{c}: ours | {c}: floor | {c}: ours/floor" for c in commits)
              + (f" | ours vs {base}" if len(commits) > 1 else "") + " |",
              "|---" * (2 + 3 * len(commits) + (1 if len(commits) > 1 else 0)) + "|"]
    for mode in samples[base]:
        for key, label in DIRECTIONS:
            cells = []
            stats = {}
            for commit in commits:
                sides = samples[commit].get(mode, {})
                ours = [percentile(sides[OURS][key], float(p[1:])) for p in PERCENTILES]
                floor = [percentile(sides[FLOOR][key], float(p[1:])) for p in PERCENTILES]
                stats[commit] = ours
                cells += [" / ".join(f"{v:.2f}" for v in ours), " / ".join(f"{v:.2f}" for v in floor),
                          " / ".join(f"{o / f:.2f}" for o, f in zip(ours, floor, strict=True))]
            if len(commits) > 1:
                cells.append(", ".join(" / ".join(f"{n / b:.2f}" for n, b in zip(stats[c], stats[base], strict=True))
                                       for c in commits[1:]))
            lines.append(f"| {mode} | {label} | " + " | ".join(cells) + " |")
    report("\n".join(lines) + "\n", samples, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
