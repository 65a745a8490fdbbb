"""The agent's Prometheus text exposition, and how libvirt events and failures reach the work queue."""

from __future__ import annotations

import threading
import time

import pytest
from virtops.agent.agent import NodeAgent
from virtops.agent.metrics import AgentMetrics, Counter, Histogram, InstrumentedHypervisor


def test_counter_and_histogram_render_the_text_format():
    counter = Counter("x_errors_total", "Errors.")
    counter.inc(kind="watch")
    counter.inc(2, kind="watch")
    counter.inc(kind='a"b')
    assert counter.render() == [
        "# HELP x_errors_total Errors.", "# TYPE x_errors_total counter",
        'x_errors_total{kind="a\\"b"} 1', 'x_errors_total{kind="watch"} 3']

    hist = Histogram("x_seconds", "Time.", buckets=(0.1, 1.0))
    hist.observe(0.05, call="pause")
    hist.observe(0.5, call="pause")
    hist.observe(5, call="pause")
    assert hist.render()[2:] == [
        'x_seconds_bucket{call="pause",le="0.1"} 1', 'x_seconds_bucket{call="pause",le="1"} 2',
        'x_seconds_bucket{call="pause",le="+Inf"} 3', 'x_seconds_sum{call="pause"} 5.55',
        'x_seconds_count{call="pause"} 3']
    assert hist.count(call="pause") == 3


class FlakyHypervisor:
    def state(self, name):
        return None

    def pause(self, name):
        raise RuntimeError("libvirtd went away")


def test_instrumented_hypervisor_times_calls_and_counts_failures():
    metrics = AgentMetrics()
    hv = InstrumentedHypervisor(FlakyHypervisor(), metrics)
    assert hv.state("a") is None
    with pytest.raises(RuntimeError):
        hv.pause("a")
    assert metrics.libvirt_seconds.count(call="state") == 1
    assert metrics.libvirt_seconds.count(call="pause") == 1
    assert metrics.errors.value(kind="libvirt") == 1


class NoClient:
    """These tests never reach the API: any call would fail loudly."""


def agent(tmp_path, **kwargs) -> NodeAgent:
    return NodeAgent(NoClient(), "node-a", FlakyHypervisor(), state_dir=tmp_path, image_cache=tmp_path,
                     domain_type="qemu", **kwargs)


def vmi(name: str, phase: str, paused: bool = False) -> dict:
    conditions = [{"type": "Paused", "status": "True"}] if paused else []
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"},
            "status": {"phase": phase, "conditions": conditions}}


def test_gauges_come_from_the_watch_cache(tmp_path):
    node = agent(tmp_path)
    for obj in (vmi("a", "Running", paused=True), vmi("b", "Running"), vmi("c", "Failed"), vmi("d", "")):
        node._store(obj)
    text = node.metrics.render()
    assert 'virtops_agent_vmis{phase="Running"} 2' in text
    assert 'virtops_agent_vmis{phase="Failed"} 1' in text
    assert 'virtops_agent_vmis{phase="Pending"} 1' in text
    assert "virtops_agent_vmis_paused 1" in text
    assert 'virtops_agent_info{node="node-a",version="' in text


def test_a_libvirt_event_queues_only_a_known_vmi(tmp_path):
    node = agent(tmp_path)
    node._store(vmi("a", "Running"))
    node._on_domain_event("ns_a", "suspended")
    node._on_domain_event("ns_stranger", "started")
    node._on_domain_event("no-underscore", "started")
    assert node.queue.get(0) == ("ns", "a")
    assert node.queue.get(0) is None
    assert node.metrics.libvirt_events.value(event="suspended") == 1
    assert node.metrics.libvirt_events.value(event="started") == 0  # not this node's domains


class LibvirtdBackSoon:
    """libvirtd away for the first call, back for the next (the only fake: the hypervisor boundary)."""

    def __init__(self) -> None:
        self.calls = 0

    def marker(self, name):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("libvirtd went away")
        return None  # not a domain of ours: nothing to remove


def test_a_failed_reconcile_is_retried_with_backoff_not_only_at_resync(tmp_path):
    hv = LibvirtdBackSoon()
    node = NodeAgent(NoClient(), "node-a", hv, state_dir=tmp_path, image_cache=tmp_path, domain_type="qemu",
                     workers=1, resync_seconds=3600)
    # A VMI the cache does not hold: the real reconcile asks libvirt whether a domain of ours is left.
    node.queue.add(("ns", "gone"))
    worker = threading.Thread(target=node._worker_loop, daemon=True)  # only the worker: no resync thread
    worker.start()
    try:
        for _try in range(400):  # a bounded count of tries; the retry comes 0.2 s after the failure
            if node.metrics.reconcile_seconds.count() >= 2:
                break
            time.sleep(0.05)
    finally:
        node.stop_event.set()
        node.queue.close()
        worker.join(5)
    assert hv.calls == 2
    assert node.metrics.reconcile_seconds.count() == 2
    assert node.metrics.errors.value(kind="reconcile") == 1
    assert node.metrics.errors.value(kind="libvirt") == 1
    assert node.queue._failures == {}  # the success reset the backoff


def test_every_error_kind_and_the_connection_count_are_there_from_the_first_scrape():
    text = AgentMetrics().render()
    for kind in ("reconcile", "libvirt", "watch", "heartbeat", "libvirt_connection"):  # docs/node-agent.md's
        assert f'virtops_agent_errors_total{{kind="{kind}"}} 0' in text
    assert "virtops_agent_libvirt_connections_total 0" in text
