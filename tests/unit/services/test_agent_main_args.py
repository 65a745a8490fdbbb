"""The agent's entry point: argument parsing and defaults."""

from __future__ import annotations

import argparse

import pytest
from virtops.agent.main import build_parser, parse_labels, settings_from


def test_labels_and_defaults():
    assert parse_labels("zone=a, disk=ssd,") == {"zone": "a", "disk": "ssd"}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_labels("zone")
    config = settings_from(build_parser().parse_args(["--kubeconfig", "k", "--node-name", "n"]))
    assert (config.lease_namespace, config.metrics_address, config.labels) == ("kube-node-lease", "", {})
