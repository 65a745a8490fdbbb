"""One quantity parser (virtops.quantity) for the agent's domain sizes and the controller's scheduling,
and a controller that skips a node whose heartbeat Lease carries an unusable capacity instead of failing."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from virtops.agent import domain
from virtops.controller import quantity as controller_quantity
from virtops.controller.controller import CAPACITY_ANNOTATION, Controller, node_from_lease
from virtops.quantity import parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("64Mi", 64 * 2**20), ("1Gi", 2**30), ("1.5Gi", 3 * 2**29), ("500m", Decimal("0.5")), ("128M", 128 * 10**6),
    ("2k", 2000), ("2", 2), (" 2 ", 2), ("1e3", 1000), ("5.", 5), (".5", Decimal("0.5")), (3, 3), (1.5, Decimal("1.5")),
    # 'E' (exa) and 'Ei' (exbi) begin like a decimal exponent: they failed with "invalid literal for int()".
    ("100Ei", 100 * 2**60), ("1Ei", 2**60), ("2E", 2 * 10**18), ("1E3", 1000), ("2Pi", 2**51),
])
def test_quantities_parse_to_base_units(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Mi", "64MB", "1.2.3", "-", "64 Mi", "2K", True, None, ["1"]])
def test_malformed_quantities_raise_value_error_naming_the_value(text):
    with pytest.raises(ValueError, match="not a quantity"):
        parse_quantity(text)


def test_agent_and_controller_use_the_one_parser():
    assert domain.parse_quantity is parse_quantity
    assert controller_quantity.parse_quantity is parse_quantity
    assert not hasattr(controller_quantity, "parse")


def lease(capacity: str, name: str = "node-a") -> dict:
    return {"metadata": {"name": name, "namespace": "kube-node-lease",
                         "annotations": {CAPACITY_ANNOTATION: capacity}},
            "spec": {"holderIdentity": name, "renewTime": "2026-11-26T07:00:00.000000Z",
                     "leaseDurationSeconds": 40}}


def test_a_lease_with_a_good_capacity_is_a_node():
    node = node_from_lease(lease(json.dumps({"cpu": "2", "memory": "2Gi"})))
    assert (node.name, node.cpu, node.memory) == ("node-a", 2, 2**30 * 2)


@pytest.mark.parametrize("capacity", [json.dumps({"cpu": "2", "memory": "lots"}), json.dumps({"cpu": "1.2.3"}),
                                      "{not json", json.dumps(["2", "2Gi"])])
def test_a_lease_with_an_unusable_capacity_is_skipped_and_logged(capacity, caplog):
    with caplog.at_level(logging.WARNING, logger="virtops.controller"):
        assert node_from_lease(lease(capacity)) is None
    assert "skipping node node-a" in caplog.text


def test_a_node_whose_lease_turns_unusable_is_dropped_and_the_others_stay():
    controller = Controller(client=None)  # type: ignore[arg-type] - the lease intake never calls the API
    good = json.dumps({"cpu": "2", "memory": "2Gi"})
    controller._on_lease("SYNC", {"items": [lease(good), lease(good, "node-b"), lease("{oops", "node-c")]})
    assert sorted(controller.nodes) == ["node-a", "node-b"]
    controller._on_lease("MODIFIED", lease(json.dumps({"memory": "2GB"})))
    assert sorted(controller.nodes) == ["node-b"]  # not scheduled onto, not judged by its last good renewal
    controller._on_lease("MODIFIED", lease(good))
    assert sorted(controller.nodes) == ["node-a", "node-b"]
