# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Reading VMIs: one by name or a list, with an optional wait. Shared by the info modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.virtops.kubevirt.plugins.module_utils.diff import hide
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import ApiError, KubeVirtOpsError
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import (
    KIND,
    VmiService,
    collection_path,
    summarize,
)


def list_vmis(client, namespace=None, label_selectors=None, field_selectors=None, hidden_fields=None,
              name=None, wait=False, expectation=None, wait_timeout=120):
    """``resources`` (full objects) and ``summaries``; with a name, at most one."""
    started = time.monotonic()
    service = VmiService(client, check_mode=True, hidden_fields=hidden_fields)
    if name:
        if wait:
            obj = service.wait(namespace, name, expectation, wait_timeout)
        else:
            obj = service.get(namespace, name)
        items = [obj] if obj is not None else []
    else:
        query = {
            "labelSelector": ",".join(label_selectors or []),
            "fieldSelector": ",".join(field_selectors or []),
        }
        try:
            items, _version = client.list_all(collection_path(namespace), query)
        except ApiError as exc:
            where = "in namespace {0}".format(namespace) if namespace else "in all namespaces"
            raise KubeVirtOpsError("Failed to list {0}s {1}: {2}".format(KIND, where, exc))
        if wait:
            deadline = time.monotonic() + wait_timeout
            waited = []
            for item in items:
                meta = item["metadata"]
                remaining = max(0.0, deadline - time.monotonic())
                waited.append(service.wait(meta["namespace"], meta["name"], expectation, remaining, initial=item))
            items = [i for i in waited if i is not None]
    return {
        "changed": False,
        "api_found": True,
        "resources": [hide(i, hidden_fields) for i in items],
        "summaries": [summarize(i) for i in items],
        "duration": round(time.monotonic() - started, 3),
    }
