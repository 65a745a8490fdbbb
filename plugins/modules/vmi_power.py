#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: virtops.kubevirt contributors
# Apache License 2.0 (see LICENSE)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vmi_power
short_description: Pause and unpause a KubeVirt VirtualMachineInstance or VirtualMachine, idempotently
version_added: 0.1.0
description:
  - Makes a VirtualMachineInstance (VMI) paused or running (unpaused), as C(virtctl pause vmi) and
    C(virtctl unpause vmi) do, through KubeVirt's subresource API C(subresources.kubevirt.io/v1).
  - Reads the VMI's C(Paused) condition first; when it already is in the wanted state nothing is sent
    and the task is C(ok). A C(409) that means another actor got there first is also C(ok).
  - A VirtualMachine resolves to its VMI of the same name. Pausing one that is not running fails with a clear message.
  - Paused means the guest's vCPUs are frozen; its memory stays allocated. The VMI's phase stays C(Running).
author:
  - virtops.kubevirt maintainers (@virtops)
extends_documentation_fragment:
  - virtops.kubevirt.auth
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: The subresource request is sent with C(dryRun=All), so check mode sees every 409 and 403 a real run would.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode).
    support: full
    details: The Paused condition before and after.
options:
  kind:
    description: Kind of the object named by O(name).
    type: str
    choices: [VirtualMachineInstance, VirtualMachine, vmi, vm]
    default: VirtualMachineInstance
  name:
    description: Name of the VMI or VM.
    type: str
    required: true
  namespace:
    description: Namespace. Defaults to the kubeconfig context's namespace, then C(default).
    type: str
  state:
    description: V(paused) pauses, V(running) unpauses.
    type: str
    choices: [paused, running]
    required: true
  wait:
    description: Wait, by watching the VMI, until its C(Paused) condition appears (V(paused)) or is gone (V(running)).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait. A timeout fails with the last phase, conditions and events seen.
    type: int
    default: 60
seealso:
  - module: virtops.kubevirt.vmi
  - module: virtops.kubevirt.vmi_info
"""

EXAMPLES = r"""
- name: Pause a VMI (virtctl pause vmi testvmi)
  virtops.kubevirt.vmi_power:
    name: testvmi
    namespace: demo
    state: paused

- name: Unpause it
  virtops.kubevirt.vmi_power:
    name: testvmi
    namespace: demo
    state: running

- name: Pause a VirtualMachine's instance
  virtops.kubevirt.vmi_power:
    kind: VirtualMachine
    name: myvm
    namespace: demo
    state: paused
"""

RETURN = r"""
summary:
  description: The VMI's phase, node, IP, readiness and whether it is paused.
  returned: success
  type: dict
vmi:
  description: The VMI as last read.
  returned: success
  type: dict
duration:
  description: Seconds the task took, the wait included.
  returned: success
  type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtops.kubevirt.plugins.module_utils.args import auth_spec
from ansible_collections.virtops.kubevirt.plugins.module_utils.common import run
from ansible_collections.virtops.kubevirt.plugins.module_utils.power import PowerService

KINDS = {"vmi": "VirtualMachineInstance", "vm": "VirtualMachine"}


def argument_spec():
    spec = auth_spec()
    spec.update(
        kind=dict(type="str", default="VirtualMachineInstance",
                  choices=["VirtualMachineInstance", "VirtualMachine", "vmi", "vm"]),
        name=dict(type="str", required=True),
        namespace=dict(type="str"),
        state=dict(type="str", required=True, choices=["paused", "running"]),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=60),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params

    def action(client):
        namespace = p["namespace"] or client.settings.namespace or "default"
        kind = KINDS.get(p["kind"], p["kind"])
        return PowerService(client, module.check_mode).ensure(
            kind, namespace, p["name"], p["state"], p["wait"], p["wait_timeout"]
        )

    run(module, action)


if __name__ == "__main__":
    main()
