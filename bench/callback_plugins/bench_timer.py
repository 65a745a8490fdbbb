"""Per-task timings for bench/: task start/end on the monotonic clock, loop item count, changed/failed.

Enabled only by bench/run (ANSIBLE_CALLBACKS_ENABLED=bench_timer); writes JSON to $BENCH_TIMINGS.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_timer
type: aggregate
short_description: per-task timings for bench/run
description: Writes each task's start, end, item count and status to the file named by BENCH_TIMINGS.
requirements: [enable in configuration]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[dict] = []
        self.started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):  # noqa: ARG002 - Ansible's signature
        self.tasks.append({"name": task.get_name(), "action": task.action, "start": time.monotonic(),
                           "end": None, "items": 0, "changed": False, "failed": False})

    def _end(self, result, failed: bool = False) -> None:
        if not self.tasks:
            return
        task = self.tasks[-1]
        task["end"] = time.monotonic()
        task["changed"] = task["changed"] or bool(result._result.get("changed"))
        task["failed"] = task["failed"] or failed
        if failed:
            task["msg"] = str(result._result.get("msg", ""))[:2000]

    def v2_runner_item_on_ok(self, result):
        if self.tasks:
            self.tasks[-1]["items"] += 1

    v2_runner_item_on_failed = v2_runner_item_on_ok

    def v2_runner_on_ok(self, result):
        self._end(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):  # noqa: ARG002 - Ansible's signature
        self._end(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._end(result)

    def v2_playbook_on_stats(self, stats):  # noqa: ARG002 - Ansible's signature
        path = os.environ.get("BENCH_TIMINGS")
        if path:
            with open(path, "w") as f:
                json.dump({"started": self.started, "ended": time.monotonic(), "tasks": self.tasks}, f)
