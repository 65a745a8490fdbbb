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
      - The VMI as a dict or YAML text (one document). C(kind) defaults to C(VirtualMachineInstance) and
        C(apiVersion) to C(kubevirt.io/v1).
      - O(name), O(namespace), O(labels) and O(annotations) override or extend it when given.
    type: raw
    aliases: [resource_definition]
  src:
    description: Path to a manifest file with one VMI, like C(kubectl create -f vmi.yaml).
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
  delete_options:
    description: Options for the delete of O(state=absent) (and of O(recreate)).
    type: dict
    suboptions:
      grace_period_seconds:
        description: Seconds the guest gets to shut down. KubeVirt's default is the VMI's C(terminationGracePeriodSeconds) (30).
        type: int
      propagation_policy:
        description: How dependents are deleted.
        type: str
        choices: [Foreground, Background, Orphan]
      preconditions:
        description: Delete only if the live VMI still matches.
        type: dict
        suboptions:
          uid:
            description: The VMI's C(metadata.uid).
            type: str
          resource_version:
            description: The VMI's C(metadata.resourceVersion).
            type: str
  hidden_fields:
    description:
      - Fields left out of the returned VMI and the diff, as dotted paths; a key with dots goes in brackets,
        for example V(metadata.annotations[kubectl.kubernetes.io/last-applied-configuration]).
    type: list
    elements: str
    default: []
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
  returned: success
  type: dict
summary:
  description: What C(kubectl get vmis) shows, plus whether it is paused.
  returned: success
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
  returned: success
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

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_spec, wait_spec
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import run
from ansible_collections.virtops.kubevirt.plugins.module_utils.vmi import (
    VmiService,
    build_definition,
    delete_options_from_params,
)
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import Expectation


def argument_spec():
    spec = auth_spec()
    spec.update(wait_spec())
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
        delete_options=dict(
            type="dict",
            options=dict(
                grace_period_seconds=dict(type="int"),
                propagation_policy=dict(type="str", choices=["Foreground", "Background", "Orphan"]),
                preconditions=dict(
                    type="dict", options=dict(uid=dict(type="str"), resource_version=dict(type="str"))
                ),
            ),
        ),
        hidden_fields=dict(type="list", elements="str", default=[]),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[["definition", "src"], ["definition", "spec"], ["src", "spec"]],
        supports_check_mode=True,
    )
    p = module.params

    def action(client):
        desired = build_definition(
            p["definition"], p["src"], p["name"], p["namespace"], p["labels"], p["annotations"], p["spec"],
            p["api_version"], client.settings.namespace or "default", need_spec=p["state"] == "present",
        )
        service = VmiService(client, module.check_mode, p["hidden_fields"])
        if p["state"] == "absent":
            meta = desired["metadata"]
            return service.absent(
                meta["namespace"], meta["name"], delete_options_from_params(p["delete_options"]),
                p["wait"], p["wait_timeout"], desired["apiVersion"],
            )
        return service.present(
            desired, p["recreate"], p["wait"], Expectation.from_params(p["wait_for"]), p["wait_timeout"],
            delete_options_from_params(p["delete_options"]),
        )

    run(module, action)


if __name__ == "__main__":
    main()
