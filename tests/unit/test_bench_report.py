"""bench/report.py: medians, ratios, the table and the charts from a tiny hand-made result."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report  # noqa: E402 - bench/ is not a package


def lines() -> list[report.Line]:
    return [
        report.Line("1 create", "create 1 VMI", "s", {"ours": [1.0, 3.0, 2.0], "peer": [4.0, 4.0, 6.0]}),
        report.Line("3 no-op", "items per second", "tasks/s", {"ours": [10.0], "peer": [5.0], "floor": [20.0]},
                    higher_is_better=True, references=["floor"]),
        report.Line("5 scale", "agent RSS", "MiB", {"virtops stack": [50.0, 52.0]}),
        report.Line("5 scale", "nothing measured", "ms", {"virtops stack": []}),
    ]


def test_stats_and_ratio_use_medians():
    line = lines()[0]
    assert report.stats(line.series["ours"]) == report.Stats(3, 2.0, 1.0, 3.0)
    assert report.ratio(line, "peer") == 0.5
    assert report.stats([]) == report.Stats(0, None, None, None)


def test_table_marks_the_better_side_and_shows_empty_series():
    text = report.text_table(lines())
    assert "0.50 ✓" in text  # lower is better and ours is lower
    assert "2.00 ✓" in text  # higher is better and ours is higher
    assert "0.50 (ref.)" in text  # a reference series gets a ratio but no verdict
    row = next(r for r in report.table_rows(lines()) if r[1] == "nothing measured")
    assert row[3:6] == ["0", "—", "—"]
    assert report.markdown_table(lines()).count("\n") == 2 + 7 - 1


def test_json_round_trip_keeps_samples_and_reports_ratios():
    text = report.to_json(lines(), {"date": "today"})
    back, meta = report.from_json(text)
    assert meta == {"date": "today"}
    assert back == lines()
    assert '"peer": 0.5' in text


def test_charts_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    written = report.charts(lines(), tmp_path)
    assert {p.name for p in written} == {"scenario-1.png", "scenario-3.png", "scenario-5.png", "ratios.png"}
    assert all(p.stat().st_size > 1000 for p in written)


def test_merge_replaces_a_line_measured_again_and_keeps_every_part():
    first = lines()
    again = report.Line("1 create", "create 1 VMI", "s", {"ours": [9.0], "peer": [9.0]})
    new = report.Line("2 power", "pause", "ms", {"virtops stack": [40.0]})
    merged, meta = report.merge([(first, {"date": "d1", "errors": ["scenario 1: boom"], "host": "old"}),
                                 ([again, new], {"date": "d2", "errors": [], "host": "h", "config": {"reps": 3}})])
    assert [(m.scenario, m.metric) for m in merged] == [(m.scenario, m.metric) for m in first] + [
        ("2 power", "pause")]
    assert merged[0] == again
    assert meta["host"] == "h" and meta["date"] == "d1 … d2" and "config" not in meta
    assert [p["date"] for p in meta["parts"]] == ["d1", "d2"]
    assert meta["errors"] == ["d1: scenario 1: boom"]
    single, single_meta = report.merge([(first, {"date": "d1"})])
    assert single == first and single_meta == {"date": "d1"}


def test_window_mean_carries_the_cpu_target_over_the_whole_window():
    import scenarios

    slices = report.Line("5 scale", "100 idle VMIs (steady): agent CPU", "% of a core",
                         {"virtops stack": [2.4, 0.0, 0.1, 1.9, 0.0, 0.1]})
    whole = scenarios.window_mean(slices, scenarios.Config())
    assert whole.metric == "100 idle VMIs (steady): agent CPU, whole window"
    assert whole.series["virtops stack"] == [pytest.approx(0.75)] and whole.target == "< 1%"
    assert report.stats(slices.series["virtops stack"]).median == pytest.approx(0.1)  # what the median hides


def test_density_percentiles_chart_ours_against_the_floor_with_the_references(tmp_path):
    pytest.importorskip("matplotlib")
    density = [report.Line("density", f"100 VMIs 100 ms apart: create → Running {p}", "s",
                           {"ours": [v], "floor": [v / 2], "KubeVirt CI": [k]}, references=["KubeVirt CI"])
               for p, v, k in (("P50", 1.0, 17.2), ("P95", 2.0, 28.4), ("P99", 3.0, 29.7))]
    assert report.ratio(density[1], "floor") == 2.0
    written = report.charts(density, tmp_path)
    assert tmp_path / "density.png" in written
