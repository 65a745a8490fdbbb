"""Numbers to a table, JSON and PNG charts. Pure: no lab, no Ansible (tests/unit/test_bench_report.py).

A result is a list of *lines*. One line is one question ("create 10 VMIs until Running") answered by one or
more *series* of samples: ours first, then the peers measured in the same run. The ratio of a line is
median(ours) / median(peer) for each peer; below 1 means ours took less (for units where lower is better).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Line:
    scenario: str  # "1 create", ...
    metric: str  # what was measured, for people
    unit: str  # "s", "ms", "MiB", "%", "req/s", "tasks/s"
    series: dict[str, list[float]]  # label -> samples; the first label is ours
    higher_is_better: bool = False
    note: str = ""
    target: str = ""  # the target, as text
    references: list[str] = field(default_factory=list)  # series shown for context (a floor), not peers

    @property
    def ours(self) -> str:
        return next(iter(self.series))

    def peers(self) -> list[str]:
        return list(self.series)[1:]


@dataclass
class Stats:
    n: int
    median: float | None
    low: float | None
    high: float | None


def stats(samples: list[float]) -> Stats:
    values = [v for v in samples if v is not None and not math.isnan(v)]
    if not values:
        return Stats(0, None, None, None)
    return Stats(len(values), statistics.median(values), min(values), max(values))


def ratio(line: Line, peer: str) -> float | None:
    """median(ours) / median(peer); None when either side has no sample or the peer's median is 0."""
    ours, theirs = stats(line.series[line.ours]).median, stats(line.series[peer]).median
    if ours is None or not theirs:
        return None
    return ours / theirs


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "ms" or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table_rows(lines: list[Line]) -> list[list[str]]:
    """One row per series: scenario, metric, series, n, median, min–max, unit, ratio (ours/peer)."""
    rows = []
    for line in lines:
        for label, samples in line.series.items():
            s = stats(samples)
            span = "—" if s.low is None else f"{fmt(s.low, line.unit)}–{fmt(s.high, line.unit)}"
            r = ratio(line, label) if label != line.ours else None
            if r is None:
                ratio_text = ""
            elif label in line.references:
                ratio_text = f"{r:.2f} (ref.)"
            else:
                better = (r > 1) if line.higher_is_better else (r < 1)
                ratio_text = f"{r:.2f}" + (" ✓" if better else "")
            rows.append([line.scenario, line.metric, label, str(s.n), fmt(s.median, line.unit), span, line.unit,
                         ratio_text])
    return rows


HEADER = ["scenario", "metric", "series", "n", "median", "min–max", "unit", "ours/peer"]


def text_table(lines: list[Line]) -> str:
    rows = [HEADER, *table_rows(lines)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    out = []
    last = None
    for index, row in enumerate(rows):
        key = tuple(row[:2])
        shown = list(row)
        if index and key == last:
            shown[0] = shown[1] = ""  # the same line's other series
        last = key
        out.append("  ".join(c.ljust(w) for c, w in zip(shown, widths, strict=True)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(lines: list[Line]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    last = None
    for row in table_rows(lines):
        key = tuple(row[:2])
        shown = list(row)
        if key == last:
            shown[0] = shown[1] = ""
        last = key
        out.append("| " + " | ".join(shown) + " |")
    return "\n".join(out)


def to_json(lines: list[Line], meta: dict[str, Any]) -> str:
    body = []
    for line in lines:
        entry = asdict(line)
        entry["stats"] = {label: asdict(stats(samples)) for label, samples in line.series.items()}
        entry["ratios"] = {peer: ratio(line, peer) for peer in line.peers()}
        body.append(entry)
    return json.dumps({"meta": meta, "lines": body}, indent=1, sort_keys=False)


def from_json(text: str) -> tuple[list[Line], dict[str, Any]]:
    data = json.loads(text)
    fields = {"scenario", "metric", "unit", "series", "higher_is_better", "note", "target", "references"}
    return [Line(**{k: v for k, v in e.items() if k in fields}) for e in data["lines"]], data["meta"]


def merge(parts: list[tuple[list[Line], dict[str, Any]]]) -> tuple[list[Line], dict[str, Any]]:
    """Results of several runs (e.g. bench/run --only 1 and --only 2,5) as one: a line measured again in a
    later part (same scenario and metric) replaces the earlier one where it stood; the others keep their order.
    The meta is the last part's (machine, versions), with every part's date, commit, config, errors and
    duration under "parts" and all their errors under "errors"."""
    lines: list[Line] = []
    where: dict[tuple[str, str], int] = {}
    meta: dict[str, Any] = {}
    summary = []
    for part_lines, part_meta in parts:
        for line in part_lines:
            key = (line.scenario, line.metric)
            if key in where:
                lines[where[key]] = line
            else:
                where[key] = len(lines)
                lines.append(line)
        meta = dict(part_meta)
        summary.append({k: part_meta.get(k) for k in ("date", "commit", "config", "errors", "duration_seconds",
                                                      "only", "load_1min")})
    if len(summary) > 1:
        meta["date"] = f"{summary[0]['date']} … {summary[-1]['date']}"
        meta["parts"] = summary
        meta["errors"] = [f"{s['date']}: {e}" for s in summary for e in s.get("errors") or []]
        meta.pop("config", None)
    return lines, meta


def charts(lines: list[Line], out_dir: Path, title_suffix: str = "") -> list[Path]:
    """One PNG per scenario (a panel per metric: median bars, min–max whiskers) and ratios.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    scenarios: dict[str, list[Line]] = {}
    for line in lines:
        scenarios.setdefault(line.scenario, []).append(line)
    colors = ["#2a7ab0", "#e08a1e", "#7a9a3a", "#9a4a8a", "#888888"]
    for scenario, group in scenarios.items():
        fig, axes = plt.subplots(len(group), 1, figsize=(8.5, 1.0 + 1.15 * sum(len(g.series) for g in group) / 1.6
                                                         + 0.55 * len(group)), squeeze=False)
        for ax, line in zip(axes[:, 0], group, strict=True):
            labels = list(line.series)
            st = [stats(line.series[label]) for label in labels]
            med = [s.median or 0 for s in st]
            err = [[(s.median or 0) - (s.low or 0) for s in st], [(s.high or 0) - (s.median or 0) for s in st]]
            ypos = list(range(len(labels)))[::-1]
            ax.barh(ypos, med, xerr=err, color=[colors[i % len(colors)] for i in range(len(labels))],
                    capsize=3, height=0.6)
            ax.set_yticks(ypos, labels, fontsize=8)
            ax.set_title(f"{line.metric} [{line.unit}]" + (" (higher is better)" if line.higher_is_better else ""),
                         fontsize=9, loc="left")
            for y, m, s in zip(ypos, med, st, strict=True):
                if s.median is not None:
                    ax.text(m, y, f" {fmt(s.median, line.unit)}", va="center", fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
            ax.margins(x=0.18)
        fig.suptitle(f"scenario {scenario}{title_suffix}", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"scenario-{scenario.split()[0]}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    pairs = [(f"{line.scenario.split()[0]}: {line.metric}\nvs {peer}", ratio(line, peer), line.higher_is_better,
              peer in line.references) for line in lines for peer in line.peers()]
    pairs = [p for p in pairs if p[1]]
    if pairs:
        from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

        fig, ax = plt.subplots(figsize=(10, 0.9 + 0.42 * len(pairs)))
        ypos = list(range(len(pairs)))[::-1]
        values = [p[1] for p in pairs]
        colours = ["#999999" if ref else "#3a9a4a" if ((v > 1) if hib else (v < 1)) else "#c0392b"
                   for _label, v, hib, ref in pairs]
        ax.barh(ypos, values, color=colours, height=0.6)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        low, high = min(values + [1.0]) / 1.5, max(values + [1.0]) * 1.5
        ax.set_xlim(low, high)
        ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10) if low <= t <= high]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(ypos, [p[0] for p in pairs], fontsize=6.5)
        for y, v in zip(ypos, values, strict=True):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=7)
        ax.set_xlabel("median ours / median peer (log scale; green: ours better, red: ours worse, grey: reference)",
                      fontsize=8)
        ax.set_title(f"ratios{title_suffix}", fontsize=10)
        fig.tight_layout()
        path = out_dir / "ratios.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for scenario in scenarios:
        path = percentile_chart(lines, scenario, out_dir, title_suffix)
        if path:
            written.append(path)
    return written


PERCENTILE_NAMES = ("P50", "P95", "P99")


def percentile_chart(lines: list[Line], scenario: str, out_dir: Path, title_suffix: str = "") -> Path | None:
    """<scenario>.png for lines whose metric ends in P50/P95/P99: a panel per metric head, bars for ours and the
    first peer (the floor) at each percentile with ours/peer under them, references as labelled dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, Line]] = {}
    for line in lines:
        head, _sep, name = line.metric.rpartition(" ")
        if line.scenario == scenario and name in PERCENTILE_NAMES:
            panels.setdefault(head, {})[name] = line
    if not panels:
        return None
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    ref_colours = ["#c0392b", "#e08a1e", "#7a9a3a"]
    for ax, (head, by_name) in zip(axes.flat, panels.items(), strict=False):  # a grid may have spare cells
        names = [n for n in PERCENTILE_NAMES if n in by_name]
        first = by_name[names[0]]
        ours = first.ours
        peer = next(p for p in first.peers() if p not in first.references)
        values = {label: [stats(by_name[n].series.get(label, [])).median for n in names] for label in (ours, peer)}
        for offset, label, colour in ((-0.2, ours, "#2a7ab0"), (0.2, peer, "#999999")):
            heights = [v or 0 for v in values[label]]
            ax.bar([i + offset for i in range(len(names))], heights, width=0.4, color=colour, label=label)
            for i, v in enumerate(values[label]):
                if v is not None:
                    ax.text(i + offset, v, f"{v:.2f}", ha="center", va="bottom", fontsize=6.5)
        ticks = []
        for i, n in enumerate(names):
            o, f = values[ours][i], values[peer][i]
            ticks.append(f"{n}\n{o / f:.2f}x" if o is not None and f else n)
        for k, ref in enumerate(r for r in first.references):
            colour = ref_colours[k % len(ref_colours)]
            for i, n in enumerate(names):
                v = stats(by_name[n].series.get(ref, [])).median
                if v is not None:
                    ax.hlines(v, i - 0.45, i + 0.45, colors=colour, linestyles="dashed",
                              label=ref if i == 0 else None)
                    ax.text(i + 0.45, v, f" {v:g}", va="center", fontsize=6, color=colour)
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 4)  # room for the legend above the bars
        ax.set_xticks(list(range(len(names))), ticks)
        ax.set_ylabel("seconds (log scale)", fontsize=7)
        ax.set_title(head.replace(" (", "\n("), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=5.5, loc="upper left")
    fig.suptitle(f"{scenario}: percentiles, ours against the floor (under each: ours/floor){title_suffix}",
                 fontsize=10)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{scenario}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
