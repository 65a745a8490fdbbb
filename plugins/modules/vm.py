#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm
short_description: Create, change, start, stop, restart and delete KubeVirt VirtualMachines, idempotently
version_added: 0.2.0
description:
  - Makes a KubeVirt C(VirtualMachine) (VM) present or absent through the Kubernetes API, and started, stopped or
    restarted through KubeVirt's subresources (C(PUT .../virtualmachines/NAME/start), C(stop), C(restart)), the
    requests C(virtctl start|stop|restart) sends.
  - The options are those of C(kubevirt.core.kubevirt_vm) where they mean the same, so a playbook switches by
    changing the module name. Beyond it, O(definition) and O(src) take whole manifests (several make a batch),
    O(state) takes V(started), V(stopped) and V(restarted), and waits watch the API instead of polling.
  - An existing VM whose spec differs from the wanted one is merge-patched (a VM's spec is mutable, unlike a
    VMI's); fields the server added (defaults) are not differences. With O(force=true) it is replaced instead.
  - O(state=started) sends C(start) only when the VM has no running VMI and its run strategy does not start it
    by itself (C(Always) does); O(state=stopped) sends C(stop) only when the VM runs or would be started by its
    run strategy. Nothing is sent when the VM already is in that state, and a C(409) that means "already" is
    C(ok). O(state=restarted) always sends C(restart).
  - Several VMs in one task (a list in O(definition), or several YAML documents) are applied concurrently, each
    idempotently; RV(results) has one entry per VM, and one failure message names each VM that failed.
  - Check mode asks the server for a dry run (C(dryRun=All)) of every write and subresource request.
author:
  - virtops.kubevirt maintainers (@virtops)
extends_documentation_fragment:
  - virtops.kubevirt.auth
  - virtops.kubevirt.auth.DELETE
  - virtops.kubevirt.auth.BATCH
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Server-side dry run for create, patch, replace, delete and the start, stop and restart requests.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: full
    details: Before and after, without resourceVersion, generation, managedFields, uid and O(hidden_fields).
options:
  state:
    description:
      - V(present) and V(absent), as in C(kubevirt.core.kubevirt_vm).
      - V(started), V(stopped) and V(restarted) make the VM present first (when a spec or definition is given;
        otherwise the VM must exist), then start, stop or restart it.
    type: str
    choices: [present, absent, started, stopped, restarted]
    default: present
  definition:
    description:
      - The VM as a dict or YAML text; a list of dicts, or YAML text with several documents, is a batch.
        C(kind) defaults to C(VirtualMachine) and C(apiVersion) to O(api_version).
      - O(name), O(namespace), O(labels), O(annotations), O(running) and O(run_strategy) override or extend it.
    type: raw
    aliases: [resource_definition]
  src:
    description: Path to a manifest file, like C(kubectl create -f vm.yaml). Several YAML documents are a batch.
    type: path
  api_version:
    description: API version of KubeVirt.
    type: str
    default: kubevirt.io/v1
    choices: [kubevirt.io/v1, kubevirt.io/v1alpha3]
  name:
    description: Name of the VM. Required unless the definition or O(src) has C(metadata.name).
    type: str
  namespace:
    description: Namespace of the VM. Defaults to the definition's, then the kubeconfig context's, then C(default).
    type: str
  labels:
    description: Labels of the VM; from options, also of its template, so that the VMI carries them.
    type: dict
  annotations:
    description: Annotations of the VM; from options, also of its template.
    type: dict
  running:
    description:
      - Whether the VM should run (C(spec.running)). Mutually exclusive with O(run_strategy).
      - When neither is set, a new VM gets C(runStrategy=Always) (C(Halted) with O(state=stopped)), as
        C(kubevirt.core.kubevirt_vm)'s default C(running=yes) means; an existing VM's run strategy is left alone.
    type: bool
  run_strategy:
    description: The VM's C(spec.runStrategy). Mutually exclusive with O(running).
    type: str
    choices: [Always, Halted, Manual, RerunOnFailure, Once]
  instancetype:
    description: The C(spec.instancetype) matcher, passed through, for example C(name) V(u1.medium).
    type: dict
  preference:
    description: The C(spec.preference) matcher, passed through.
    type: dict
  data_volume_templates:
    description: The C(spec.dataVolumeTemplates), passed through.
    type: list
    elements: dict
  spec:
    description: The spec of the VM's template, that is the VMI's spec (C(spec.template.spec)), in camelCase.
    type: dict
  force:
    description: Replace an existing VM that differs instead of patching it (fields the definition omits are reset).
    type: bool
    default: false
  wait:
    description:
      - Wait, by watching the API, until the VM reaches O(wait_for); without it, until it is C(Ready) when it
        should run (O(state=started), V(restarted), or run strategy C(Always)/C(RerunOnFailure)), until its
        printableStatus is C(Stopped) when it should not, and until it is gone for O(state=absent).
      - After O(state=restarted), first until a new VMI (another uid) is C(Running).
    type: bool
    default: false
  wait_for:
    description: What O(wait) waits for instead of the default.
    type: dict
    suboptions:
      printable_status:
        description: The VM's C(status.printableStatus), for example V(Running), V(Stopped) or V(Paused).
        type: str
      condition:
        description: A condition type in the VM's C(status.conditions), for example V(Ready).
        type: str
      status:
        description: The condition's status. V(False) is also met when the condition is absent.
        type: str
        default: "True"
        choices: ["True", "False", "Unknown"]
      reason:
        description: The condition's reason, when it matters.
        type: str
      guest_agent:
        description: Then also wait until the VMI's guest agent is connected (its C(AgentConnected) condition).
        type: bool
        default: false
  wait_sleep:
    description: Accepted for C(kubevirt.core.kubevirt_vm) playbooks and ignored; waits watch instead of polling.
    type: int
    default: 5
  wait_timeout:
    description: Seconds to wait. A timeout fails with the last status, conditions and events seen.
    type: int
    default: 120
  hidden_fields:
    description:
      - Fields left out of the returned VM and the diff, as dotted paths; a key with dots goes in brackets.
      - The default leaves out C(metadata.managedFields), as kubevirt.core does; V([]) returns the whole object.
    type: list
    elements: str
    default: [metadata.managedFields]
seealso:
  - module: virtops.kubevirt.vm_info
  - module: virtops.kubevirt.vmi_power
"""

EXAMPLES = r"""
- name: Create a VM that runs (kubevirt.core.kubevirt_vm's options) and wait until it is Ready
  virtops.kubevirt.vm:
    name: testvm
    namespace: demo
    labels:
      app: demo
    run_strategy: Always
    instancetype:
      name: u1.small
    spec:
      domain:
        devices: {}
      volumes:
        - name: containerdisk
          containerDisk:
            image: registry.example.com/virtops/debian:12
    wait: true

- name: Stop it (PUT .../stop; nothing is sent when it is stopped already)
  virtops.kubevirt.vm:
    name: testvm
    namespace: demo
    state: stopped
    wait: true

- name: Start it again and wait until its guest agent is connected
  virtops.kubevirt.vm:
    name: testvm
    namespace: demo
    state: started
    wait: true
    wait_for:
      condition: Ready
      guest_agent: true
    wait_timeout: 300

- name: Restart it
  virtops.kubevirt.vm:
    name: testvm
    namespace: demo
    state: restarted
    wait: true

- name: Declare several VMs from one file
  virtops.kubevirt.vm:
    src: vms.yaml
    namespace: demo

- name: Delete it (its VMI goes with it)
  virtops.kubevirt.vm:
    name: testvm
    namespace: demo
    state: absent
    wait: true
"""

RETURN = r"""
vm:
  description: The VM as the server returned it (a dry-run result in check mode); empty after a delete.
  returned: success, for a single VM
  type: dict
summary:
  description: What C(kubectl get vms) shows.
  returned: success, for a single VM
  type: dict
  contains:
    name: {description: Name., type: str, returned: when the VM exists}
    namespace: {description: Namespace., type: str, returned: when the VM exists}
    printable_status: {description: C(status.printableStatus)., type: str, returned: when the VM exists}
    run_strategy: {description: C(spec.runStrategy) (or what C(spec.running) means)., type: str, returned: when the VM exists}
    ready: {description: C(status.ready)., type: bool, returned: when the VM exists}
    paused: {description: The printableStatus is C(Paused)., type: bool, returned: when the VM exists}
method:
  description: What was done to the object.
  returned: success, for a single VM
  type: str
  sample: created
  choices: [created, patched, replaced, deleted, unchanged]
power_request:
  description: The subresource request sent (V(start), V(stop), V(restart)), or null when none was needed.
  returned: success, for a single VM
  type: str
  sample: start
results:
  description:
    - One entry per VM of a batch, in the order given, with the keys a single VM returns and C(name) and
      C(namespace); a failed one has C(failed) and C(msg) instead.
  returned: for a batch (several VMs), also when some failed
  type: list
  elements: dict
duration:
  description: Seconds the task took, waits included.
  returned: success
  type: float
  sample: 0.042
last_seen:
  description: The object as last seen when a wait failed.
  returned: when a wait timed out
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_spec, batch_spec, delete_spec
from ansible_collections.virtops.kubevirt.plugins.module_utils.batch import list_live, run_batch
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import check_concurrency, run
from ansible_collections.virtops.kubevirt.plugins.module_utils.info import DEFAULT_HIDDEN_FIELDS
from ansible_collections.virtops.kubevirt.plugins.module_utils.vm import (
    RUN_STRATEGIES,
    VM,
    VmService,
    expectation_from_params,
    set_run_strategy,
    vm_spec_from_options,
    vmi_of,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import (
    UNREAD,
    VMI,
    build_definitions,
    delete_options_from_params,
)

SPEC_OPTIONS = ("spec", "instancetype", "preference", "data_volume_templates")


def argument_spec():
    spec = auth_spec()
    spec.update(delete_spec())
    spec.update(batch_spec())
    spec.update(
        state=dict(type="str", default="present", choices=["present", "absent", "started", "stopped", "restarted"]),
        definition=dict(type="raw", aliases=["resource_definition"]),
        src=dict(type="path"),
        api_version=dict(type="str", default="kubevirt.io/v1", choices=list(VM.api_versions)),
        name=dict(type="str"),
        namespace=dict(type="str"),
        labels=dict(type="dict"),
        annotations=dict(type="dict"),
        running=dict(type="bool"),
        run_strategy=dict(type="str", choices=list(RUN_STRATEGIES)),
        instancetype=dict(type="dict"),
        preference=dict(type="dict"),
        data_volume_templates=dict(type="list", elements="dict"),
        spec=dict(type="dict"),
        force=dict(type="bool", default=False),
        wait=dict(type="bool", default=False),
        wait_for=dict(type="dict", mutually_exclusive=[["printable_status", "condition"]], options=dict(
            printable_status=dict(type="str"),
            condition=dict(type="str"),
            status=dict(type="str", default="True", choices=["True", "False", "Unknown"]),
            reason=dict(type="str"),
            guest_agent=dict(type="bool", default=False),
        )),
        wait_sleep=dict(type="int", default=5),
        wait_timeout=dict(type="int", default=120),
        hidden_fields=dict(type="list", elements="str", default=list(DEFAULT_HIDDEN_FIELDS)),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["definition", "src"], ["running", "run_strategy"]]
        + [[source, option] for source in ("definition", "src") for option in SPEC_OPTIONS],
        supports_check_mode=True,
    )
    p = module.params
    check_concurrency(module)
    wait_for = p["wait_for"] or {}

    def action(client):
        from_options = vm_spec_from_options(p["spec"], p["labels"], p["annotations"], p["instancetype"],
                                            p["preference"], p["data_volume_templates"])
        desired = build_definitions(
            p["definition"], p["src"], p["name"], p["namespace"], p["labels"], p["annotations"],
            None if p["definition"] is not None or p["src"] else from_options, p["api_version"],
            client.settings.namespace or "default", need_spec=False, kind=VM,
        )
        desired = [set_run_strategy(doc, p["running"], p["run_strategy"], p["state"]) for doc in desired]
        service = VmService(client, module.check_mode, p["hidden_fields"], module._diff)
        live, live_vmis = {}, {}
        if len(desired) > 1:
            live = list_live(client, VM, desired)
            if p["state"] in ("started", "stopped"):
                live_vmis = list_live(client, VMI, [vmi_of(doc) for doc in desired])

        def apply(obj):
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            if p["state"] == "absent":
                return service.absent(meta["namespace"], meta["name"], delete_options_from_params(p["delete_options"]),
                                      p["wait"], p["wait_timeout"], obj["apiVersion"], live=live.get(key, UNREAD))
            return service.ensure(obj, p["state"], p["force"], p["wait"], expectation_from_params(wait_for),
                                  wait_for.get("guest_agent", False), p["wait_timeout"], live=live.get(key, UNREAD),
                                  live_vmi=live_vmis.get(key, UNREAD))

        return apply(desired[0]) if len(desired) == 1 else run_batch(desired, apply, VM.kind, p["concurrency"])

    run(module, action, connections=p["concurrency"])


if __name__ == "__main__":
    main()
