"""The agent's Prometheus metrics, in the text exposition format (version 0.0.4), written by hand.

Small on purpose (no client library): counters, histograms and gauges read at scrape time.

| metric | type | labels |
|---|---|---|
| ``virtops_agent_vmis`` | gauge | ``phase`` (Pending, Scheduled, Running, Succeeded, Failed, ...) |
| ``virtops_agent_vmis_paused`` | gauge | |
| ``virtops_agent_reconcile_duration_seconds`` | histogram | |
| ``virtops_agent_libvirt_call_duration_seconds`` | histogram | ``call`` (state, ensure_running, pause, ...) |
| ``virtops_agent_errors_total`` | counter | ``kind`` (reconcile, libvirt, watch, heartbeat, libvirt_connection) |
| ``virtops_agent_libvirt_events_total`` | counter | ``event`` (started, suspended, stopped, ...) |
| ``virtops_agent_libvirt_connections_total`` | counter | (1 at start, +1 per reconnect to libvirtd) |
| ``virtops_agent_info`` | gauge (1) | ``version``, ``node`` |
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

# Seconds: libvirt calls take ~1 ms (a state query) to seconds (a destroy); reconciles include API writes.
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

LabelKey = tuple[tuple[str, str], ...]
ERROR_KINDS = ("reconcile", "libvirt", "watch", "heartbeat", "libvirt_connection")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = key + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._values: dict[LabelKey, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"] + [
            f"{self.name}{_labels(k)} {_number(v)}" for k, v in items]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.name, self.help = name, help_text
        self.buckets = tuple(sorted(buckets))
        self._series: dict[LabelKey, list[float]] = {}  # per-bucket counts, then sum, then count
        self._lock = threading.Lock()

    def observe(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if seconds <= bound:
                    series[i] += 1
            series[-2] += seconds
            series[-1] += 1

    def count(self, **labels: str) -> int:
        with self._lock:
            series = self._series.get(tuple(sorted(labels.items())))
            return int(series[-1]) if series else 0

    def time(self, **labels: str) -> _Timer:
        return _Timer(self, labels)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        for key, series in items:
            for bound, count in zip(self.buckets, series, strict=False):
                lines.append(f"{self.name}_bucket{_labels(key, (('le', _number(bound)),))} {_number(count)}")
            lines.append(f"{self.name}_bucket{_labels(key, (('le', '+Inf'),))} {_number(series[-1])}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(series[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {_number(series[-1])}")
        return lines


class _Timer:
    def __init__(self, histogram: Histogram, labels: dict[str, str]) -> None:
        self.histogram, self.labels = histogram, labels
        self.start = 0.0

    def __enter__(self) -> _Timer:
        self.start = time.monotonic()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.histogram.observe(time.monotonic() - self.start, **self.labels)


class Gauge:
    """A gauge whose samples are computed when scraped: ``collect()`` returns {labels: value}."""

    def __init__(self, name: str, help_text: str, collect: Callable[[], dict[LabelKey, float]]) -> None:
        self.name, self.help, self.collect = name, help_text, collect

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for key, value in sorted(self.collect().items()):
            lines.append(f"{self.name}{_labels(key)} {_number(value)}")
        return lines


class AgentMetrics:
    """Every metric of one agent; ``render()`` is the body of GET /metrics."""

    def __init__(self) -> None:
        self.reconcile_seconds = Histogram("virtops_agent_reconcile_duration_seconds",
                                           "Time to reconcile one VMI (libvirt calls and API writes).")
        self.libvirt_seconds = Histogram("virtops_agent_libvirt_call_duration_seconds",
                                         "Time of one call to libvirt, by call.")
        self.errors = Counter("virtops_agent_errors_total", "Errors by kind.")
        self.libvirt_events = Counter("virtops_agent_libvirt_events_total",
                                      "Lifecycle events of this node's domains received from libvirtd, by event.")
        self.libvirt_connections = Counter("virtops_agent_libvirt_connections_total",
                                           "Subscriptions to libvirt's lifecycle events (1 + reconnects).")
        # Every documented series exists from the first scrape, at 0: an error's first increment is then a
        # rise that rate() and increase() see, not a series appearing at 1.
        for kind in ERROR_KINDS:
            self.errors.inc(0, kind=kind)
        self.libvirt_connections.inc(0)
        self.gauges: list[Gauge] = []

    def add_gauge(self, name: str, help_text: str, collect: Callable[[], dict[LabelKey, float]]) -> None:
        self.gauges.append(Gauge(name, help_text, collect))

    def render(self) -> str:
        lines: list[str] = []
        for gauge in self.gauges:
            lines += gauge.render()
        for metric in (self.reconcile_seconds, self.libvirt_seconds, self.errors, self.libvirt_events,
                       self.libvirt_connections):
            lines += metric.render()
        return "\n".join(lines) + "\n"


class InstrumentedHypervisor:
    """Wraps a hypervisor: every method call is timed under its name; a raising call counts an error."""

    def __init__(self, inner: Any, metrics: AgentMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        metrics = self._metrics

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return attr(*args, **kwargs)
            except Exception:
                metrics.errors.inc(kind="libvirt")
                raise
            finally:
                metrics.libvirt_seconds.observe(time.monotonic() - start, call=name)

        return timed
