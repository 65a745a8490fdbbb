# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""Pause and unpause through KubeVirt's subresource API, idempotently.

The observed Paused condition decides whether a request is needed at all; the
request is the same PUT that works against a real KubeVirt cluster; a 409 that
means "someone else already did it" is success, one that means "not running" is
the user's error.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.virtops.kubevirt.plugins.module_utils.client import resource_path
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    ApiError,
    ConflictError,
    ForbiddenError,
    KubeVirtOpsError,
    NotFoundError,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import VmiService, summarize
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import Expectation, find_condition

SUBRESOURCE_API = "subresources.kubevirt.io/v1"
VM_KIND = "VirtualMachine"
# KubeVirt's 409 texts (pkg/virt-api/rest/subresource.go) and what they mean for us.
ALREADY = {"paused": "VMI is already paused", "running": "VMI is not paused"}
NOT_RUNNING = ("VM is not running", "VMI is not running")


class PowerPlan:
    """What one vmi_power call needs to do, decided from the observed VMI."""

    def __init__(self, want, vmi):
        self.want = want
        self.vmi = vmi
        cond = find_condition(vmi, "Paused")
        self.paused = bool(cond and cond.get("status") == "True")
        self.needed = (want == "paused") != self.paused

    @property
    def verb(self):
        return "pause" if self.want == "paused" else "unpause"

    def expectation(self):
        return Expectation(condition="Paused", status="True" if self.want == "paused" else "False")


def paused_view(vmi):
    cond = find_condition(vmi, "Paused")
    return {"paused": bool(cond and cond.get("status") == "True"), "condition": cond or {}}


class PowerService:
    def __init__(self, client, check_mode=False):
        self.client = client
        self.check_mode = check_mode
        self.vmis = VmiService(client, check_mode)

    def _resolve(self, kind, namespace, name):
        """The VMI to act on; a VM resolves to its VMI of the same name."""
        if kind == VM_KIND:
            try:
                self.client.get(resource_path("kubevirt.io/v1", "virtualmachines", namespace, name))
            except NotFoundError:
                raise KubeVirtOpsError("VirtualMachine {0}/{1} not found".format(namespace, name))
            except ApiError as exc:
                raise KubeVirtOpsError("Failed to get VirtualMachine {0}/{1}: {2}".format(namespace, name, exc))
            vmi = self.vmis.get(namespace, name)
            if vmi is None:
                raise KubeVirtOpsError(
                    "VirtualMachine {0}/{1} is not running: it has no VirtualMachineInstance".format(namespace, name)
                )
            return vmi
        vmi = self.vmis.get(namespace, name)
        if vmi is None:
            raise KubeVirtOpsError("VirtualMachineInstance {0}/{1} not found".format(namespace, name))
        return vmi

    def ensure(self, kind, namespace, name, want, wait=True, wait_timeout=60):
        started = time.monotonic()
        vmi = self._resolve(kind, namespace, name)
        plan = PowerPlan(want, vmi)
        before = paused_view(vmi)
        changed = False
        if plan.needed:
            changed = self._request(kind, namespace, name, plan)
            if wait and not self.check_mode:
                vmi = self.vmis.wait(namespace, name, plan.expectation(), wait_timeout)
        if self.check_mode and changed:
            after = {"paused": want == "paused", "condition": {}}  # what a real run would reach
        else:
            after = paused_view(vmi)
        return {
            "changed": changed,
            "vmi": vmi,
            "summary": summarize(vmi),
            "duration": round(time.monotonic() - started, 3),
            "diff": {"before": before, "after": after},
        }

    def _request(self, kind, namespace, name, plan):
        """PUT the subresource; True when this call changed the power state (or would, in check mode)."""
        path = resource_path(SUBRESOURCE_API, "virtualmachineinstances", namespace, name, plan.verb)
        body = {"dryRun": ["All"]} if self.check_mode else {}
        what = "{0} {1}/{2}".format(kind, namespace, name)
        try:
            self.client.request("PUT", path, None, body)
            return True
        except ConflictError as exc:
            if ALREADY[plan.want] in exc.message:
                return False  # another actor got there first: the state is what we want
            if any(text in exc.message for text in NOT_RUNNING):
                raise KubeVirtOpsError("Cannot {0} {1}: {2} is not running ({3})".format(
                    plan.verb, what, kind, exc.message))
            raise KubeVirtOpsError("Failed to {0} {1}: {2}".format(plan.verb, what, exc))
        except ForbiddenError as exc:
            raise KubeVirtOpsError(
                "Failed to {0} {1}: RBAC denied verb update on virtualmachineinstances/{0} in API group "
                "subresources.kubevirt.io ({2})".format(plan.verb, what, exc)
            )
        except NotFoundError as exc:
            if exc.body.get("kind") == "Status" and exc.body.get("details", {}).get("name") == name:
                raise KubeVirtOpsError("Failed to {0} {1}: {2}".format(plan.verb, what, exc))
            raise KubeVirtOpsError(
                "Failed to {0} {1}: the subresources.kubevirt.io/v1 API is not served by this cluster "
                "(is KubeVirt's virt-api, or the virtops controller, running?): {2}".format(plan.verb, what, exc)
            )
        except ApiError as exc:
            raise KubeVirtOpsError("Failed to {0} {1}: {2}".format(plan.verb, what, exc))
