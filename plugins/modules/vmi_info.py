#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vmi_info
short_description: Get or list KubeVirt VirtualMachineInstances
version_added: 0.1.0
description:
  - Returns one VirtualMachineInstance (VMI) by name, or a list of them (one namespace or all), like
    C(kubectl get vmis), with a short summary per VMI.
  - Can wait, by watching the API, until the VMI (or each listed VMI) reaches a phase or condition.
  - Never changes anything.
author:
  - virtops.kubevirt maintainers (@virtops)
extends_documentation_fragment:
  - virtops.kubevirt.auth
  - virtops.kubevirt.auth.WAIT
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: none
options:
  name:
    description: Name of one VMI. Without it, the module lists.
    type: str
  namespace:
    description:
      - Namespace to read. With O(name), defaults to the kubeconfig context's namespace, then C(default).
      - Without O(name) and without O(namespace), lists VMIs in all namespaces.
    type: str
  label_selectors:
    description: Label selectors, ANDed, for example V(app=demo) or V(tier in (web,db)).
    type: list
    elements: str
    default: []
  field_selectors:
    description: Field selectors, ANDed, for example V(metadata.name=testvmi) or V(metadata.namespace!=default).
    type: list
    elements: str
    default: []
  hidden_fields:
    description:
      - Fields left out of each returned VMI, as dotted paths (a key with dots goes in brackets).
      - The default leaves out C(metadata.managedFields), the server's field-ownership bookkeeping, as
        kubevirt.core's info modules do; it is about half of each object's bytes, and a list of many VMIs
        returns twice as fast without it. Set O(hidden_fields=[]) to get whole objects, as C(kubectl get -o json)
        shows them.
      - RV(summaries) are never affected.
    type: list
    elements: str
    default: [metadata.managedFields]
seealso:
  - module: virtops.kubevirt.vmi
"""

EXAMPLES = r"""
- name: List VMIs in all namespaces (kubectl get vmis -A)
  virtops.kubevirt.vmi_info:
  register: all_vmis

- name: Get one VMI (kubectl get vmis testvmi)
  virtops.kubevirt.vmi_info:
    name: testvmi
    namespace: demo
  register: one

- name: Show its phase and whether it is paused
  ansible.builtin.debug:
    msg: "{{ one.summaries[0].phase }} paused={{ one.summaries[0].paused }}"

- name: Get one VMI whole, managedFields included
  virtops.kubevirt.vmi_info:
    name: testvmi
    namespace: demo
    hidden_fields: []

- name: List VMIs by label, waiting until each runs
  virtops.kubevirt.vmi_info:
    namespace: demo
    label_selectors:
      - app=demo
    wait: true
    wait_for:
      phase: Running
"""

RETURN = r"""
resources:
  description: The VMIs, as the API returns them, without O(hidden_fields).
  returned: success
  type: list
  elements: dict
summaries:
  description: One summary per entry of RV(resources), in the same order.
  returned: success
  type: list
  elements: dict
  contains:
    name: {description: Name., type: str, returned: always}
    namespace: {description: Namespace., type: str, returned: always}
    phase: {description: C(status.phase)., type: str, returned: always}
    node: {description: C(status.nodeName)., type: str, returned: always}
    ip: {description: The first interface's IP address., type: str, returned: always}
    ready: {description: The C(Ready) condition is C(True)., type: bool, returned: always}
    paused: {description: The C(Paused) condition is C(True)., type: bool, returned: always}
api_found:
  description: The VirtualMachineInstance API exists on the server.
  returned: success
  type: bool
duration:
  description: Seconds the task took, waits included.
  returned: success
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_spec, info_spec, wait_spec
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import run
from ansible_collections.virtops.kubevirt.plugins.module_utils.info import DEFAULT_HIDDEN_FIELDS, list_vmis
from ansible_collections.virtops.kubevirt.plugins.module_utils.wait import Expectation


def argument_spec():
    spec = auth_spec()
    spec.update(info_spec())
    spec.update(wait_spec())
    spec.update(
        hidden_fields=dict(type="list", elements="str", default=list(DEFAULT_HIDDEN_FIELDS)),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params

    def action(client):
        namespace = p["namespace"]
        if p["name"] and not namespace:
            namespace = client.settings.namespace or "default"
        return list_vmis(
            client, namespace, p["label_selectors"], p["field_selectors"], p["hidden_fields"], p["name"],
            p["wait"], Expectation.from_params(p["wait_for"]), p["wait_timeout"],
        )

    run(module, action)


if __name__ == "__main__":
    main()
