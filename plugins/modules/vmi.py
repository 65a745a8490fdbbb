#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vmi
short_description: Create and delete KubeVirt VirtualMachineInstances, idempotently
version_added: 0.1.0
description:
  - Makes a KubeVirt C(VirtualMachineInstance) (VMI) present or absent through the Kubernetes API.
  - The VMI comes from O(definition), from O(src) (a manifest file, as C(kubectl create -f)), or from
    O(name), O(namespace), O(labels), O(annotations) and O(spec).
  - Several VMIs in one task (a batch), as kubernetes.core's k8s takes them - a list in O(definition), or several
    YAML documents in O(definition) or O(src). They are applied concurrently (O(concurrency) at a time), each
    idempotently as a single one would be; RV(results) has one entry per VMI. When some fail, the task fails with
    one message naming each failed VMI and why, after the others were applied.
  - O(state=present) creates a missing VMI. An existing one has its labels and annotations patched when they
    differ; its spec is immutable in KubeVirt, so a different spec fails naming the fields, unless O(recreate=true).
    Fields the server added (defaults) are not differences.
  - O(state=absent) deletes the VMI, which stops its VM for good. Deleting a missing VMI is not an error.
  - Check mode asks the API server for a dry run (C(dryRun=All)), so it reports validation and admission errors
    as a real run would, and changes nothing.
author:
  - virtops.kubevirt maintainers (@virtops)
extends_documentation_fragment:
  - virtops.kubevirt.auth
  - virtops.kubevirt.auth.WAIT
  - virtops.kubevirt.auth.DELETE
  - virtops.kubevirt.auth.BATCH
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Server-side dry run for create, patch and delete.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: full
    details: Before and after, without resourceVersion, generation, managedFields, uid and O(hidden_fields).
options:
  state:
    description: Whether the VMI should exist.
    type: str
    choices: [present, absent]
    default: present
  definition:
    description:
      - The VMI as a dict or YAML text. C(kind) defaults to C(VirtualMachineInstance) and
        C(apiVersion) to C(kubevirt.io/v1).
      - A list of dicts, or YAML text with several documents, is a batch of VMIs.
      - O(name), O(namespace), O(labels) and O(annotations) override or extend it when given (O(name) only for a
        single VMI).
    type: raw
    aliases: [resource_definition]
  src:
    description:
      - Path to a manifest file, like C(kubectl create -f vmi.yaml). Several YAML documents in it are a batch.
    type: path
  name:
    description: Name of the VMI. Required unless the definition or O(src) has C(metadata.name).
    type: str
  namespace:
    description: Namespace of the VMI. Defaults to the definition's, then the kubeconfig context's, then C(default).
    type: str
  labels:
    description: Labels the VMI must carry (merged with the definition's). Other labels are left alone.
    type: dict
  annotations:
    description: Annotations the VMI must carry (merged with the definition's). Other annotations are left alone.
    type: dict
  spec:
    description: The VMI's C(spec), in KubeVirt's camelCase, when not using O(definition) or O(src).
    type: dict
  api_version:
    description: API version for a VMI built from options.
    type: str
    default: kubevirt.io/v1
    choices: [kubevirt.io/v1, kubevirt.io/v1alpha3]
  recreate:
    description:
      - When the live VMI's spec differs, delete it (stopping its VM), wait until it is gone, and create it again.
    type: bool
    default: false
  hidden_fields:
    description:
      - Fields left out of the returned VMI and the diff, as dotted paths; a key with dots goes in brackets,
        for example V(metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]).
      - The default leaves out C(metadata.managedFields), as kubevirt.core does; V([]) returns the whole object.
    type: list
    elements: str
    default: [metadata.managedFields]
seealso:
  - module: virtops.kubevirt.vmi_info
"""

EXAMPLES = r"""
- name: Create a VMI from a manifest, as kubectl create -f would, and wait until it runs
  virtops.kubevirt.vmi:
    src: vmi.yaml
    namespace: demo
    wait: true

- name: Create a VMI from options
  virtops.kubevirt.vmi:
    name: testvmi
    namespace: demo
    labels:
      app: demo
    spec:
      domain:
        resources:
          requests:
            memory: 64Mi
        devices: {}

- name: Wait for the Ready condition instead of a phase
  virtops.kubevirt.vmi:
    src: vmi.yaml
    wait: true
    wait_for:
      condition: Ready
    wait_timeout: 300

- name: Change the spec of a running VMI (deletes and creates it again)
  virtops.kubevirt.vmi:
    src: vmi-bigger.yaml
    recreate: true

- name: Declare many VMIs in one task (applied concurrently; one result per VMI)
  virtops.kubevirt.vmi:
    namespace: demo
    definition: "{{ vmis }}"  # a list of VMI dicts
  register: declared

- name: The same from a file of several YAML documents
  virtops.kubevirt.vmi:
    src: vmis.yaml
    namespace: demo
    wait: true

- name: Delete the VMI (stops the VM) and wait until it is gone
  virtops.kubevirt.vmi:
    name: testvmi
    namespace: demo
    state: absent
    wait: true
    delete_options:
      grace_period_seconds: 10
"""

RETURN = r"""
vmi:
  description: The VMI as the server returned it (a dry-run result in check mode); empty after a delete.
  returned: success, for a single VMI
  type: dict
results:
  description:
    - One entry per VMI of a batch, in the order given, with the keys a single VMI returns (RV(vmi), RV(summary),
      RV(method), C(changed), RV(duration)) and C(name) and C(namespace); a failed one has C(failed) and C(msg)
      instead (and C(last_seen) after a wait).
  returned: for a batch (several VMIs), also when some failed
  type: list
  elements: dict
summary:
  description: What C(kubectl get vmis) shows, plus whether it is paused.
  returned: success, for a single VMI
  type: dict
  contains:
    name: {description: Name., type: str, returned: when the VMI exists}
    namespace: {description: Namespace., type: str, returned: when the VMI exists}
    phase: {description: "C(status.phase); empty before a controller acts.", type: str, returned: when the VMI exists}
    node: {description: C(status.nodeName)., type: str, returned: when the VMI exists}
    ip: {description: The first interface's IP address., type: str, returned: when the VMI exists}
    ready: {description: The C(Ready) condition is C(True)., type: bool, returned: when the VMI exists}
    paused: {description: The C(Paused) condition is C(True)., type: bool, returned: when the VMI exists}
method:
  description: What was done.
  returned: success, for a single VMI
  type: str
  sample: created
  choices: [created, patched, recreated, deleted, unchanged]
duration:
  description: Seconds the task took, waits included.
  returned: success
  type: float
  sample: 0.042
last_seen:
  description: The VMI as last seen when a wait failed.
  returned: when a wait timed out
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import (
    auth_spec,
    batch_spec,
    delete_spec,
    wait_spec,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.batch import list_live, run_batch
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import check_concurrency, run
from ansible_collections.virtops.kubevirt.plugins.module_utils.info import DEFAULT_HIDDEN_FIELDS
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import (
    KIND,
    UNREAD,
    VMI,
    VmiService,
    build_definitions,
    delete_options_from_params,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import Expectation


def argument_spec():
    spec = auth_spec()
    spec.update(wait_spec())
    spec.update(delete_spec())
    spec.update(batch_spec())
    spec.update(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        definition=dict(type="raw", aliases=["resource_definition"]),
        src=dict(type="path"),
        name=dict(type="str"),
        namespace=dict(type="str"),
        labels=dict(type="dict"),
        annotations=dict(type="dict"),
        spec=dict(type="dict"),
        api_version=dict(type="str", default="kubevirt.io/v1", choices=["kubevirt.io/v1", "kubevirt.io/v1alpha3"]),
        recreate=dict(type="bool", default=False),
        hidden_fields=dict(type="list", elements="str", default=list(DEFAULT_HIDDEN_FIELDS)),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["definition", "src"], ["definition", "spec"], ["src", "spec"]],
        supports_check_mode=True,
    )
    p = module.params
    check_concurrency(module)
    delete_options = delete_options_from_params(p["delete_options"])
    expectation = Expectation.from_params(p["wait_for"])

    def action(client):
        desired = build_definitions(
            p["definition"], p["src"], p["name"], p["namespace"], p["labels"], p["annotations"], p["spec"],
            p["api_version"], client.settings.namespace or "default", need_spec=p["state"] == "present",
        )
        service = VmiService(client, module.check_mode, p["hidden_fields"], module._diff)
        live = list_live(client, VMI, desired) if len(desired) > 1 else {}

        def apply(obj):
            meta = obj["metadata"]
            seen = live.get((meta["namespace"], meta["name"]), UNREAD)
            if p["state"] == "absent":
                return service.absent(meta["namespace"], meta["name"], delete_options, p["wait"], p["wait_timeout"],
                                      obj["apiVersion"], live=seen)
            return service.present(obj, p["recreate"], p["wait"], expectation, p["wait_timeout"], delete_options,
                                   live=seen)

        if len(desired) == 1:
            return apply(desired[0])
        return run_batch(desired, apply, KIND, p["concurrency"])

    run(module, action, connections=p["concurrency"])


if __name__ == "__main__":
    main()
