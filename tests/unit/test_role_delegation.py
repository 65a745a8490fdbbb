"""Tasks a role delegates to the Ansible controller (localhost) never become root there: the play's become
(playbooks/site.yml sets it for the nodes) is meant for the managed host, and sudo on the controller would ask for
a password or run the controller side as root."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"


def tasks(items):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROLES)) for p in ROLES.glob("*/tasks/*.yml")))
def test_tasks_delegated_to_localhost_do_not_become(path):
    wrong = [task.get("name") for task in tasks(yaml.safe_load((ROLES / path).read_text()))
             if task.get("delegate_to") in ("localhost", "127.0.0.1") and task.get("become") is not False]
    assert wrong == []
