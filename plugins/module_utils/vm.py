# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)
"""VirtualMachine desired state: the definition from options, present/absent, and started/stopped/restarted.

A VM's spec is mutable, unlike a VMI's: differences are merge-patched. Power goes through KubeVirt's
subresources (PUT .../virtualmachines/NAME/start|stop|restart), the same requests virtctl sends; the observed
VM and VMI decide whether a request is needed at all, and a 409 that means "already" is success.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.virtops.kubevirt.plugins.module_utils.client import resource_path
from ansible_collections.virtops.kubevirt.plugins.module_utils.diff import metadata_patch, subset_differences
from ansible_collections.virtops.kubevirt.plugins.module_utils.errors import (
    ApiError,
    ConflictError,
    DefinitionError,
    KubeVirtOpsError,
    NotFoundError,
    failure_message,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import (
    UNREAD,
    VMI,
    Kind,
    ObjectService,
    VmiService,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import FINAL_PHASES, Expectation

VM = Kind("VirtualMachine", "virtualmachines", ("kubevirt.io/v1", "kubevirt.io/v1alpha3"), "vm")
SUBRESOURCE_API = "subresources.kubevirt.io/v1"
RUN_STRATEGIES = ("Always", "Halted", "Manual", "RerunOnFailure", "Once")
# KubeVirt's 409 texts (pkg/virt-api/rest/subresource.go) that mean the VM already is where we want it.
ALREADY = {"start": ("VM is already running",), "stop": ("VM is not running",)}


def run_strategy(spec):
    """The run strategy a VM spec asks for (``running`` mapped as KubeVirt does), or None."""
    spec = spec or {}
    if spec.get("runStrategy"):
        return spec["runStrategy"]
    if spec.get("running") is not None:
        return "Always" if spec["running"] else "Halted"
    return None


def vm_spec_from_options(spec=None, labels=None, annotations=None, instancetype=None, preference=None,
                         data_volume_templates=None):
    """A VM spec from kubevirt.core.kubevirt_vm's options: O(spec) is the template's spec, and the labels and
    annotations also go on the template, so the VMI carries them."""
    vm_spec = {}
    if spec is not None:
        vm_spec["template"] = {"spec": spec}
    template_meta = dict((k, v) for k, v in (("labels", labels), ("annotations", annotations)) if v)
    if template_meta:
        vm_spec.setdefault("template", {})["metadata"] = template_meta
    for key, value in (("instancetype", instancetype), ("preference", preference),
                       ("dataVolumeTemplates", data_volume_templates)):
        if value is not None:
            vm_spec[key] = value
    return vm_spec


def set_run_strategy(doc, running=None, strategy=None, state="present"):
    """Apply O(running)/O(run_strategy) to a VM definition; check them against O(state)."""
    spec = doc.setdefault("spec", {})
    if strategy is not None:
        spec["runStrategy"] = strategy
        spec.pop("running", None)
    elif running is not None:
        spec["running"] = running
        spec.pop("runStrategy", None)
    wanted = run_strategy(spec)
    conflicts = {"started": ("Halted",), "restarted": ("Halted",), "stopped": ("Always",)}
    if wanted in conflicts.get(state, ()):
        option = "run_strategy" if spec.get("runStrategy") else "running"
        raise DefinitionError("{0}: {1} conflicts with state={2} for VirtualMachine {3}/{4}".format(
            option, spec.get("runStrategy") or spec.get("running"), state, doc["metadata"]["namespace"],
            doc["metadata"]["name"]))
    return doc


def vmi_of(vm):
    """The VMI a VM's controller makes, as far as a batch's LIST of VMIs needs it: name, namespace, the template's
    labels (the VMI carries them) and the VMI API version."""
    template = ((vm.get("spec") or {}).get("template") or {}).get("metadata") or {}
    meta = vm["metadata"]
    return {"apiVersion": VMI.default_api_version, "kind": VMI.kind,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": template.get("labels") or {}}}


def summarize_vm(obj):
    """What `kubectl get vms` shows (printableStatus, ready) and the run strategy."""
    if not obj:
        return {}
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    printable = status.get("printableStatus") or ""
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "printable_status": printable,
        "run_strategy": run_strategy(obj.get("spec")) or "",
        "ready": bool(status.get("ready")),
        "paused": printable == "Paused",
    }


class VmExpectation(Expectation):
    """A VM waited for: a printableStatus, or a condition (Ready), or absence; no phase (a VM has none)."""

    def __init__(self, printable_status=None, condition=None, status="True", reason=None, absent=False):
        Expectation.__init__(self, condition=condition, status=status, reason=reason, absent=absent)
        self.printable_status = printable_status

    def describe(self):
        if self.printable_status:
            return "printableStatus {0}".format(self.printable_status)
        return Expectation.describe(self)

    def met(self, obj):
        if self.printable_status:
            return obj is not None and (obj.get("status") or {}).get("printableStatus") == self.printable_status
        if not (self.condition or self.absent):
            return obj is not None
        return Expectation.met(self, obj)

    def impossible(self, obj):
        return None if self.absent or obj is not None else "it was deleted"


class NewInstance(Expectation):
    """A VMI other than the one a restart replaced, Running."""

    def __init__(self, old_uid):
        Expectation.__init__(self, phase="Running")
        self.old_uid = old_uid

    def describe(self):
        return "a new VirtualMachineInstance in phase Running"

    def met(self, obj):
        return obj is not None and obj["metadata"].get("uid") != self.old_uid and Expectation.met(self, obj)

    def impossible(self, obj):
        if obj is None or obj["metadata"].get("uid") == self.old_uid:
            return None  # the old one going away and the new one not yet there is the normal way
        return Expectation.impossible(self, obj)


def default_expectation(state, strategy):
    """What O(wait=true) waits for without O(wait_for): Ready when it should run, Stopped when it should not."""
    if state in ("started", "restarted") or (state == "present" and strategy in ("Always", "RerunOnFailure")):
        return VmExpectation(condition="Ready")
    if state == "stopped" or strategy == "Halted":
        return VmExpectation(printable_status="Stopped")
    return VmExpectation()  # Manual, Once: nothing to wait for but the object


def vmi_is_live(vmi):
    if vmi is None or (vmi.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (vmi.get("status") or {}).get("phase") not in FINAL_PHASES


class VmService(ObjectService):
    """Drives one VM to present/absent and started/stopped/restarted; returns the module result."""

    kind = VM

    def __init__(self, client, check_mode=False, hidden_fields=None, diff=True):
        ObjectService.__init__(self, client, check_mode, hidden_fields, diff)
        self.vmis = VmiService(client, check_mode)

    # --- the object ----------------------------------------------------------------
    def ensure(self, desired, state="present", force=False, wait=False, expectation=None, guest_agent=False,
               wait_timeout=120, live=UNREAD, live_vmi=UNREAD):
        """``live`` and ``live_vmi``: the VM and its VMI as a batch's LIST read them (None: missing); unread, they
        are read with a GET each."""
        started = time.monotonic()
        meta = desired["metadata"]
        ns, name, api_version = meta["namespace"], meta["name"], desired["apiVersion"]
        live = self.observed(ns, name, api_version, live)
        if live is None:
            after, live = self._create(desired, state)
            method = "created" if live is None else None
        if live is not None:
            after, method = self._update(desired, live, force)
        power, replaced_uid = None, None
        if state in ("started", "stopped", "restarted") and not (self.check_mode and method == "created"):
            power, replaced_uid = self._power(after, state, live_vmi)
        changed = method != "unchanged" or power is not None
        if wait and not self.check_mode:
            after = self._wait(after, state, expectation, guest_agent, wait_timeout, power, replaced_uid)
        result = self._result(changed, method, live, after, started, summarize_vm(after))
        result["power_request"] = power
        return result

    def _create(self, desired, state):
        """(the created VM, None), or (None, the live VM) when it exists after all (a 409: created meanwhile, or
        missed by a batch's narrowed LIST)."""
        meta = desired["metadata"]
        ns, name, api_version = meta["namespace"], meta["name"], desired["apiVersion"]
        spec = desired.get("spec") or {}
        if not spec.get("template"):
            raise DefinitionError("spec is required to create VirtualMachine {0}/{1}, which does not exist: "
                                  "set spec, definition or src".format(ns, name))
        body = desired
        if run_strategy(spec) is None:
            # kubevirt.core's default is running: yes; state=stopped means it is created stopped. Only the new VM
            # gets it: an existing VM's run strategy is left alone.
            body = dict(desired, spec=dict(spec, runStrategy="Halted" if state == "stopped" else "Always"))
        try:
            return self.client.create(self.kind.collection_path(ns, api_version), body,
                                      dry_run=self.check_mode), None
        except ConflictError:
            live = self.get(ns, name, api_version)
            if live is None:
                raise KubeVirtOpsError("Failed to create VirtualMachine {0}/{1}: the server answered 409 (it exists), "
                                       "then a GET found none (deleted meanwhile?)".format(ns, name))
            return None, live
        except ApiError as exc:
            raise KubeVirtOpsError(failure_message("create", self.kind.kind, ns, name, exc))

    def _update(self, desired, live, force):
        meta = desired["metadata"]
        ns, name, api_version = meta["namespace"], meta["name"], desired["apiVersion"]
        path = self.kind.object_path(ns, name, api_version)
        spec = desired.get("spec") or {}
        differences = subset_differences(spec, live.get("spec") or {}, "spec")
        meta_patch = metadata_patch(meta, live.get("metadata") or {})
        if not differences and not meta_patch:
            return live, "unchanged"
        if force:
            # kubevirt.core's force: replace the object with the definition (fields it omits are reset).
            body = dict(desired, metadata=dict(meta, resourceVersion=live["metadata"]["resourceVersion"]))
            return self._call("replace", ns, name, self.client.request, "PUT", path,
                              {"dryRun": "All" if self.check_mode else None}, body), "replaced"
        patch = meta_patch or {}
        if differences:
            patch["spec"] = dict(spec)
            # runStrategy and running are exclusive: setting one clears the other.
            live_spec = live.get("spec") or {}
            for field, other in (("runStrategy", "running"), ("running", "runStrategy")):
                if field in spec and live_spec.get(other) is not None:
                    patch["spec"][other] = None
        return self._call("patch", ns, name, self.client.merge_patch, path, patch,
                          dry_run=self.check_mode), "patched"

    def absent(self, namespace, name, delete_options=None, wait=False, wait_timeout=120, api_version=None,
               live=UNREAD):
        started = time.monotonic()
        live = self.observed(namespace, name, api_version, live)
        if live is None:
            return self._result(False, "unchanged", None, None, started, {})
        try:
            self.client.delete(self.kind.object_path(namespace, name, api_version), delete_options,
                               dry_run=self.check_mode)
        except NotFoundError:
            return self._result(False, "unchanged", None, None, started, {})
        except ApiError as exc:
            raise KubeVirtOpsError(failure_message("delete", self.kind.kind, namespace, name, exc))
        if wait and not self.check_mode:
            self.wait(namespace, name, VmExpectation(absent=True), wait_timeout, api_version=api_version)
        return self._result(True, "deleted", live, None, started, {})

    # --- power -----------------------------------------------------------------
    def _power(self, vm, state, live_vmi=UNREAD):
        """Send start, stop or restart when the observed state needs it: (the verb sent or None, the uid of the
        VMI a restart replaces)."""
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        strategy = run_strategy(vm.get("spec"))
        vmi = self.vmis.observed(ns, name, live=live_vmi)
        if state == "restarted":
            verb = "restart"
        elif state == "started":
            # Always (and RerunOnFailure after a failure) makes the controller start it without a request.
            if vmi_is_live(vmi) or strategy == "Always":
                return None, None
            verb = "start"
        else:
            # Halted: a stop was asked for already; what is left is the VMI shutting down.
            if strategy == "Halted" or (not vmi_is_live(vmi) and strategy not in ("Always", "RerunOnFailure")):
                return None, None
            verb = "stop"
        path = resource_path(SUBRESOURCE_API, self.kind.plural, ns, name, verb)
        body = {"dryRun": ["All"]} if self.check_mode else {}
        what = "VirtualMachine {0}/{1}".format(ns, name)
        try:
            self.client.request("PUT", path, None, body)
        except ConflictError as exc:
            if any(text in exc.message for text in ALREADY.get(verb, ())):
                return None, None  # another actor got there first
            raise KubeVirtOpsError("Failed to {0} {1}: {2}".format(verb, what, exc))
        except NotFoundError as exc:
            if exc.body.get("details", {}).get("name") == name:
                raise KubeVirtOpsError("Failed to {0} {1}: {2}".format(verb, what, exc))
            raise KubeVirtOpsError(
                "Failed to {0} {1}: the subresources.kubevirt.io/v1 API is not served by this cluster "
                "(is KubeVirt's virt-api, or the virtops controller, running?): {2}".format(verb, what, exc))
        except ApiError as exc:
            text = failure_message(verb, self.kind.kind, ns, name, exc)
            if exc.status == 403:
                text += " (the verb is update on virtualmachines/{0} in API group subresources.kubevirt.io)".format(
                    verb)
            raise KubeVirtOpsError(text)
        return verb, ((vmi or {}).get("metadata") or {}).get("uid")

    # --- waits -----------------------------------------------------------------
    def _wait(self, vm, state, expectation, guest_agent, timeout, power, replaced_uid):
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        deadline = time.monotonic() + timeout

        def left():
            return max(0.0, deadline - time.monotonic())

        if power == "restart":
            self.vmis.wait(ns, name, NewInstance(replaced_uid), left())
        expectation = expectation or default_expectation(state, run_strategy(vm.get("spec")))
        # The object just written is the start of the watch unless a request changed things since.
        vm = self.wait(ns, name, expectation, left(), initial=None if power else vm)
        if guest_agent:
            # The guest agent's connection is a condition of the VMI (KubeVirt's AgentConnected).
            self.vmis.wait(ns, name, Expectation(condition="AgentConnected"), left())
        return vm


def expectation_from_params(wait_for):
    """VmExpectation from the module's O(wait_for), or None for the state's default."""
    if not wait_for or not (wait_for.get("printable_status") or wait_for.get("condition")):
        return None
    if wait_for.get("printable_status"):
        return VmExpectation(printable_status=wait_for["printable_status"])
    return VmExpectation(condition=wait_for["condition"], status=wait_for.get("status"),
                         reason=wait_for.get("reason"))
