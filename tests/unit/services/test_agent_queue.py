"""The agent's per-VMI work queue, and the entry point's argument parsing."""

from __future__ import annotations

import argparse
import threading

import pytest
from virtops.agent.agent import KeyQueue
from virtops.agent.main import build_parser, parse_labels, settings_from


def test_a_key_is_queued_once():
    queue = KeyQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert len(queue) == 2
    assert queue.get(0) == ("ns", "a")
    assert queue.get(0) == ("ns", "b")
    assert queue.get(0) is None


def test_a_key_in_progress_is_not_handed_out_twice_but_runs_again_afterwards():
    queue = KeyQueue()
    queue.add("k")
    assert queue.get(0) == "k"
    queue.add("k")  # an event while a worker holds the key
    queue.add("k")
    assert queue.get(0) is None
    queue.done("k")
    assert queue.get(0) == "k"
    queue.done("k")
    assert queue.get(0) is None


def test_close_wakes_waiting_workers():
    queue = KeyQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(queue.get(10)))
    worker.start()
    queue.close()
    worker.join(5)
    assert got == [None]
    queue.add("late")
    assert len(queue) == 0


def test_labels_and_defaults():
    assert parse_labels("zone=a, disk=ssd,") == {"zone": "a", "disk": "ssd"}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_labels("zone")
    config = settings_from(build_parser().parse_args(["--kubeconfig", "k", "--node-name", "n"]))
    assert (config.lease_namespace, config.metrics_address, config.labels) == ("kube-node-lease", "", {})
