# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Several objects in one task: each driven by the same service call, concurrently, each idempotent.

What exists is read first with one LIST per namespace (``list_live``) instead of one GET per object, so a
batch whose objects are all as declared sends a single request. Then a bounded thread pool runs one call per
object (the calls wait on the network, so threads overlap their requests; the client's connection pool is sized
to match). Every object gets a result entry; when some fail, one error lists which, and the results of the others
are still returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import ApiError, BatchError, KubeVirtOpsError

DEFAULT_CONCURRENCY = 8
# Fewer objects than this in one namespace are read with a GET each, concurrently: a LIST of a namespace that
# holds many more objects than the batch would cost more than the GETs it saves.
LIST_MIN_OBJECTS = 5


def shared_labels(objects):
    """The labels (key, value) every object carries: a selector that narrows a LIST to at most the batch's."""
    shared = None
    for obj in objects:
        labels = set(((obj.get("metadata") or {}).get("labels") or {}).items())
        shared = labels if shared is None else shared & labels
        if not shared:
            return {}
    return dict(shared or ())


def list_live(client, kind, objects, min_objects=LIST_MIN_OBJECTS):
    """The live object (or None: it does not exist) of each declared one, as {(namespace, name): obj}.

    One LIST per namespace and API version, narrowed by the labels the objects of that namespace share. An object
    with other labels than declared is not in a narrowed list: it is read as missing, and the create's 409 makes
    the caller GET it. Objects left out of the answer - a namespace with fewer than ``min_objects`` of them, or a
    LIST the server refused (RBAC may grant get but not list) - are read by the caller with a GET each.
    """
    groups = {}
    for obj in objects:
        meta = obj["metadata"]
        groups.setdefault((meta["namespace"], obj["apiVersion"]), []).append(obj)
    known = {}
    for (namespace, api_version), members in groups.items():
        if len(members) < min_objects:
            continue
        selector = ",".join("{0}={1}".format(k, v) for k, v in sorted(shared_labels(members).items()))
        try:
            items, _version = client.list_all(kind.collection_path(namespace, api_version),
                                              {"labelSelector": selector or None})
        except ApiError:
            continue  # forbidden, or any other refusal: the GETs report it per object
        by_name = {}
        for item in items:
            # A list's items may omit apiVersion and kind; a GET's answer has them.
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind.kind)
            by_name[item["metadata"]["name"]] = item
        for obj in members:
            known[(namespace, obj["metadata"]["name"])] = by_name.get(obj["metadata"]["name"])
    return known


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
