#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_info
short_description: Get or list KubeVirt VirtualMachines
version_added: 0.2.0
description:
  - Returns one VirtualMachine (VM) by name, or a list of them (one namespace or all), like C(kubectl get vms),
    with a short summary per VM.
  - The options are those of C(kubevirt.core.kubevirt_vm_info), so a playbook switches by changing the module name.
  - Can wait, by watching the API, until the VM (or each listed VM) is ready (or stopped, with O(running=false)).
  - Never changes anything.
author:
  - virtops.kubevirt maintainers (@virtops)
extends_documentation_fragment:
  - virtops.kubevirt.auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: none
options:
  api_version:
    description: API version of KubeVirt.
    type: str
    default: kubevirt.io/v1
    choices: [kubevirt.io/v1, kubevirt.io/v1alpha3]
  name:
    description: Name of one VM. Without it, the module lists.
    type: str
  namespace:
    description:
      - Namespace to read. With O(name), defaults to the kubeconfig context's namespace, then C(default).
      - Without O(name) and without O(namespace), lists VMs in all namespaces.
    type: str
  label_selectors:
    description: Label selectors, ANDed, for example V(app=demo).
    type: list
    elements: str
    default: []
  field_selectors:
    description: Field selectors, ANDed, for example V(metadata.name=testvm).
    type: list
    elements: str
    default: []
  running:
    description:
      - What O(wait) waits for, as in C(kubevirt.core.kubevirt_vm_info) - V(true) (the default) the VM's
        C(Ready) condition, V(false) its printableStatus C(Stopped).
    type: bool
  wait:
    description: Wait, by watching the API, until the VM (each listed VM) is as O(running) says.
    type: bool
    default: false
  wait_sleep:
    description: Accepted for C(kubevirt.core.kubevirt_vm_info) playbooks and ignored; waits watch instead of polling.
    type: int
    default: 5
  wait_timeout:
    description: Seconds to wait. A timeout fails with the last status, conditions and events seen.
    type: int
    default: 120
  hidden_fields:
    description:
      - Fields left out of each returned VM, as dotted paths (a key with dots goes in brackets).
      - The default leaves out C(metadata.managedFields), as kubevirt.core does; V([]) returns whole objects.
    type: list
    elements: str
    default: [metadata.managedFields]
seealso:
  - module: virtops.kubevirt.vm
"""

EXAMPLES = r"""
- name: Get a VM
  virtops.kubevirt.vm_info:
    name: testvm
    namespace: demo
  register: testvm

- name: Show its printableStatus
  ansible.builtin.debug:
    msg: "{{ testvm.summaries[0].printable_status }}"

- name: List all VMs labelled app=demo, in any namespace
  virtops.kubevirt.vm_info:
    label_selectors:
      - app=demo

- name: Wait until a VM is stopped
  virtops.kubevirt.vm_info:
    name: testvm
    namespace: demo
    running: false
    wait: true
"""

RETURN = r"""
resources:
  description: The VMs, as the API returns them, without O(hidden_fields).
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
    printable_status: {description: C(status.printableStatus)., type: str, returned: always}
    run_strategy: {description: C(spec.runStrategy) (or what C(spec.running) means)., type: str, returned: always}
    ready: {description: C(status.ready)., type: bool, returned: always}
    paused: {description: The printableStatus is C(Paused)., type: bool, returned: always}
api_found:
  description: The VirtualMachine API exists on the server.
  returned: success
  type: bool
duration:
  description: Seconds the task took, waits included.
  returned: success
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_spec, info_spec
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import run
from ansible_collections.virtops.kubevirt.plugins.module_utils.info import DEFAULT_HIDDEN_FIELDS, list_objects
from ansible_collections.virtops.kubevirt.plugins.module_utils.vm import VmExpectation, VmService, summarize_vm


def argument_spec():
    spec = auth_spec()
    spec.update(info_spec())
    spec.update(
        api_version=dict(type="str", default="kubevirt.io/v1", choices=["kubevirt.io/v1", "kubevirt.io/v1alpha3"]),
        running=dict(type="bool"),
        wait=dict(type="bool", default=False),
        wait_sleep=dict(type="int", default=5),
        wait_timeout=dict(type="int", default=120),
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
        if p["running"] is False:
            expectation = VmExpectation(printable_status="Stopped")
        else:
            expectation = VmExpectation(condition="Ready")
        service = VmService(client, check_mode=True, hidden_fields=p["hidden_fields"])
        return list_objects(service, summarize_vm, namespace, p["label_selectors"], p["field_selectors"], p["name"],
                            p["wait"], expectation, p["wait_timeout"], p["api_version"])

    run(module, action)


if __name__ == "__main__":
    main()
