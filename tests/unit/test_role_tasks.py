"""Rules every role task file keeps, checked on the YAML (tasks nested in block/rescue/always included).

- Tasks a role delegates to the Ansible controller (localhost) never become root there: the play's become
  (playbooks/site.yml sets it for the nodes) is meant for the managed host, and sudo on the controller would ask
  for a password or run the controller side as root.
- Role tasks whose results carry connection settings are never shown: kubernetes.core.k8s_cluster_info returns
  its ``connection`` (username and password when the kubeconfig has them), which -v prints for a registered task
  without no_log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
TASK_FILES = sorted(str(p.relative_to(ROLES)) for p in ROLES.glob("*/tasks/*.yml"))
CARRIES_CONNECTION = ("kubernetes.core.k8s_cluster_info",)


def tasks(items):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


def role_tasks(path: str):
    return tasks(yaml.safe_load((ROLES / path).read_text()))


@pytest.mark.parametrize("path", TASK_FILES)
def test_tasks_delegated_to_localhost_do_not_become(path):
    wrong = [task.get("name") for task in role_tasks(path)
             if task.get("delegate_to") in ("localhost", "127.0.0.1") and task.get("become") is not False]
    assert wrong == []


@pytest.mark.parametrize("path", TASK_FILES)
def test_results_with_connection_settings_are_not_logged(path):
    wrong = [task.get("name") for task in role_tasks(path)
             if any(module in task for module in CARRIES_CONNECTION) and task.get("no_log") is not True]
    assert wrong == []
