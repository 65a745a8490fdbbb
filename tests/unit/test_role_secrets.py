"""Role tasks whose results carry connection settings are never shown: kubernetes.core.k8s_cluster_info returns
its ``connection`` (username and password when the kubeconfig has them), which -v prints for a registered task
without no_log."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
CARRIES_CONNECTION = ("kubernetes.core.k8s_cluster_info",)


def tasks(items):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROLES)) for p in ROLES.glob("*/tasks/*.yml")))
def test_results_with_connection_settings_are_not_logged(path):
    wrong = [task.get("name") for task in tasks(yaml.safe_load((ROLES / path).read_text()))
             if any(module in task for module in CARRIES_CONNECTION) and task.get("no_log") is not True]
    assert wrong == []
