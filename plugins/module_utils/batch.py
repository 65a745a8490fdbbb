# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Several objects in one task: each driven by the same service call, concurrently, each idempotent.

A bounded thread pool runs one call per object (the calls wait on the network, so threads overlap
their requests; the client's connection pool is sized to match). Every object gets a result entry; when
some fail, one error lists which, and the results of the others are still returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import BatchError, KubeVirtOpsError

DEFAULT_CONCURRENCY = 8


def run_batch(objects, action, kind, concurrency=DEFAULT_CONCURRENCY):
    """``action(obj)`` for each object; the module result of the whole batch.

    ``action`` returns one object's result (changed, method, summary, diff, ...) or raises KubeVirtOpsError.
    """
    started = time.monotonic()

    def one(obj):
        meta = obj["metadata"]
        try:
            entry = action(obj)
        except KubeVirtOpsError as exc:
            entry = {"changed": False, "failed": True, "msg": str(exc)}
            last_seen = getattr(exc, "last_seen", None)
            if last_seen:
                entry["last_seen"] = last_seen
        entry["name"], entry["namespace"] = meta["name"], meta["namespace"]
        return entry

    workers = max(1, min(concurrency, len(objects)))
    if workers == 1:
        results = [one(obj) for obj in objects]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, objects))  # in the order given
    changed = any(r.get("changed") for r in results)
    failed = [r for r in results if r.get("failed")]
    diffs = [r.pop("diff") for r in results if "diff" in r]
    if failed:
        raise BatchError(
            "{0} of {1} {2}s failed: {3}".format(
                len(failed), len(results), kind, "; ".join(
                    "{0}/{1}: {2}".format(r["namespace"], r["name"], r["msg"]) for r in failed)),
            results, changed)
    return {
        "changed": changed,
        "results": results,
        "duration": round(time.monotonic() - started, 3),
        "diff": diffs,
    }
