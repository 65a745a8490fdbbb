# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Reading objects (VMIs, VMs): one by name or a list, with an optional wait. Shared by the info modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.virtops.kubevirt.plugins.module_utils.diff import remove_fields
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import ApiError, KubeVirtOpsError
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import VmiService, summarize

# What kubevirt.core's info modules hide by default: the server's field-ownership bookkeeping, about half of
# every object's bytes, which users rarely read. hidden_fields: [] keeps it.
DEFAULT_HIDDEN_FIELDS = ["metadata.managedFields"]


def list_vmis(client, namespace=None, label_selectors=None, field_selectors=None, hidden_fields=None,
              name=None, wait=False, expectation=None, wait_timeout=120):
    """``resources`` (full objects) and ``summaries`` of VMIs; with a name, at most one."""
    service = VmiService(client, check_mode=True, hidden_fields=hidden_fields)
    return list_objects(service, summarize, namespace, label_selectors, field_selectors, name, wait, expectation,
                        wait_timeout)


def list_objects(service, summarize_one, namespace=None, label_selectors=None, field_selectors=None, name=None,
                 wait=False, expectation=None, wait_timeout=120, api_version=None):
    """``resources`` and ``summaries`` of the service's kind; with a name, at most one."""
    started = time.monotonic()
    kind = service.kind
    if name:
        if wait:
            obj = service.wait(namespace, name, expectation, wait_timeout, api_version=api_version)
        else:
            obj = service.get(namespace, name, api_version)
        items = [obj] if obj is not None else []
    else:
        query = {
            "labelSelector": ",".join(label_selectors or []),
            "fieldSelector": ",".join(field_selectors or []),
        }
        try:
            items, _version = service.client.list_all(kind.collection_path(namespace, api_version), query)
        except ApiError as exc:
            where = "in namespace {0}".format(namespace) if namespace else "in all namespaces"
            raise KubeVirtOpsError("Failed to list {0}s {1}: {2}".format(kind.kind, where, exc))
        if wait:
            deadline = time.monotonic() + wait_timeout
            waited = []
            for item in items:
                meta = item["metadata"]
                remaining = max(0.0, deadline - time.monotonic())
                waited.append(service.wait(meta["namespace"], meta["name"], expectation, remaining, initial=item,
                                           api_version=api_version))
            items = [i for i in waited if i is not None]
    return {
        "changed": False,
        "api_found": True,
        "summaries": [summarize_one(i) for i in items],  # before hiding: a summary never loses its fields
        # The objects were just parsed and are ours: hiding in place spares a deep copy of each.
        "resources": [remove_fields(i, service.hidden_fields) for i in items],
        "duration": round(time.monotonic() - started, 3),
    }
